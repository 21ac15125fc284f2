"""Training-time augmentation with TorchIO."""

from __future__ import annotations

import torchio as tio


def training_transform(augment: bool) -> tio.Transform | None:
    """RandomNoise and RandomGamma; ``None`` when ``augment`` is off.

    Inputs are already z-scored inside the brain by preprocessing (TorchIO ``ZNormalization``
    with the brain mask), so the noise std is in units of the brain's intensity spread and the
    gamma is TorchIO's sign-preserving one. No second z-score happens here: a whole-volume
    z-score applied to training inputs only would give validation and test inputs (z-scored in
    the brain) a different distribution — in our runs that alone kept the model at chance.
    """
    if not augment:
        return None
    return tio.Compose([tio.RandomNoise(std=(0.0, 0.1), p=0.5), tio.RandomGamma(log_gamma=(-0.15, 0.15), p=0.5)])
