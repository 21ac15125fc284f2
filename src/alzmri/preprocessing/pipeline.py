"""Compose the configured steps and run them on one scan.

Each step lives in its own module exposing ``build(config) -> torchio.Transform``; a step is
added (N4, skull stripping, ...) by writing such a module and naming it in ``StepName``.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
import torchio as tio

from alzmri.io.nifti import load_volume
from alzmri.preprocessing.brain_mask import MASK_KEY
from alzmri.preprocessing.config import PreprocessConfig
from alzmri.utils.errors import AlzmriError

_NEEDS_MASK = ("crop", "normalize")


def build_pipeline(config: PreprocessConfig) -> tio.Compose:
    """The configured steps as one TorchIO ``Compose``."""
    steps = list(config.steps)
    for step in _NEEDS_MASK:
        if step in steps and ("brain_mask" not in steps or steps.index("brain_mask") > steps.index(step)):
            raise AlzmriError(f"preprocessing step {step!r} needs 'brain_mask' earlier in the steps")
    return tio.Compose([importlib.import_module(f"alzmri.preprocessing.{s}").build(config) for s in steps])


def preprocess_image(image: nib.Nifti1Image | str | Path, config: PreprocessConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """Run the pipeline on one scan.

    Args:
        image: a loaded NIfTI image or a path to one.
        config: preprocessing configuration.

    Returns:
        The processed ``size³`` float32 array and a QC record (input shape, spacing, axis codes,
        brain volume in ml).
    """
    img = load_volume(image) if not isinstance(image, nib.Nifti1Image) else image
    data = np.asarray(img.dataobj, dtype=np.float32)
    subject = tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(data[None].copy()), affine=img.affine))
    qc: dict[str, Any] = {
        "input_shape": "x".join(map(str, data.shape)),
        "input_spacing": "x".join(f"{z:.2f}" for z in img.header.get_zooms()[:3]),
        "input_orientation": "".join(nib.aff2axcodes(img.affine)),
    }
    out = build_pipeline(config)(subject)
    if "registration_metric" in out:
        qc["registration_mattes_mi"] = round(float(out["registration_metric"]), 4)
    if MASK_KEY in out:
        voxel_ml = float(np.prod(out[MASK_KEY].spacing)) / 1000.0
        qc["brain_ml_at_output"] = round(float(out[MASK_KEY].data.sum()) * voxel_ml, 1)
    array = out["image"].data[0].numpy().astype(np.float32)
    if not np.isfinite(array).all():
        raise AlzmriError("preprocessing produced non-finite values (is the image constant?)")
    return array, qc
