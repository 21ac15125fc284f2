"""Reorientation to RAS+ (closest canonical), so every array axis means the same thing."""

from __future__ import annotations

import torchio as tio

from alzmri.preprocessing.config import PreprocessConfig

FIELDS: tuple[str, ...] = ()


def build(config: PreprocessConfig) -> tio.Transform:
    """TorchIO's ``ToCanonical``: permutes/flips voxels (no interpolation) to RAS+."""
    return tio.ToCanonical()
