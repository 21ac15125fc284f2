"""Compose the configured steps and run them on one scan, in two stages.

Each step lives in its own module exposing ``build(config) -> torchio.Transform`` and
``FIELDS``, the config fields it depends on. The slow steps (up to the last of N4, skull
stripping and registration) form the *prefix*; its result, an :class:`Intermediate`, is what
the runner caches, so changing a later setting (size, crop padding, normalisation) recomputes
only the fast *suffix*. :func:`step_keys` hashes exactly the fields each stage depends on.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torchio as tio

from alzmri.io.nifti import load_scan
from alzmri.preprocessing.config import PreprocessConfig
from alzmri.preprocessing.subject import IMAGE_KEY, MASK_KEY
from alzmri.utils.errors import AlzmriError

PIPELINE_VERSION = 3  # bump when a step's output changes for the same settings
_SLOW = ("n4", "skull_strip", "register")
_PREVIEW_EDGE = 96  # voxels along the longest axis of the QC "before" preview
_FLOAT16_MAX = float(np.finfo(np.float16).max)


def step_module(name: str) -> Any:
    """The module implementing step ``name``."""
    return importlib.import_module(f"alzmri.preprocessing.{name}")


def warm_up(config: PreprocessConfig) -> None:
    """Load what the configured steps need once (templates), before worker processes fork."""
    for name in config.steps:
        module = step_module(name)
        if hasattr(module, "warm_up"):
            module.warm_up(config)


def build_pipeline(config: PreprocessConfig) -> tio.Compose:
    """The configured steps as one TorchIO ``Compose`` (for use from Python)."""
    return tio.Compose([step_module(s).build(config) for s in config.steps])


def split_steps(config: PreprocessConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(prefix, suffix)``: the prefix ends with the last slow step (empty when none)."""
    slow = [i for i, s in enumerate(config.steps) if s in _SLOW]
    cut = slow[-1] + 1 if slow else 0
    return tuple(config.steps[:cut]), tuple(config.steps[cut:])


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def step_keys(content_key: str, config: PreprocessConfig) -> tuple[str, str]:
    """Cache keys of a scan's intermediate and final array.

    Each key chains the input's content hash with every step name and the values of the
    config fields that step declares, so a setting changes only the keys of its own stage and
    the stages after it.
    """
    prefix, suffix = split_steps(config)
    values = config.model_dump(mode="json")
    key = _digest(PIPELINE_VERSION, content_key)
    for name in prefix:
        module = step_module(name)
        # A step's VERSION (when it has one) changes the keys of its own outputs only.
        key = _digest(key, name, {f: values[f] for f in module.FIELDS}, *([module.VERSION] if hasattr(module, "VERSION") else []))
    prefix_key = key
    for name in suffix:
        key = _digest(key, name, {f: values[f] for f in step_module(name).FIELDS})
    if keeps_template_grid(config):  # outputs before this was fixed were cut to each brain's box
        key = _digest(key, "template-grid")
    return prefix_key, _digest(key, config.dtype)


def keeps_template_grid(config: PreprocessConfig) -> bool:
    """Whether outputs stay on the MNI152 grid: registered and never cropped (so every scan shares one grid)."""
    return "register" in config.steps and "crop" not in config.steps


def _template_grid(intermediate: Intermediate, spacing: float) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The intermediate's image and mask put back onto the full template grid it was cut from (zeros around)."""
    from alzmri.preprocessing.register import template_image

    grid, affine = tio.io.sitk_to_nib(template_image(spacing))
    shape = grid.shape[-3:]
    index = np.linalg.solve(affine, intermediate.affine)  # the box's voxel axes in template voxels: a pure shift
    start = np.rint(index[:3, 3]).astype(int)
    if not np.allclose(index[:3, :3], np.eye(3), atol=1e-3) or (start < 0).any() or (start + intermediate.image.shape > np.array(shape)).any():
        raise AlzmriError("the registered brain box does not lie on the template grid (a step after 'register' changed the grid?)")
    box = tuple(slice(int(a), int(a) + n) for a, n in zip(start, intermediate.image.shape, strict=True))
    image = np.zeros(shape, dtype=np.float32)
    image[box] = intermediate.image.astype(np.float32)
    mask = None
    if intermediate.mask is not None:
        mask = np.zeros(shape, dtype=np.uint8)
        mask[box] = intermediate.mask
    return image, mask, affine


@dataclass
class Intermediate:
    """A scan after the slow steps: what the runner caches between the two stages.

    The image is stored as float16 divided by ``scale`` (every later step is invariant to a
    global intensity scale), cropped to the brain plus two voxels (zero outside it after skull
    stripping), so the cache stays small.

    Attributes:
        image: float16 (x, y, z) array.
        mask: uint8 brain mask, or None when no skull stripping ran.
        affine: voxel-to-world matrix of ``image``.
        scale: the factor ``image`` was divided by.
        preview: QC "before" view: the input after reorientation/resampling, subsampled.
        preview_mask: the brain mask on ``preview``'s grid, or None.
        qc: QC values of the prefix (shapes, timings, skull-strip method, warnings ...).
    """

    image: np.ndarray
    mask: np.ndarray | None
    affine: np.ndarray
    scale: float
    preview: np.ndarray
    preview_mask: np.ndarray | None
    qc: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write as a compressed ``.npz`` (atomically: the caller passes a temporary path)."""
        arrays = {"image": self.image, "affine": self.affine, "scale": np.float64(self.scale), "preview": self.preview,
                  "qc": np.array(json.dumps(self.qc))}
        if self.mask is not None:
            arrays["mask"] = self.mask
        if self.preview_mask is not None:
            arrays["preview_mask"] = self.preview_mask
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    @classmethod
    def load(cls, path: Path) -> Intermediate:
        """Read a saved intermediate."""
        with np.load(path) as z:
            return cls(image=z["image"], mask=z["mask"] if "mask" in z else None, affine=z["affine"], scale=float(z["scale"]),
                       preview=z["preview"], preview_mask=z["preview_mask"] if "preview_mask" in z else None,
                       qc=json.loads(str(z["qc"])))


def subject_from_image(img: nib.Nifti1Image) -> tio.Subject:
    """A TorchIO subject holding the scan as float32 under ``image``."""
    data = np.asarray(img.dataobj, dtype=np.float32)
    return tio.Subject({IMAGE_KEY: tio.ScalarImage(tensor=torch.from_numpy(data[None].copy()), affine=img.affine)})


def run_steps(subject: tio.Subject, names: tuple[str, ...], config: PreprocessConfig, qc: dict[str, Any]) -> tio.Subject:
    """Apply steps one by one, recording each step's seconds as ``seconds_<step>`` in ``qc``."""
    for name in names:
        start = time.perf_counter()
        subject = step_module(name).build(config)(subject)
        qc[f"seconds_{name}"] = round(time.perf_counter() - start, 3)
    return subject


def _preview_step(shape: tuple[int, ...]) -> int:
    return max(1, int(np.ceil(max(shape) / _PREVIEW_EDGE)))


def _subsample(array: np.ndarray) -> np.ndarray:
    step = _preview_step(array.shape)
    return np.ascontiguousarray(array[::step, ::step, ::step])


def _brain_box(mask: np.ndarray, margin: int = 2) -> tuple[slice, ...]:
    nonzero = np.argwhere(mask)
    lo = np.maximum(nonzero.min(axis=0) - margin, 0)
    hi = np.minimum(nonzero.max(axis=0) + 1 + margin, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def run_prefix(source: str | Path | nib.Nifti1Image, config: PreprocessConfig, notes: Sequence[str] = ()) -> Intermediate:
    """Load a scan (NIfTI file, DICOM series folder or nibabel image) and run the slow steps.

    ``notes``: warnings from loading an image handed over already read (they join the QC warnings).
    """
    if isinstance(source, nib.Nifti1Image):
        img, warnings = source, list(notes)
    else:
        img, warnings = load_scan(source)
    prefix, _ = split_steps(config)
    qc: dict[str, Any] = {
        "input_shape": "x".join(map(str, img.shape[:3])),
        "input_spacing": "x".join(f"{z:.2f}" for z in img.header.get_zooms()[:3]),
        "input_orientation": "".join(nib.aff2axcodes(img.affine)),
    }
    subject = subject_from_image(img)
    first_slow = next((i for i, s in enumerate(prefix) if s in _SLOW), len(prefix))
    subject = run_steps(subject, prefix[:first_slow], config, qc)
    before = subject[IMAGE_KEY].data[0].numpy()
    preview = _subsample(before)
    preview_spacing = tuple(float(z) * _preview_step(before.shape) for z in subject[IMAGE_KEY].spacing)
    preview_shape = before.shape
    preview_mask = None
    for name in prefix[first_slow:]:
        subject = run_steps(subject, (name,), config, qc)
        qc.update(subject.get("qc", {}))
        if name == "skull_strip":  # checked on the scan's own grid, before a registration rescales it
            from alzmri.preprocessing.qc_checks import mask_checks

            native = subject[MASK_KEY].data[0].numpy() > 0
            if native.shape == preview_shape:
                preview_mask = _subsample(native).astype(np.uint8)
            warnings += mask_checks(native, subject[MASK_KEY].spacing, qc, preview=preview,
                                    preview_mask=None if preview_mask is None else preview_mask > 0, preview_spacing=preview_spacing)
    from alzmri.preprocessing.qc_checks import record_checks

    warnings += record_checks(qc)

    data = subject[IMAGE_KEY].data[0].numpy()
    affine = subject[IMAGE_KEY].affine.copy()
    mask = subject[MASK_KEY].data[0].numpy() > 0 if MASK_KEY in subject else None
    if mask is not None:
        if not mask.any():
            raise AlzmriError("the brain mask is empty after registration (did the registration fail?)")
        qc.update(_intensity_stats(data[mask]))
        box = _brain_box(mask)
        data, mask = data[box], mask[box]
        affine[:3, 3] += affine[:3, :3] @ np.array([s.start for s in box], dtype=float)
    if not np.isfinite(data).all():
        raise AlzmriError("preprocessing produced non-finite values (is the image constant?)")
    scale = _robust_max(data[mask] if mask is not None and mask.any() else data)
    qc["warnings"] = "; ".join(warnings)
    return Intermediate(image=_to_float16(data / scale), mask=None if mask is None else mask.astype(np.uint8),
                        affine=affine, scale=scale, preview=_to_float16(preview / _robust_max(preview)), preview_mask=preview_mask, qc=qc)


def _robust_max(array: np.ndarray) -> float:
    """The 99.9th percentile of ``|array|`` (1 when that is 0): a scale that keeps values near 1."""
    return float(np.percentile(np.abs(array), 99.9)) or 1.0


def _to_float16(array: np.ndarray) -> np.ndarray:
    """float16 without overflow: values past float16's range (65,504) are clipped, never inf."""
    return np.clip(array, -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)


def _intensity_stats(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    p1, p50, p99 = np.percentile(values, [1, 50, 99])
    return {"brain_mean": round(float(values.mean()), 3), "brain_std": round(float(values.std()), 3),
            "brain_p1": round(float(p1), 3), "brain_p50": round(float(p50), 3), "brain_p99": round(float(p99), 3)}


OUTPUT_AFFINE = "output_affine"
SCANNER_AFFINE = "scanner_affine"


def _matrix(qc: dict[str, Any], key: str) -> np.ndarray | None:
    text = qc.get(key)
    if not isinstance(text, str) or not text.strip():
        return None
    return np.array([float(v) for v in text.split()], dtype=float).reshape(4, 4)


def output_affine(qc: dict[str, Any]) -> np.ndarray | None:
    """The 4×4 model-grid affine recorded in a scan's QC record (None for caches made before it was recorded)."""
    return _matrix(qc, OUTPUT_AFFINE)


def scanner_affine(qc: dict[str, Any]) -> np.ndarray | None:
    """The model grid's voxels → the input scan's world (RAS mm), also after 'register' (None: not recorded).

    Without registration this is the model-grid affine; after it, the affine (in MNI mm) composed
    with the recorded registration. It puts anything drawn on the input scan (a lesion, the
    synthetic truth) onto the model grid, and a map made on the model grid back onto the scan.
    """
    return _matrix(qc, SCANNER_AFFINE)


def run_suffix(intermediate: Intermediate, config: PreprocessConfig) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]]:
    """Run the fast steps on an intermediate.

    Returns:
        ``(array, mask, qc)``: the float32 model input, its brain mask (or None) and QC values
        of the suffix (seconds per step, output statistics).
    """
    _, suffix = split_steps(config)
    data, brain, affine = intermediate.image.astype(np.float32), intermediate.mask, intermediate.affine
    if keeps_template_grid(config) and brain is not None:  # the cache's cut to the brain box is undone
        data, brain, affine = _template_grid(intermediate, config.spacing)
    image = tio.ScalarImage(tensor=torch.from_numpy(data[None] * np.float32(intermediate.scale)), affine=affine)
    subject = tio.Subject({IMAGE_KEY: image})
    if brain is not None:
        subject.add_image(tio.LabelMap(tensor=torch.from_numpy(brain[None].copy()), affine=affine), MASK_KEY)
    qc: dict[str, Any] = {}
    subject = run_steps(subject, suffix, config, qc)
    array = subject[IMAGE_KEY].data[0].numpy().astype(np.float32)
    if not np.isfinite(array).all():
        raise AlzmriError("preprocessing produced non-finite values (is the image constant?)")
    mask = subject[MASK_KEY].data[0].numpy() > 0 if MASK_KEY in subject else None
    qc["output_shape"] = "x".join(map(str, array.shape))
    # The model grid's voxel-to-world matrix (RAS mm of the scan, or MNI after 'register'):
    # what maps an attribution map back onto the scan.
    grid = np.asarray(subject[IMAGE_KEY].affine, dtype=float)
    qc[OUTPUT_AFFINE] = " ".join(f"{v:.6g}" for v in grid.ravel())
    registration = _matrix(intermediate.qc, "registration_matrix")
    if registration is not None or "register" not in config.steps:
        qc[SCANNER_AFFINE] = " ".join(f"{v:.8g}" for v in (grid if registration is None else registration @ grid).ravel())
    qc["output_mean"] = round(float(array.mean()), 3)
    qc["output_std"] = round(float(array.std()), 3)
    return array, mask, qc


def preprocess_image(image: nib.Nifti1Image | str | Path, config: PreprocessConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the whole pipeline on one scan, exactly as the cached runner does.

    Args:
        image: a loaded NIfTI image, a NIfTI path or a DICOM series folder.
        config: preprocessing configuration.

    Returns:
        The processed ``size³`` float32 array and its QC record.
    """
    intermediate = run_prefix(image, config)
    array, _, qc = run_suffix(intermediate, config)
    return array, {**intermediate.qc, **qc}
