"""The 3D CNN of Liu et al. 2022 for Alzheimer's disease classification from T1w MRI.

Liu S. et al., "Generalizable deep learning model for early Alzheimer's disease detection
from structural MRIs", Scientific Reports 12, 17106 (2022).

Four conv blocks (Conv3d → InstanceNorm3d → ReLU → MaxPool3d), then an MLP head
F → 1024 → 512 → C. Channel counts are ``(4, 32, 64, 64) × width``: ``width=8`` gives the
paper's 32/256/512/512. Two geometries are registered:

* ``liu2022``: the paper's kernels, dilations, paddings and pools; it needs inputs of at least
  88³ (128³ in the paper). Any width, instance (the paper) or batch norm, and the paper's
  optional age encoding (``age_encoding=True``, see :class:`AgeEncoding`).
* ``liu_cnn_compact``: same blocks with "same" padding in convs and pools so that inputs
  down to 16³ keep a spatial extent, and batch norm by default — for CPU-sized runs and tests.
  It is *not* the paper's network; the name says so. Why batch norm: with ~100 training scans
  at 48³, the instance-norm version stayed at chance in our runs (train loss flat at 0.69 for
  25+ epochs) while the batch-norm version learned; instance norm removes each scan's global
  tissue statistics, which carry much of the atrophy signal. ``norm="instance"`` restores it.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from alzmri.models.registry import register_model

Norm = Literal["instance", "batch"]
Head = Literal["mlp", "pool"]


def norm_layer(name: Norm, channels: int) -> nn.Module:
    """A 3D normalisation layer by name (MONAI-style factory)."""
    if name == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if name == "batch":
        return nn.BatchNorm3d(channels)
    raise ValueError(f"unknown norm {name!r}; use 'instance' or 'batch'")

class AgeEncoding(nn.Module):
    """Age in years → a learned vector added to the classifier's hidden features.

    Liu et al. encode age like a transformer position: sines and cosines of the age at
    geometrically spaced frequencies, then a learned linear layer with layer norm, added to
    the network's hidden representation. Here the encoding has ``dim`` features (half sines,
    half cosines, periods from 1 to 10,000 years × 2π, as in Vaswani et al.), the age is taken
    in half years so one year apart differs at the fastest frequency, and the sum happens at
    the 512-unit layer of the MLP head before its ReLU. (The paper's text does not fix these
    details; this is our reading, stated so results can be compared.)

    Args:
        dim: size of the encoding and of the hidden layer it is added to (even).
    """

    def __init__(self, dim: int = 512) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"age encoding size must be even, got {dim}")
        frequencies = torch.exp(-math.log(10_000.0) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
        self.register_buffer("frequencies", frequencies, persistent=False)
        self.project = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim))

    def forward(self, age: torch.Tensor) -> torch.Tensor:
        """``(N,)`` ages in years → ``(N, dim)``."""
        phase = (2.0 * age.float().reshape(-1, 1)) * self.frequencies
        return self.project(torch.cat([phase.sin(), phase.cos()], dim=1))


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
        age_encoding: add the scan's age (years) to the head's 512-unit layer; ``forward``
            then needs ``age``.
        head: ``"mlp"`` (the paper: flatten → 1024 → 512 → C) or ``"pool"`` (global average
            pooling → 512 → C: a head with ~1/50 of the weights, independent of the input size).
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
        age_encoding: bool = False,
        head: Head = "mlp",
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
        self.input_size = input_size
        if head == "mlp":
            with torch.no_grad():
                n_features = self.features(torch.zeros(1, in_channels, *(input_size,) * 3)).numel()
            layers = [nn.Flatten(), nn.Dropout(dropout), nn.Linear(n_features, 1024), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(1024, 512)]
        elif head == "pool":
            layers = [nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, 512)]
        else:
            raise ValueError(f"unknown head {head!r}; use 'mlp' or 'pool'")
        self._hidden_end = len(layers)  # the age encoding is added to the 512-unit layer's output
        self.head = nn.Sequential(*layers, nn.ReLU(inplace=True), nn.Linear(512, num_classes))
        self.age_encoder = AgeEncoding(512) if age_encoding else None

    @property
    def uses_age(self) -> bool:
        """Whether ``forward`` needs each scan's age."""
        return self.age_encoder is not None

    def forward(self, x: torch.Tensor, age: torch.Tensor | None = None) -> torch.Tensor:
        """Map ``(N, C, S, S, S)`` volumes (and ``(N,)`` ages in years) to ``(N, num_classes)`` logits."""
        if self.age_encoder is None:
            return self.head(self.features(x))
        if age is None:
            raise ValueError("this model was built with age_encoding=True; pass each scan's age")
        hidden = self.head[: self._hidden_end](self.features(x))  # up to the 512-unit linear layer
        return self.head[self._hidden_end :](hidden + self.age_encoder(age.to(hidden.device)))


@register_model(min_input_size=88, default_input_size=128, gradcam_layer="features.12")
def liu2022(
    in_channels: int = 1,
    num_classes: int = 2,
    width: int = 8,
    input_size: int = 128,
    dropout: float = 0.5,
    norm: Norm = "instance",
    age_encoding: bool = False,
    head: Head = "mlp",
) -> nn.Module:
    """Liu et al. 2022 3D CNN, paper geometry (instance norm, dilated convs, MLP head, optional age encoding)."""
    return LiuCNN3d(3, in_channels, num_classes, width, input_size, same_padding=False, dropout=dropout, norm=norm, age_encoding=age_encoding, head=head)


@register_model(min_input_size=16, default_input_size=64, gradcam_layer="features.12")
def liu_cnn_compact(
    in_channels: int = 1,
    num_classes: int = 2,
    width: int = 1,
    input_size: int = 64,
    dropout: float = 0.5,
    norm: Norm = "batch",
    age_encoding: bool = False,
    head: Head = "mlp",
) -> nn.Module:
    """Liu et al. 2022 blocks with same-padding and batch norm, for small CPU inputs (not the paper's network)."""
    return LiuCNN3d(3, in_channels, num_classes, width, input_size, same_padding=True, dropout=dropout, norm=norm, age_encoding=age_encoding, head=head)
