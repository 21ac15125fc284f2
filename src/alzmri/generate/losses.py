"""Losses of the progression GAN: binary cross-entropy over patch scores, optionally weighted by the brain.

The discriminator scores patches (8 pixels or voxels each). With a region of interest, each
patch's loss is weighted by the share of brain in it, so the background (where nothing
progresses) neither rewards nor punishes the generator: the seed's ROI-aware discriminator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def patch_weights(mask: torch.Tensor, patches: tuple[int, ...]) -> torch.Tensor:
    """Share of brain in each patch: the ``(N, 1, *S)`` mask average-pooled to ``(N, 1, *patches)``."""
    pool = F.adaptive_avg_pool2d if mask.dim() == 4 else F.adaptive_avg_pool3d
    return pool(mask.float(), patches)


def patch_bce(logits: torch.Tensor, real: bool, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy of patch logits against "real" (1) or "generated" (0).

    Args:
        logits: ``(N, 1, *P)`` discriminator output.
        real: the target label.
        weights: ``(N, 1, *P)`` patch weights (None: every patch counts the same).

    Returns:
        Scalar loss; weighted patches count by their weight (weight 0: not at all).
    """
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if weights is None:
        return loss.mean()
    return (loss * weights).sum() / weights.sum().clamp_min(1e-6)


def masked_l1(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute difference, over the mask's voxels when one is given."""
    diff = (a - b).abs()
    if mask is None:
        return diff.mean()
    weight = mask.expand_as(diff)
    return (diff * weight).sum() / weight.sum().clamp_min(1.0)
