"""Intensity normalisation: z-score using statistics from inside the brain mask."""

from __future__ import annotations

import torchio as tio

from alzmri.preprocessing.brain_mask import MASK_KEY
from alzmri.preprocessing.config import PreprocessConfig


def build(config: PreprocessConfig) -> tio.Transform:
    """TorchIO's ``ZNormalization`` with mean and std taken in the brain."""
    return tio.ZNormalization(masking_method=MASK_KEY)
