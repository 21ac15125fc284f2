"""Intensity normalisation with statistics from inside the brain mask.

``zscore``: mean 0, standard deviation 1 in the brain. ``minmax``: the brain's low and high
percentiles (0.5 and 99.5 by default) map to 0 and 1, values beyond are clipped.

With ``zero_background`` (the default) every voxel outside the mask is then set to 0, as
nnU-Net does when it normalises inside a mask. TorchIO's masked z-score alone maps the
skull-stripped zero to ``-mean / sd`` of the brain: a single number per scan, held by most of
the voxels, that depends on the scanner's contrast and on how much dark CSF the brain holds.
On our hard synthetic cohort that number alone predicted AD with AUC 0.80 in train and 0.85
in validation but 0.40 in test, and the CNNs learnt it instead of the anatomy
(``benchmarks/README.md``, recipe study).
"""

from __future__ import annotations

import torchio as tio

from alzmri.preprocessing.config import PreprocessConfig
from alzmri.preprocessing.subject import MASK_KEY

FIELDS = ("normalization", "percentiles", "zero_background")


def build(config: PreprocessConfig) -> tio.Transform:
    """TorchIO's ``ZNormalization`` or ``RescaleIntensity``, masked by the brain, then (``zero_background``) ``Mask``."""
    if config.normalization == "minmax":
        normalise = tio.RescaleIntensity(out_min_max=(0.0, 1.0), percentiles=config.percentiles, masking_method=MASK_KEY)
    else:
        normalise = tio.ZNormalization(masking_method=MASK_KEY)
    if not config.zero_background:
        return normalise
    return tio.Compose([normalise, tio.Mask(masking_method=MASK_KEY, outside_value=0.0)])
