"""The brain on a preprocessed volume's grid when no mask was stored: background plateau, then contrast.

A preprocessed volume is a brain on a constant background: skull stripping sets everything
outside the brain mask to 0, ``normalize`` then maps that 0 to one value (``−mean / sd`` of the
brain in a z-scored image, e.g. −3.5). The brain is *not* "every voxel above the minimum": the
cubic B-spline resize over- and undershoots at the brain's edge, so a few voxels next to the
brain lie below the background (background −3.49, minimum −4.07 on real scans), and then every
background voxel is above the minimum and the whole field of view counts as brain. Since
``normalize`` sets the background to 0 by default (``zero_background``), the plateau can also lie
in the middle of the brain's intensities; then every voxel off the plateau is brain. Used by
``explain`` (caches without stored masks) and by the linear baseline's voxel features.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from alzmri.utils.errors import AlzmriError

PLATEAU_SHARE = 0.05  # a value held by at least this share of the voxels is a constant background
MIDRANGE_SHARE = 0.25  # of the non-background voxels on each side of a background inside the brain's range
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
    the brain not at all, so it does not turn the field of view into brain. When the plateau
    lies inside the brain's range (a z-scored brain on a zero background), the voxels off the
    plateau, their largest component and its holes filled.

    Args:
        volume: a 3-D array (the model input).
        tolerance: fraction of the brain's contrast a voxel must differ from the background by.

    Returns:
        A boolean array of the volume's shape; every voxel when the volume is constant (there
        is no telling brain from background then).
    """
    values = _as_volume(volume)
    background = np.float32(background_value(values))
    if _midrange_plateau(values, background):  # z-scored brain on a zero background: every other value is brain
        return _largest_filled(values != background)
    distance = np.abs(values - background)
    differing = distance[distance > 0]
    if differing.size == 0:
        return np.ones(values.shape, dtype=bool)
    return _largest_filled(distance > tolerance * float(np.percentile(differing, 99)))


def _largest_filled(candidates: np.ndarray) -> np.ndarray:
    """The largest face-connected component of ``candidates`` with its holes filled (every voxel if there is none)."""
    labels, n = ndimage.label(candidates)
    if n == 0:
        return np.ones(candidates.shape, dtype=bool)
    largest = labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    return ndimage.binary_fill_holes(largest)


def _midrange_plateau(values: np.ndarray, background: np.float32) -> bool:
    """Whether the background is a constant plateau *inside* the brain's intensity range.

    That is the case of preprocessing's default (z-score in the brain, background set to 0,
    the brain's mean): at least :data:`MIDRANGE_SHARE` of the other voxels lie on each side of
    it and reach at least that share of each other's distance from it (99th percentiles), so no
    tolerance around it separates brain from background, but the plateau is exact. Resize
    ringing below a dark background can hold many voxels at a small grid size, but it is
    shallow next to the brain's height above the background.
    """
    plateau = values == background
    if plateau.mean() < PLATEAU_SHARE or plateau.all():
        return False
    other = values[~plateau]
    below, above = background - other[other < background], other[other > background] - background
    if min(below.size, above.size) < MIDRANGE_SHARE * other.size:
        return False
    depth, height = float(np.percentile(below, 99)), float(np.percentile(above, 99))
    return min(depth, height) >= MIDRANGE_SHARE * max(depth, height)


def _as_volume(volume: np.ndarray) -> np.ndarray:
    values = np.asarray(volume, dtype=np.float32)
    if values.ndim != 3:
        raise AlzmriError(f"expected a 3-D volume, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise AlzmriError("the volume contains NaN or infinite values")
    return values
