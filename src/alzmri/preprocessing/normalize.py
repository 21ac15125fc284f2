"""Intensity normalisation with statistics from inside the brain mask.

``zscore``: mean 0, standard deviation 1 in the brain. ``minmax``: the brain's low and high
percentiles (0.5 and 99.5 by default) map to 0 and 1, values beyond are clipped.
"""

from __future__ import annotations

import torchio as tio

from alzmri.preprocessing.config import PreprocessConfig
from alzmri.preprocessing.subject import MASK_KEY

FIELDS = ("normalization", "percentiles")


def build(config: PreprocessConfig) -> tio.Transform:
    """TorchIO's ``ZNormalization`` or ``RescaleIntensity``, masked by the brain."""
    if config.normalization == "minmax":
        return tio.RescaleIntensity(out_min_max=(0.0, 1.0), percentiles=config.percentiles, masking_method=MASK_KEY)
    return tio.ZNormalization(masking_method=MASK_KEY)
