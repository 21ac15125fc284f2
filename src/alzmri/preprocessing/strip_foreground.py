"""Brain mask of an already skull-stripped scan: Otsu foreground, largest component, holes filled."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu


def foreground_mask(volume: np.ndarray) -> np.ndarray:
    """Boolean foreground of a skull-stripped volume (Otsu on a smoothed copy).

    Args:
        volume: 3D intensity array.
    """
    smooth = ndimage.gaussian_filter(volume.astype(np.float32), 1.0)
    if float(smooth.max()) <= float(smooth.min()):
        return np.zeros(volume.shape, dtype=bool)
    mask = smooth > threshold_otsu(smooth)
    labels, n = ndimage.label(mask)
    if n > 1:  # keep the brain, drop noise specks and stray blobs
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    mask = ndimage.binary_closing(np.pad(mask, 2), iterations=2)[2:-2, 2:-2, 2:-2]  # padded: a brain at the border stays
    return ndimage.binary_fill_holes(mask)
