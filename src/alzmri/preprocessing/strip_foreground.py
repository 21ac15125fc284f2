"""Brain mask of an already skull-stripped scan: Otsu foreground, largest component, holes filled."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from alzmri.preprocessing.morphology import largest_component, padded_closing


def foreground_mask(volume: np.ndarray) -> np.ndarray:
    """Boolean foreground of a skull-stripped volume (Otsu on a smoothed copy).

    Args:
        volume: 3D intensity array.
    """
    smooth = ndimage.gaussian_filter(volume.astype(np.float32), 1.0)
    if float(smooth.max()) <= float(smooth.min()):
        return np.zeros(volume.shape, dtype=bool)
    mask = smooth > threshold_otsu(smooth)
    mask = largest_component(mask)  # keep the brain, drop noise specks and stray blobs
    mask = padded_closing(mask, 2, iterations=2)  # padded: a brain at the border stays
    return ndimage.binary_fill_holes(mask)
