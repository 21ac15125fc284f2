"""Mask morphology shared by the skull strippers and the QC: largest component, padded closing, the head."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a boolean mask (the mask itself when it has at most one)."""
    labels, n = ndi.label(mask)
    if n <= 1:
        return mask.astype(bool)
    return labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1


def padded_closing(mask: np.ndarray, pad: int, **kwargs) -> np.ndarray:
    """``binary_closing`` on a zero-padded copy, so a mask that reaches the image border is not eroded there.

    Args:
        mask: boolean array.
        pad: voxels of padding: at least the closing's reach (iterations, or the structure's radius).
        kwargs: passed to ``scipy.ndimage.binary_closing`` (``iterations``, ``structure``).
    """
    inner = tuple(slice(pad, -pad) for _ in range(mask.ndim))
    return ndi.binary_closing(np.pad(mask, pad), **kwargs)[inner]


def head_mask(volume: np.ndarray) -> np.ndarray:
    """The head: the largest component brighter than a quarter of an Otsu threshold, closed, holes filled.

    The low threshold and the closing keep thin dark scalp and skull at the vertex inside; holes are
    filled slice by slice too, because the mouth, nose and ear canals open the head to the air.
    """
    positive = volume[volume > 0]
    if positive.size == 0 or positive.max() <= positive.min():
        return np.zeros(volume.shape, dtype=bool)
    head = largest_component(padded_closing(volume > 0.25 * threshold_otsu(positive), 3, iterations=3))
    for axis in range(3):
        head = np.stack([ndi.binary_fill_holes(s) for s in np.moveaxis(head, axis, 0)], axis=axis)
    return ndi.binary_fill_holes(head)
