"""Resize to a cubic grid (128³ by default), cubic B-spline by default."""

from __future__ import annotations

import torchio as tio

from alzmri.preprocessing.config import PreprocessConfig

FIELDS = ("size", "interpolation")


def build(config: PreprocessConfig) -> tio.Transform:
    """TorchIO's ``Resize`` to ``size³`` (``bspline`` or linear for images, nearest for the mask)."""
    return tio.Resize(config.size, image_interpolation=config.interpolation)
