"""Per-subject anatomy: head size, a smooth individual warp and regional atrophy amounts.

Everything here is drawn in template (MNI) world coordinates, in mm. The pieces are applied
as *pull-back* maps (output point -> where to read the template), composed in
:mod:`alzmri.data.synth.render`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from alzmri.data.synth.regions import DEFORM_REGIONS, REGIONS, THIN_REGIONS, AtrophyModel

# Measured once from the MNI152 2009 brain mask (world mm), so that planning a cohort and
# resuming one never has to load the template.
BRAIN_CENTER = np.array([0.0, -22.0, 9.5])
BRAIN_MIN = np.array([-72.0, -107.0, -72.0])
BRAIN_MAX = np.array([72.0, 73.0, 82.0])

# Control grid of the subject warp: spacing and world extent (covers the template with margin).
WARP_SPACING_MM = 8.0
_WARP_MIN = BRAIN_MIN - 24.0
_WARP_SHAPE = tuple(int(n) for n in np.ceil((BRAIN_MAX - BRAIN_MIN + 48.0) / WARP_SPACING_MM) + 1)


@dataclass(frozen=True)
class SubjectAnatomy:
    """Individual anatomy, fixed across a subject's sessions.

    Attributes:
        head_scale: per-axis (x, y, z) scale of the head relative to the template.
        warp: (3, gx, gy, gz) float32 displacement in mm on the warp control grid.
        warp_rms_mm: root-mean-square length of ``warp``.
        anatomy_mm: normal (non-disease) size offset per deforming region, mm (+ = its effect).
        susceptibility: per-region multiplier on disease change (individual, asymmetric).
    """

    head_scale: np.ndarray
    warp: np.ndarray
    warp_rms_mm: float
    anatomy_mm: dict[str, float]
    susceptibility: dict[str, float]


def warp_affine() -> np.ndarray:
    """Voxel-to-world matrix of the warp control grid.

    Returns:
        4 x 4 matrix.
    """
    affine = np.diag([WARP_SPACING_MM] * 3 + [1.0])
    affine[:3, 3] = _WARP_MIN
    return affine


def draw_subject_anatomy(rng: np.random.Generator, sex: str) -> SubjectAnatomy:
    """Draw one subject's head size, individual warp and regional variation.

    Args:
        rng: the subject's random generator.
        sex: ``"M"`` or ``"F"``; men's heads are a few percent larger on average.

    Returns:
        The subject's anatomy.
    """
    overall = 1.0 + (0.035 if sex == "M" else -0.035) + rng.normal(0.0, 0.03)
    head_scale = np.clip(overall + rng.normal(0.0, 0.015, size=3), 0.9, 1.1)
    # Smoothed white noise on an 8 mm grid: correlation length ~2 cm, a few mm of displacement.
    noise = rng.standard_normal((3, *_WARP_SHAPE))
    warp = np.stack([ndi.gaussian_filter(c, 2.5, mode="nearest") for c in noise])
    rms = float(rng.uniform(1.5, 3.0))
    warp *= rms / np.sqrt((warp**2).sum(axis=0).mean())
    anatomy = {r.name: float(rng.normal(0.0, r.anatomy_sd)) for r in DEFORM_REGIONS}
    # Shared per structure (both hemispheres) times a per-hemisphere factor: AD atrophy varies
    # between people and is often asymmetric.
    shared: dict[str, float] = {}
    susceptibility = {}
    for region in REGIONS:
        base = region.name.removesuffix("_left").removesuffix("_right")
        if base not in shared:
            shared[base] = float(rng.lognormal(0.0, 0.2))
        susceptibility[region.name] = shared[base] * float(rng.lognormal(0.0, 0.1))
    return SubjectAnatomy(head_scale, warp.astype(np.float32), rms, anatomy, susceptibility)


@dataclass(frozen=True)
class RegionChange:
    """Change applied to one region in one scan (mm of boundary motion, or intensity fraction).

    Attributes:
        severity: regional disease severity (subject severity times susceptibility).
        disease: disease-related part.
        ageing: age-related part.
        anatomy: normal individual variation (deforming regions only).
    """

    severity: float
    disease: float
    ageing: float
    anatomy: float

    @property
    def total(self) -> float:
        """Sum of all parts: what the scan actually shows."""
        return self.disease + self.ageing + self.anatomy


def region_changes(
    anatomy: SubjectAnatomy, severity: float, age: float, atrophy_scale: float, thinning_scale: float = 1.0
) -> dict[str, RegionChange]:
    """Per-region change for one session.

    Args:
        anatomy: the subject's anatomy.
        severity: the subject's disease severity at this session (0 none, ~1 typical AD).
        age: age at this session, years.
        atrophy_scale: multiplier on the disease-related part.
        thinning_scale: extra multiplier on the disease-related cortical thinning.

    Returns:
        Region name -> change, for every region in :data:`REGIONS`.
    """
    ageing = float(np.clip((age - 60.0) / 30.0, 0.0, 1.3))
    out = {}
    for region in REGIONS:
        regional = severity * anatomy.susceptibility[region.name]
        out[region.name] = RegionChange(
            severity=regional,
            disease=atrophy_scale * (thinning_scale if region.effect == "thin" else 1.0) * regional * region.disease,
            ageing=ageing * region.ageing,
            anatomy=anatomy.anatomy_mm.get(region.name, 0.0),
        )
    return out


def _exponentiate(velocity: np.ndarray, support: np.ndarray, spacing_mm: float, steps: int = 5) -> np.ndarray:
    """Displacement of the flow of a stationary velocity field (scaling and squaring).

    Summed region fields can overlap (hippocampus next to the temporal horn) and, added as
    plain displacements, fold; integrated as a velocity the warp stays invertible.
    """
    # A point with zero velocity keeps zero displacement at every squaring step, so only the
    # support (a small part of the box) needs updating.
    shape = velocity.shape[1:]
    points = np.stack(np.unravel_index(support, shape)).astype(np.float32)
    current = velocity.reshape(3, -1)[:, support] / np.float32(2**steps)
    field = np.zeros_like(velocity)
    flat = field.reshape(3, -1)
    for _ in range(steps):
        flat[:, support] = current
        index = points + current / np.float32(spacing_mm)
        current = current + np.stack([
            ndi.map_coordinates(c, index, order=1, mode="constant", cval=0.0, prefilter=False, output=np.float32)
            for c in field
        ])
    flat[:, support] = current
    return field


def atrophy_fields(model: AtrophyModel, changes: dict[str, RegionChange]) -> tuple[np.ndarray, np.ndarray]:
    """Build the atrophy warp of one scan on the model's field box.

    Args:
        model: the precomputed atrophy model.
        changes: per-region change of this scan.

    Returns:
        ``(displacement, disease)``: the (3, X, Y, Z) float32 pull-back displacement in mm of
        everything the scan shows, and the (X, Y, Z) length in mm of its disease-related part.
    """
    total = np.zeros((3, *model.field_shape), dtype=np.float32)
    disease = np.zeros_like(total)
    for region in DEFORM_REGIONS:
        slices, unit = model.unit_fields[region.name]
        change = changes[region.name]
        total[(slice(None), *slices)] += np.float32(change.total) * unit
        disease[(slice(None), *slices)] += np.float32(change.disease) * unit
    spacing = float(abs(model.field_affine[0, 0]))
    return _exponentiate(total, model.support, spacing), np.sqrt((disease**2).sum(axis=0))


_MAX_THINNING = 0.9  # the most of the outer cortex's contrast thinning can remove


def thinning_lookup(changes: dict[str, RegionChange], part: str = "total") -> np.ndarray:
    """Per-lobe thinning fraction, indexed like :attr:`AtrophyModel.lobe` (0 = not cortex).

    Args:
        changes: per-region change of this scan.
        part: ``"total"`` (what is applied) or ``"disease"`` (the disease-related part).

    Returns:
        float32 array of length ``len(THIN_REGIONS) + 1``, clipped to [0, 0.9].
    """
    values = [0.0] + [float(getattr(changes[r.name], part)) for r in THIN_REGIONS]
    return np.clip(np.array(values, dtype=np.float32), 0.0, _MAX_THINNING)


def disease_thinning(changes: dict[str, RegionChange], previous: dict[str, RegionChange] | None = None) -> np.ndarray:
    """Per lobe (indexed like :func:`thinning_lookup`): the thinning the disease actually applied.

    The applied thinning is the *total* (disease + ageing + anatomy) clipped to
    ``[0, 0.9]``; the disease's share is what the clipped total loses without it. With
    ``previous``, the share of the disease's progression since that visit: a lobe already thinned
    to the limit gets no visible change, so the truth must not mark one there.

    Args:
        changes: per-region change of this scan.
        previous: per-region change of the subject's previous visit, or None.

    Returns:
        float32 array of length ``len(THIN_REGIONS) + 1`` (0 = not cortex), in [0, 0.9].
    """
    total = np.array([0.0] + [changes[r.name].total for r in THIN_REGIONS])
    part = np.array([0.0] + [changes[r.name].disease - (previous[r.name].disease if previous else 0.0) for r in THIN_REGIONS])
    applied = np.clip(total, 0.0, _MAX_THINNING)
    return np.clip(applied - np.clip(total - part, 0.0, _MAX_THINNING), 0.0, None).astype(np.float32)
