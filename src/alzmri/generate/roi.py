"""Brain region of interest of an image: its non-zero foreground, or Otsu's threshold, cleaned by morphology.

Images alzmri makes have background exactly 0 (preprocessing zeroes it outside the brain mask;
imported slices are z-scored over their foreground with background 0), so the foreground is the
brain. Images without such a background (a foreign cache, a generated image) are thresholded
with Otsu's method. Either way the mask is closed, its holes filled and only its largest
connected part kept.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

_MIN_BACKGROUND = 0.05  # an image with less exact-zero area than this has no zero background


def brain_roi(image: np.ndarray) -> np.ndarray:
    """Boolean brain mask of one image (``(C, *S)``: judged on the centre channel).

    Args:
        image: the image, any intensity scale.

    Returns:
        ``(*S,)`` boolean mask; all False for a constant image.
    """
    from skimage.filters import threshold_otsu

    x = np.asarray(image[image.shape[0] // 2], dtype=np.float32)
    if float(x.max()) == float(x.min()):
        return np.zeros(x.shape, dtype=bool)
    foreground = x != 0
    if 1.0 - float(foreground.mean()) < _MIN_BACKGROUND:
        foreground = x > threshold_otsu(x)
    structure = ndi.generate_binary_structure(x.ndim, 1)
    mask = ndi.binary_fill_holes(ndi.binary_closing(foreground, structure, iterations=2, border_value=0))
    labels, count = ndi.label(mask)
    if count > 1:
        sizes = ndi.sum(mask, labels, index=range(1, count + 1))
        mask = labels == 1 + int(np.argmax(sizes))
    return mask
