"""Binarise an attribution map and summarise the connected regions that survive.

Sign convention
---------------
Both functions work on the map *as given*: nothing is clipped before thresholding. To
threshold positive evidence only, pass the positive part (``np.clip(attribution, 0, None)``)
and, usually, restrict ``mask`` to the brain. A signed map thresholded as given mixes the
negative tail into the distribution that the percentile, Otsu and mean + kσ rules see, which
shifts the threshold. :func:`components` always measures shares of the *positive* part of the
map (negative voxels inside a component contribute nothing to its share).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from alzmri.explain.config import THRESHOLDS, Threshold
from alzmri.utils.errors import AlzmriError

Method = Threshold
METHODS: tuple[str, ...] = THRESHOLDS

# 3 x 3 x 3 block of ones: voxels sharing a face, an edge or a corner are neighbours.
_CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def _as_map(attribution: np.ndarray, what: str = "attribution map", ndims: tuple[int, ...] = (3,)) -> np.ndarray:
    array = np.asarray(attribution)
    if array.ndim not in ndims:
        raise AlzmriError(f"{what} must be {' or '.join(f'{n}-D' for n in ndims)}, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise AlzmriError(f"{what} must be real-valued, got dtype {array.dtype}")
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        raise AlzmriError(f"{what} contains NaN or infinite values")
    return array


def _as_mask(mask: np.ndarray | None, shape: tuple[int, ...], what: str = "mask") -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise AlzmriError(f"{what} has shape {mask.shape} but the attribution map has shape {shape}")
    return mask.astype(bool, copy=False)


def threshold_map(
    attribution: np.ndarray,
    method: Method = "percentile",
    *,
    percentile: float = 95.0,
    k: float = 2.0,
    mask: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Binarise an attribution map with a data-driven threshold.

    The threshold ``t`` is computed from ``v``, the values of the map inside ``mask``
    (all voxels when ``mask`` is None), taken as given (no clipping; see the module notes):

    * ``"percentile"``: ``t = np.percentile(v, percentile)`` (linear interpolation between
      order statistics); keeps voxels with value ``>= t``, i.e. the top
      ``100 - percentile`` % of ``v`` (more when values tie at ``t``).
    * ``"otsu"``: ``t = skimage.filters.threshold_otsu(v)`` (256-bin histogram; maximises the
      between-class variance); keeps voxels with value ``> t`` (scikit-image's convention).
      A constant ``v`` keeps nothing.
    * ``"mean_std"``: ``t = mean(v) + k * std(v)`` with the population standard deviation
      (``ddof=0``); keeps voxels with value ``>= t``.

    Voxels outside ``mask`` are never kept.

    Args:
        attribution: 3-D real-valued map, finite everywhere.
        method: ``"percentile"``, ``"otsu"`` or ``"mean_std"``.
        percentile: percentile in [0, 100] for ``"percentile"``.
        k: number of standard deviations above the mean for ``"mean_std"``.
        mask: optional boolean array of the map's shape restricting both the values the
            threshold is computed from and the voxels that can be kept.

    Returns:
        ``(binary_mask, threshold)``: a boolean array of the map's shape and ``t``.

    Raises:
        AlzmriError: for an unknown method, a percentile outside [0, 100], a non-3-D or
            non-finite map, a mask of another shape, or an empty mask.
    """
    values_map = _as_map(attribution, ndims=(2, 3))  # slices' maps too
    inside = _as_mask(mask, values_map.shape)
    values = values_map[inside]
    if values.size == 0:
        raise AlzmriError("the mask selects no voxels; nothing to threshold")
    if method == "percentile":
        if not 0.0 <= float(percentile) <= 100.0:
            raise AlzmriError(f"percentile must lie in [0, 100], got {percentile}")
        threshold = float(np.percentile(values, float(percentile)))
        keep = values_map >= threshold
    elif method == "otsu":
        threshold = float(threshold_otsu(values))
        keep = values_map > threshold
    elif method == "mean_std":
        if not np.isfinite(k):
            raise AlzmriError(f"k must be finite, got {k}")
        threshold = float(values.mean() + float(k) * values.std())
        keep = values_map >= threshold
    else:
        raise AlzmriError(f"unknown threshold method {method!r}; choose one of {', '.join(METHODS)}")
    return keep & inside, threshold


def components(
    binary_mask: np.ndarray,
    attribution: np.ndarray,
    voxel_size_mm: float | Sequence[float] = 1.0,
    top: int | None = 5,
) -> list[dict[str, Any]]:
    """Summarise the connected components of a thresholded map, strongest first.

    Components are found with :func:`scipy.ndimage.label` and 26-connectivity (voxels that
    share a face, an edge or a corner belong together). Writing ``P = max(attribution, 0)``
    and ``C`` for a component's voxels, each component is described by:

    * ``rank``: 1 for the component with the largest ``attribution_share``.
    * ``n_voxels``: ``|C|``; ``volume_mm3``: ``|C|`` times the voxel volume.
    * ``attribution_sum``: ``sum(P[C])``.
    * ``attribution_share``: ``sum(P[C]) / sum(P)`` over the *whole* map (so the shares of
      all components add up to the fraction of positive evidence the threshold kept);
      NaN when the map has no positive value.
    * ``peak_value`` and ``peak_voxel``: the largest attribution in ``C`` and its voxel index
      (the first in C order on ties).
    * ``centroid_voxel``: the unweighted mean voxel index of ``C`` (a geometric centre,
      fractional).

    Components are sorted by ``attribution_share`` (then ``n_voxels``) in decreasing order.

    Args:
        binary_mask: 3-D boolean array, e.g. from :func:`threshold_map`.
        attribution: the map, same shape.
        voxel_size_mm: edge length of a voxel in mm, one number or one per axis.
        top: keep only the ``top`` strongest components; None keeps all.

    Returns:
        One dict per component with the keys listed above (coordinates as tuples of
        Python numbers); an empty list when the mask is empty.

    Raises:
        AlzmriError: for arrays of different shapes, a non-finite map, non-positive voxel
            sizes or ``top < 1``.
    """
    values = _as_map(attribution)
    binary = _as_mask(binary_mask, values.shape, "binary mask")
    sizes = np.broadcast_to(np.asarray(voxel_size_mm, dtype=float), (3,))
    if not (np.isfinite(sizes).all() and (sizes > 0).all()):
        raise AlzmriError(f"voxel_size_mm must be positive, got {voxel_size_mm}")
    if top is not None and int(top) < 1:
        raise AlzmriError(f"top must be at least 1 (or None for all), got {top}")
    labels, n = ndi.label(binary, structure=_CONNECTIVITY_26)
    if n == 0:
        return []
    index = np.arange(1, n + 1)
    positive = np.clip(values, 0.0, None)
    total = float(positive.sum())
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    sums = np.asarray(ndi.sum_labels(positive, labels, index), dtype=float)
    peaks = np.asarray(ndi.maximum(values, labels, index), dtype=float)
    peak_positions = ndi.maximum_position(values, labels, index)
    centroids = ndi.center_of_mass(binary.astype(np.float64), labels, index)
    voxel_mm3 = float(np.prod(sizes))
    order = sorted(range(n), key=lambda i: (-sums[i], -counts[i], i))
    if top is not None:
        order = order[: int(top)]
    out = []
    for rank, i in enumerate(order, start=1):
        out.append({
            "rank": rank,
            "n_voxels": int(counts[i]),
            "volume_mm3": float(counts[i]) * voxel_mm3,
            "attribution_sum": float(sums[i]),
            "attribution_share": float(sums[i] / total) if total > 0 else float("nan"),
            "peak_value": float(peaks[i]),
            "peak_voxel": tuple(int(c) for c in peak_positions[i]),
            "centroid_voxel": tuple(float(c) for c in centroids[i]),
        })
    return out
