"""The 3D CNN of Liu et al. 2022 for Alzheimer's disease classification from T1w MRI.

Liu S. et al., "Generalizable deep learning model for early Alzheimer's disease detection
from structural MRIs", Scientific Reports 12, 17106 (2022).

Four conv blocks (Conv3d → InstanceNorm3d → ReLU → MaxPool3d), then an MLP head
F → 1024 → 512 → C. Channel counts are ``(4, 32, 64, 64) × width``: ``width=8`` gives the
paper's 32/256/512/512. Two geometries are registered:

* ``liu_cnn``: the paper's kernels, dilations, paddings and pools; it needs inputs of at least
  88³ (128³ in the paper).
* ``liu_cnn_compact``: same blocks with "same" padding in convs and pools so that inputs
  down to 16³ keep a spatial extent, and batch norm by default — for CPU-sized runs and tests.
  It is *not* the paper's network; the name says so. Why batch norm: with ~100 training scans
  at 48³, the instance-norm version stayed at chance in our runs (train loss flat at 0.69 for
  25+ epochs) while the batch-norm version learned; instance norm removes each scan's global
  tissue statistics, which carry much of the atrophy signal. ``norm="instance"`` restores it.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from alzmri.models.registry import register_model

Norm = Literal["instance", "batch"]


def norm_layer(name: Norm, channels: int) -> nn.Module:
    """A 3D normalisation layer by name (MONAI-style factory)."""
    if name == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if name == "batch":
        return nn.BatchNorm3d(channels)
    raise ValueError(f"unknown norm {name!r}; use 'instance' or 'batch'")

# (kernel, dilation, paper padding, pool kernel) per block, from the paper.
_BLOCKS = ((1, 1, 0, 3), (3, 2, 0, 3), (5, 2, 2, 3), (3, 2, 1, 5))
_CHANNELS = (4, 32, 64, 64)


class LiuCNN3d(nn.Module):
    """Liu et al. 2022 3D CNN.

    Args:
        spatial_dims: must be 3 (kept for MONAI-style constructor symmetry).
        in_channels: input channels (1 for a T1w volume).
        num_classes: output logits.
        width: channel widening factor ``w`` (8 reproduces the paper).
        input_size: cubic input edge; fixes the flattened feature size ``F``.
        same_padding: pad convs and pools so small inputs survive (``liu_cnn_compact``).
        dropout: dropout before each hidden MLP layer.
        norm: ``"instance"`` (the paper) or ``"batch"``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        num_classes: int = 2,
        width: int = 8,
        input_size: int = 128,
        same_padding: bool = False,
        dropout: float = 0.5,
        norm: Norm = "instance",
    ) -> None:
        super().__init__()
        if spatial_dims != 3:
            raise ValueError("LiuCNN3d is a 3D network")
        layers: list[nn.Module] = []
        channels = in_channels
        for (kernel, dilation, padding, pool), mult in zip(_BLOCKS, _CHANNELS, strict=True):
            out = mult * width
            if same_padding:
                padding = dilation * (kernel - 1) // 2
            layers += [
                nn.Conv3d(channels, out, kernel, padding=padding, dilation=dilation),
                norm_layer(norm, out),
                nn.ReLU(inplace=True),
                nn.MaxPool3d(pool, stride=2, padding=pool // 2 if same_padding else 0),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        with torch.no_grad():
            n_features = self.features(torch.zeros(1, in_channels, *(input_size,) * 3)).numel()
        self.input_size = input_size
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(n_features, 1024),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(1024, 512),
            nn.ReLU(inplace=True),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, S, S, S)`` volumes to ``(N, num_classes)`` logits."""
        return self.head(self.features(x))


@register_model(min_input_size=88, default_input_size=128, gradcam_layer="features.12")
def liu_cnn(
    in_channels: int = 1, num_classes: int = 2, width: int = 8, input_size: int = 128, dropout: float = 0.5, norm: Norm = "instance"
) -> nn.Module:
    """Liu et al. 2022 3D CNN, paper geometry (instance norm, dilated convs, MLP head)."""
    return LiuCNN3d(3, in_channels, num_classes, width, input_size, same_padding=False, dropout=dropout, norm=norm)


@register_model(min_input_size=16, default_input_size=64, gradcam_layer="features.12")
def liu_cnn_compact(
    in_channels: int = 1, num_classes: int = 2, width: int = 1, input_size: int = 64, dropout: float = 0.5, norm: Norm = "batch"
) -> nn.Module:
    """Liu et al. 2022 blocks with same-padding and batch norm, for small CPU inputs (not the paper's network)."""
    return LiuCNN3d(3, in_channels, num_classes, width, input_size, same_padding=True, dropout=dropout, norm=norm)
