"""Resampling to isotropic voxels (1 mm by default)."""

from __future__ import annotations

import torchio as tio

from alzmri.preprocessing.config import PreprocessConfig

FIELDS = ("spacing",)


def build(config: PreprocessConfig) -> tio.Transform:
    """TorchIO's ``Resample`` (SimpleITK underneath): B-spline-free linear for images, nearest for masks."""
    return tio.Resample(config.spacing, image_interpolation="linear")
