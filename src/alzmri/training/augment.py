"""Training-time augmentation with TorchIO, chosen by name in the run config.

Inputs are already z-scored inside the brain by preprocessing (TorchIO ``ZNormalization``
with the brain mask), so noise std is in units of the brain's intensity spread and the gamma
is TorchIO's sign-preserving one. No second z-score happens here: a whole-volume z-score
applied to training inputs only would give validation and test inputs (z-scored in the brain)
a different distribution; in our runs that alone kept the model at chance.
"""

from __future__ import annotations

from collections.abc import Sequence

import torchio as tio

from alzmri.training.config import DEFAULT_AUGMENTATIONS, Augmentation


def _build(name: Augmentation) -> tio.Transform:
    """One augmentation with settings suited to brain-extracted, cube-cropped T1w volumes."""
    if name == "noise":
        return tio.RandomNoise(std=(0.0, 0.1), p=0.5)
    if name == "gamma":
        return tio.RandomGamma(log_gamma=(-0.15, 0.15), p=0.5)
    if name == "flip":  # left-right only (axis 0 is R-L after RAS reorientation)
        return tio.RandomFlip(axes=(0,), flip_probability=0.5)
    if name == "affine":
        return tio.RandomAffine(scales=(0.95, 1.05), degrees=5, translation=3, p=0.5)
    if name == "elastic":
        return tio.RandomElasticDeformation(num_control_points=6, max_displacement=3, p=0.3)
    if name == "blur":
        return tio.RandomBlur(std=(0.0, 0.7), p=0.3)
    if name == "bias_field":
        return tio.RandomBiasField(coefficients=0.2, p=0.3)
    # "crop": a random shift of up to ~4 % of the edge, zero-filled, like a random crop and pad
    return tio.RandomAffine(scales=0, degrees=0, translation=4, p=0.5)


def training_transform(augment: bool, names: Sequence[Augmentation] = DEFAULT_AUGMENTATIONS) -> tio.Transform | None:
    """The named augmentations in the given order; ``None`` when ``augment`` is off or none is named."""
    if not augment or not names:
        return None
    return tio.Compose([_build(name) for name in names])
