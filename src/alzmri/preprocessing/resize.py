"""Resize to a cubic grid (128³ by default), cubic B-spline by default."""

from __future__ import annotations

import warnings

import torchio as tio

from alzmri.preprocessing.config import PreprocessConfig

FIELDS = ("size", "interpolation")

# TorchIO rounds the output grid and then fixes an off-by-one shape with CropOrPad, warning
# each time; the result is the requested cube, so the warning is noise for users.
warnings.filterwarnings("ignore", message=r"Output shape .* != target shape", category=RuntimeWarning)


def build(config: PreprocessConfig) -> tio.Transform:
    """TorchIO's ``Resize`` to ``size³`` (``bspline`` or linear for images, nearest for the mask)."""
    return tio.Resize(config.size, image_interpolation=config.interpolation)
