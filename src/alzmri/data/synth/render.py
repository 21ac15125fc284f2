"""Render one scan: compose every spatial transform, resample the template once, write files.

For each output voxel the template position is found through one chain of pull-back maps,
output grid -> scanner pose -> head scale -> subject warp -> atrophy warp -> template voxel,
evaluated on a ~3 mm grid of the output and trilinearly upsampled (all maps are smooth), so
the full-resolution cost is one interpolation of the template plus bias and noise.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from alzmri.data.synth.anatomy import RegionChange, SubjectAnatomy, atrophy_fields, disease_thinning, thinning_lookup, warp_affine
from alzmri.data.synth.regions import CSF_LEVEL, AtrophyModel, atrophy_model
from alzmri.data.synth.scanner import ScanParams, finish_intensities, head_to_scanner, log_bias, output_grid, sidecar
from alzmri.io.templates import load_desikan_killiany_on_mni
from alzmri.utils.atomic import atomic_path

# Spacing (mm) of the output-space grid on which the transform chain is evaluated.
COARSE_MM = 3.0
# Spacing (mm) of the sparser grid for the subject-level maps (pose, head scale, individual warp).
SUBJECT_GRID_MM = 8.0
# Atrophy-mask scaling: these disease changes (or more) are stored as 255.
MASK_FULL_MM = 3.0
MASK_FULL_THINNING = 0.5


@dataclass(frozen=True)
class ScanJob:
    """Everything needed to render one scan, independent of any other scan.

    Attributes:
        participant_id: e.g. ``sub-001``.
        session_id: e.g. ``ses-01``.
        t1w: path of the T1w NIfTI; its JSON sidecar sits next to it.
        mask: path of the atrophy-mask NIfTI; its JSON sidecar sits next to it.
        anatomy: the subject's anatomy.
        changes: per-region atrophy of this session.
        params: the scan's acquisition.
        nominal_voxel: the cohort's nominal voxel size, mm.
        noise_entropy: seed material of the scan's noise generator.
        previous: per-region atrophy of the subject's previous visit (longitudinal cohorts: the
            scan then also gets a true change mask), else None.
    """

    participant_id: str
    session_id: str
    t1w: Path
    mask: Path
    anatomy: SubjectAnatomy
    changes: dict[str, RegionChange]
    params: ScanParams
    nominal_voxel: float
    noise_entropy: tuple[int, ...]
    previous: dict[str, RegionChange] | None = None

    @property
    def change(self) -> Path | None:
        """Where the true change since the previous visit goes (None: first visit, or not longitudinal)."""
        if self.previous is None:
            return None
        return self.mask.with_name(self.mask.name.replace("_desc-atrophy_mask", "_desc-change_mask"))

    @property
    def labels(self) -> Path:
        """Where the scan's ground-truth anatomy goes: the atlas carried through its transform chain."""
        return self.mask.with_name(self.mask.name.replace("_desc-atrophy_mask", "_desc-aparcaseg_dseg"))

    def outputs(self) -> tuple[Path, ...]:
        """Every file this job writes (the T1w image last)."""
        change = () if self.change is None else (self.change,)
        return (_json_of(self.mask), self.mask, self.labels, *change, _json_of(self.t1w), self.t1w)

    def done(self) -> bool:
        """Whether every output exists (each is written atomically, so existing means complete)."""
        return all(path.is_file() for path in self.outputs())


def _json_of(nifti: Path) -> Path:
    return nifti.with_name(nifti.name.removesuffix(".nii.gz") + ".json")


@functools.lru_cache(maxsize=2)
def _intensity_model(voxel: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Template blurred to the nominal voxel size plus the sparse outer-cortex thinning depth.

    Returns:
        ``(base, cortex_index, depth, lobe)``: blurred T1; flat indices of cortex voxels; how far
        (in template intensity) each would darken at thinning fraction 1; its lobe number.
    """
    model = atrophy_model()
    t1 = model.template.t1
    # Partial-volume blur: a voxel of size v integrates ~v mm (FWHM) of the 1 mm template.
    sigma = np.sqrt(max(voxel**2 - 1.0, 0.0)) / 2.355
    depth = model.outer_cortex * np.clip(t1 - CSF_LEVEL, 0.0, None)
    if sigma > 0.1:
        t1 = ndi.gaussian_filter(t1, sigma)
        depth = ndi.gaussian_filter(depth, sigma)
    cortex = np.flatnonzero(model.lobe)
    arrays = (np.asarray(t1, dtype=np.float32), cortex, depth.ravel()[cortex].astype(np.float32), model.lobe.ravel()[cortex])
    for array in arrays:
        array.setflags(write=False)
    return arrays


def warm_up(nominal_voxel: float) -> None:
    """Build this process's cached template model now (so forked workers inherit it).

    Args:
        nominal_voxel: the cohort's nominal voxel size, mm.
    """
    _intensity_model(round(nominal_voxel, 3))


def _positions(shape: tuple[int, int, int], voxel: np.ndarray, spacing_mm: float) -> list[np.ndarray]:
    """Per axis, voxel positions of a grid spaced ~``spacing_mm`` that spans the whole array."""
    counts = [min(n, int(np.ceil((n - 1) * v / spacing_mm)) + 1) for n, v in zip(shape, voxel, strict=True)]
    return [np.linspace(0.0, n - 1, c) for n, c in zip(shape, counts, strict=True)]


def _interp_matrix(target: np.ndarray, source: np.ndarray) -> np.ndarray | None:
    """Linear interpolation weights from values at ``source`` positions to ``target`` positions (None: same)."""
    if len(source) == len(target):
        return None
    j = np.clip(np.searchsorted(source, target, side="right") - 1, 0, len(source) - 2)
    frac = (target - source[j]) / (source[j + 1] - source[j])
    weights = np.zeros((len(target), len(source)), dtype=np.float32)
    weights[np.arange(len(target)), j] = 1.0 - frac
    weights[np.arange(len(target)), j + 1] = frac
    return weights


def _upsample(coarse: np.ndarray, mats: list[np.ndarray | None]) -> np.ndarray:
    """Separable trilinear upsampling of (C, a, b, c) channels with per-axis weight matrices."""
    out = coarse
    if mats[2] is not None:
        out = out @ mats[2].T
    if mats[1] is not None:
        out = mats[1] @ out
    if mats[0] is not None:
        c, a, b, d = out.shape
        out = (mats[0] @ out.reshape(c, a, b * d)).reshape(c, -1, b, d)
    return np.ascontiguousarray(out, dtype=np.float32)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return (matrix[:3, :3] @ points + matrix[:3, 3:4]).astype(np.float32)


def _sample(volume: np.ndarray, index: np.ndarray, order: int = 1, mode: str = "constant") -> np.ndarray:
    return ndi.map_coordinates(volume, index, order=order, mode=mode, cval=0.0, prefilter=False, output=np.float32)


@dataclass(frozen=True)
class ScanGeometry:
    """Where every voxel of a scan reads the template, and the smooth per-voxel fields.

    Attributes:
        shape: stored array shape.
        affine: stored voxel-to-world matrix.
        template_index: (3, *shape) float32 template voxel coordinates of every scan voxel.
        log_bias: float32 log bias field.
        mask_value: float32 disease-atrophy strength (1 = full scale of the stored mask).
        change_value: float32 strength of the disease change since the previous visit (same
            scale), or None.
    """

    shape: tuple[int, int, int]
    affine: np.ndarray
    template_index: np.ndarray
    log_bias: np.ndarray
    mask_value: np.ndarray
    change_value: np.ndarray | None = None


def _disease_strength(model: AtrophyModel, thinning: np.ndarray, disease: np.ndarray, field_index: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Disease-atrophy strength (1 = full mask scale) at the coarse grid's points.

    ``thinning`` is the per-lobe thinning the disease applied (:func:`disease_thinning`);
    ``disease`` the length field of :func:`atrophy_fields`; ``field_index`` the points on its box
    and ``y`` their template positions after the scan's atrophy.
    """
    cortex = thinning[model.lobe_coarse] * model.outer_cortex_coarse
    return np.maximum(
        _sample(disease, field_index) / MASK_FULL_MM,
        _sample(cortex, _apply(np.linalg.inv(model.coarse_affine), y)) / MASK_FULL_THINNING,
    )


def _progression(changes: dict[str, RegionChange], previous: dict[str, RegionChange]) -> dict[str, RegionChange]:
    """The disease part of the change from ``previous`` to ``changes`` (nothing else moves)."""
    return {name: RegionChange(c.severity - previous[name].severity, c.disease - previous[name].disease, 0.0, 0.0)
            for name, c in changes.items()}  # fmt: skip


def scan_geometry(job: ScanJob) -> ScanGeometry:
    """Compose the scan's transform chain and evaluate it at every voxel.

    Args:
        job: the scan.

    Returns:
        The scan's geometry.
    """
    model = atrophy_model()
    forward = head_to_scanner(job.params, job.anatomy.head_scale)
    shape, affine = output_grid(job.params, forward)
    voxel = np.asarray(job.params.voxel_size_mm)
    fine = [np.arange(n, dtype=np.float64) for n in shape]
    coarse = _positions(shape, voxel, COARSE_MM)
    sparse = _positions(shape, voxel, SUBJECT_GRID_MM)

    # Pose, head scale and the individual warp vary over centimetres: evaluate them on a sparse
    # grid and interpolate (exact for the affine part) to the coarse grid.
    q = _apply(np.linalg.inv(forward) @ affine, np.stack(np.meshgrid(*sparse, indexing="ij")).reshape(3, -1))
    warp_index = _apply(np.linalg.inv(warp_affine()), q)
    r = q + np.stack([_sample(c, warp_index, mode="nearest") for c in job.anatomy.warp])
    to_coarse = [_interp_matrix(c, s) for c, s in zip(coarse, sparse, strict=True)]
    r = _upsample(r.reshape(3, *(len(p) for p in sparse)), to_coarse)
    r = r.reshape(3, -1)

    # Atrophy, in template space, on the coarse grid.
    displacement, disease = atrophy_fields(model, job.changes)
    field_index = _apply(np.linalg.inv(model.field_affine), r)
    y = r + np.stack([_sample(c, field_index) for c in displacement])
    mask_value = _disease_strength(model, disease_thinning(job.changes), disease, field_index, y)
    template_index = _apply(np.linalg.inv(model.template.affine), y)
    index = np.stack(np.meshgrid(*coarse, indexing="ij")).reshape(3, -1)
    unit = (2.0 * index / (np.array(shape)[:, None] - 1) - 1.0).astype(np.float32)
    extra = []
    if job.previous is not None:
        step = _progression(job.changes, job.previous)
        extra.append(_disease_strength(model, disease_thinning(job.changes, job.previous), atrophy_fields(model, step)[1], field_index, y)[None])
    channels = np.concatenate([template_index, log_bias(job.params, unit)[None], mask_value[None], *extra])
    channels = channels.reshape(-1, *(len(p) for p in coarse))
    full = _upsample(channels, [_interp_matrix(f, c) for f, c in zip(fine, coarse, strict=True)])
    return ScanGeometry(shape, affine, full[:3], full[3], full[4], full[5] if extra else None)


def render_arrays(job: ScanJob, geometry: ScanGeometry | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render a scan in memory.

    Args:
        job: the scan to render.
        geometry: its :func:`scan_geometry`, when already computed.

    Returns:
        ``(t1w, mask, affine)``: int16 image, uint8 atrophy mask on the same grid, 4 x 4 affine.
    """
    base, cortex, depth, lobe = _intensity_model(round(job.nominal_voxel, 3))
    geometry = scan_geometry(job) if geometry is None else geometry
    thinned = base.copy()
    thinned.ravel()[cortex] -= thinning_lookup(job.changes)[lobe] * depth
    image = _sample(thinned, geometry.template_index)
    rng = np.random.default_rng(np.random.SeedSequence(job.noise_entropy))
    t1w = finish_intensities(image, np.exp(geometry.log_bias), job.params, rng)
    mask = np.clip(np.rint(geometry.mask_value * 255.0), 0, 255).astype(np.uint8)
    return t1w, mask, geometry.affine


def render_labels(job: ScanJob, geometry: ScanGeometry | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The Desikan-Killiany atlas carried through the scan's transform chain (ground-truth anatomy).

    Args:
        job: the scan.
        geometry: its :func:`scan_geometry`, when already computed.

    Returns:
        ``(labels, affine)``: int32 atlas labels on the scan's grid (nearest neighbour) and its affine.
    """
    labels, _ = load_desikan_killiany_on_mni()
    geometry = scan_geometry(job) if geometry is None else geometry
    warped = ndi.map_coordinates(labels, geometry.template_index, order=0, mode="constant", cval=0)
    return warped.astype(np.int32), geometry.affine


def _nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)  # scanner-anatomical coordinates, as a scanner would write
    img.set_sform(affine, code=1)
    return img


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")


def render_scan(job: ScanJob) -> str:
    """Render one scan and write its T1w image and sidecar, atrophy mask and sidecar, and atlas labels.

    Args:
        job: the scan to render.

    Returns:
        The scan's name, e.g. ``sub-001_ses-01``.
    """
    geometry = scan_geometry(job)
    t1w, mask, affine = render_arrays(job, geometry)
    mask_json, mask_path, labels_path, t1w_json, t1w_path = _json_of(job.mask), job.mask, job.labels, _json_of(job.t1w), job.t1w
    if job.change is not None and not job.change.is_file() and geometry.change_value is not None:
        change = np.clip(np.rint(geometry.change_value * 255.0), 0, 255).astype(np.uint8)
        with atomic_path(job.change) as tmp:
            nib.save(_nifti(change, affine), tmp)
    if not labels_path.is_file():
        labels, _ = render_labels(job, geometry)
        with atomic_path(labels_path) as tmp:
            nib.save(_nifti(labels.astype(np.int16), affine), tmp)
    # Outputs are deterministic: on resume, files that survived are kept untouched.
    if not mask_path.is_file():
        with atomic_path(mask_path) as tmp:
            nib.save(_nifti(mask, affine), tmp)
    if not mask_json.is_file():
        _write_json(mask_json, {
            "Description": "Where disease-related atrophy was applied: max(|disease displacement| / "
            f"{MASK_FULL_MM} mm, disease cortical thinning fraction / {MASK_FULL_THINNING}) scaled to 0-255.",
            "Sources": [f"bids::{job.participant_id}/{job.session_id}/anat/{t1w_path.name}"],
            "ScaleFullDisplacementMm": MASK_FULL_MM,
            "ScaleFullThinningFraction": MASK_FULL_THINNING,
            "SynthSubject": {"HeadScale": [round(float(s), 4) for s in job.anatomy.head_scale],
                             "WarpRmsMm": round(job.anatomy.warp_rms_mm, 3)},
        })
    if not t1w_json.is_file():
        _write_json(t1w_json, sidecar(job.params))
    if not t1w_path.is_file():
        with atomic_path(t1w_path) as tmp:
            nib.save(_nifti(t1w, affine), tmp)
    return f"{job.participant_id}_{job.session_id}"
