"""Training-time augmentation with TorchIO."""

from __future__ import annotations

import torchio as tio


def training_transform(augment: bool) -> tio.Transform | None:
    """RandomNoise and RandomGamma, re-z-scored afterwards; ``None`` when ``augment`` is off.

    Inputs are already z-scored in the brain by preprocessing, so the noise std is in units of
    the brain's intensity spread.
    """
    if not augment:
        return None
    return tio.Compose(
        [
            tio.RandomNoise(std=(0.0, 0.1), p=0.5),
            tio.RandomGamma(log_gamma=(-0.2, 0.2), p=0.5),
            tio.ZNormalization(),
        ]
    )
