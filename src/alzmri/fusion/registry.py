"""The fusion networks in the model registry (``create_model("fusion_xattn", groups=..., encoder=...)``).

Registered with ``inputs="image+genetics"`` (their ``forward`` takes ``images, genetics,
present``) and ``spatial_dims=0``: a fusion model works on volumes or slices as its ``encoder``
(any registered image model) does. ``groups`` is the number of encoded features of each
genetic column (:attr:`alzmri.data.genetics.GeneticEncoder.groups`), filled in by training;
``fusion_dropout`` (attention and MLP dropout) is apart from train's ``--dropout`` (the image
models' head's, 0.5), set with ``--fusion-dropout``.
Importing :mod:`alzmri.fusion` registers them.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from alzmri.fusion.xattn import FusionConcat, FusionXAttn, GeneticsOnly
from alzmri.models.registry import register_model

DEFAULT_ENCODER = {3: "resnet10_3d", 2: "small_cnn_2d"}
_ONE_COLUMN = (1,)


@register_model(min_input_size=16, default_input_size=64, gradcam_layer="", head="head", spatial_dims=0, inputs="image+genetics")
def fusion_xattn(groups: Sequence[int] = _ONE_COLUMN, encoder: str = "resnet10_3d", in_channels: int = 1, num_classes: int = 2, input_size: int = 32,
                 token_width: int = 64, heads: int = 4, fusion_dropout: float = 0.1, feature_layer: str | None = None) -> nn.Module:
    """Genetic-column tokens and image feature-map tokens attending to each other both ways (nn.MultiheadAttention)."""
    return FusionXAttn(list(groups), encoder, in_channels, num_classes, input_size, token_width, heads, fusion_dropout, feature_layer)


@register_model(min_input_size=16, default_input_size=64, gradcam_layer="", head="head", spatial_dims=0, inputs="image+genetics")
def fusion_concat(groups: Sequence[int] = _ONE_COLUMN, encoder: str = "resnet10_3d", in_channels: int = 1, num_classes: int = 2, input_size: int = 32,
                  token_width: int = 64, fusion_dropout: float = 0.1, feature_layer: str | None = None) -> nn.Module:
    """Ablation: pooled image features concatenated with a genetics MLP, no attention."""
    return FusionConcat(list(groups), encoder, in_channels, num_classes, input_size, token_width, fusion_dropout, feature_layer)


@register_model(min_input_size=1, default_input_size=32, gradcam_layer="", head="mlp", spatial_dims=0, inputs="image+genetics")
def genetics_only(groups: Sequence[int] = _ONE_COLUMN, num_classes: int = 2, fusion_dropout: float = 0.3) -> nn.Module:
    """Ablation: the genetic MLP 256 → 128 → 64 (batch norm, dropout) alone; the image is ignored."""
    return GeneticsOnly(list(groups), num_classes, fusion_dropout)
