"""The brain on a preprocessed volume's grid when no mask was stored: background plateau, then contrast.

A preprocessed volume is a brain on a constant background: skull stripping sets everything
outside the brain mask to 0, ``normalize`` then maps that 0 to one value (``−mean / sd`` of the
brain in a z-scored image, e.g. −3.5). The brain is *not* "every voxel above the minimum": the
cubic B-spline resize over- and undershoots at the brain's edge, so a few voxels next to the
brain lie below the background (background −3.49, minimum −4.07 on real scans), and then every
background voxel is above the minimum and the whole field of view counts as brain. Used by
``explain`` (caches without stored masks) and by the linear baseline's voxel features.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from alzmri.utils.errors import AlzmriError

PLATEAU_SHARE = 0.05  # a value held by at least this share of the voxels is a constant background
BRAIN_TOLERANCE = 0.1  # of the brain's contrast to the background (99th percentile of |v - background|)


def background_value(volume: np.ndarray) -> float:
    """The intensity of a volume's background.

    The most frequent value when it fills at least :data:`PLATEAU_SHARE` of the voxels (the
    constant background a skull-stripped, normalised volume has, which cubic resizing leaves
    untouched away from the brain); otherwise (noise in the background, no skull stripping)
    the median of the six faces of the volume, which lie outside the head in a brain-centred
    field of view.

    Args:
        volume: a 3-D array.

    Raises:
        AlzmriError: for an array that is not 3-D or not finite.
    """
    values = _as_volume(volume)
    unique, counts = np.unique(values, return_counts=True)
    top = int(np.argmax(counts))
    if counts[top] >= PLATEAU_SHARE * values.size:
        return float(unique[top])
    faces = [np.take(values, index, axis=axis).ravel() for axis in range(3) for index in (0, -1)]
    return float(np.median(np.concatenate(faces)))


def estimate_brain_mask(volume: np.ndarray, tolerance: float = BRAIN_TOLERANCE) -> np.ndarray:
    """The brain in a preprocessed volume, for when the preprocessing stored no mask.

    Voxels whose intensity differs from :func:`background_value` by more than ``tolerance``
    times the brain's contrast (the 99th percentile of ``|v − background|`` over the voxels
    that differ from it at all); of those the largest connected component (face neighbours),
    with its enclosed holes (ventricles darker than the tolerance) filled. Resize ringing next
    to the brain differs from the background by a small fraction of that contrast, and far from
    the brain not at all, so it does not turn the field of view into brain.

    Args:
        volume: a 3-D array (the model input).
        tolerance: fraction of the brain's contrast a voxel must differ from the background by.

    Returns:
        A boolean array of the volume's shape; every voxel when the volume is constant (there
        is no telling brain from background then).
    """
    values = _as_volume(volume)
    distance = np.abs(values - np.float32(background_value(values)))
    differing = distance[distance > 0]
    if differing.size == 0:
        return np.ones(values.shape, dtype=bool)
    labels, n = ndimage.label(distance > tolerance * float(np.percentile(differing, 99)))
    if n == 0:
        return np.ones(values.shape, dtype=bool)
    largest = labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    return ndimage.binary_fill_holes(largest)


def _as_volume(volume: np.ndarray) -> np.ndarray:
    values = np.asarray(volume, dtype=np.float32)
    if values.ndim != 3:
        raise AlzmriError(f"expected a 3-D volume, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise AlzmriError("the volume contains NaN or infinite values")
    return values
