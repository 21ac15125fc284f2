"""Resize to a cubic grid (128³ by default)."""

from __future__ import annotations

import torchio as tio

from alzmri.preprocessing.config import PreprocessConfig


def build(config: PreprocessConfig) -> tio.Transform:
    """TorchIO's ``Resize`` to ``size³`` (linear for images, nearest for the mask)."""
    return tio.Resize(config.size, image_interpolation="linear")
