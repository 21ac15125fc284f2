"""2D classifiers for slices: EfficientNet-B4 and ResNet-18 (MONAI, ImageNet-loadable) and a small CNN.

* ``efficientnet_b4_2d``: MONAI's ``EfficientNetBN``, whose parameter names are those of
  lukemelas/efficientnet-pytorch except that MONAI groups the blocks by stage
  (``_blocks.<stage>.<block>`` for lukemelas' ``_blocks.<block>``); :func:`adapt_imagenet_weights`
  inserts the stage, so a lukemelas ImageNet file loads key for key.
* ``resnet18_2d``: MONAI's ``ResNet`` with a 7×7 stride-2 stem, max pooling, type-B (1×1 conv +
  batch norm, no bias) shortcuts: torchvision's ``resnet18`` layout, so its ImageNet state dict
  loads key for key.
* ``small_cnn_2d``: four conv–BN–ReLU–pool stages and global pooling (~0.1 M parameters at
  width 16): fast enough for CPU tests and the demo.

Gray slices (1 channel) use ImageNet's RGB stem by summing its kernels over the colour axis: a
gray image copied to R, G and B would give exactly that response, without tripling the input.
2.5D slices (3 channels: previous, slice, next) load the RGB stem as it is. A classifier whose
class count differs from the file's (ImageNet's 1,000) starts fresh. torchvision and timm are
not used: their wheels here are CUDA-linked (see README).
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from alzmri.models.monai_nets import DropoutLinear
from alzmri.models.registry import register_model
from alzmri.utils.errors import AlzmriError

_LUKEMELAS_BLOCK = re.compile(r"^_blocks\.(\d+)\.(.*)$")


def _stems(model: nn.Module) -> tuple[str, str]:
    """The names of the first convolution and of the classifier of a 2D model."""
    return ("_conv_stem.weight", "_fc") if hasattr(model, "_conv_stem") else ("conv1.weight", "fc")


def adapt_imagenet_weights(state: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Fit an ImageNet state dict (lukemelas EfficientNet or torchvision ResNet layout) to a 2D model.

    Strips a DataParallel ``module.`` prefix, maps lukemelas block keys to MONAI's staged ones,
    sums an RGB stem to one channel for gray input, and drops a classifier of another shape.

    Raises:
        AlzmriError: tensors of the network are missing from the file, or the file has others
            (another depth or architecture).
    """
    own = model.state_dict()
    notes: list[str] = []
    adapted = {k.removeprefix("module."): v for k, v in state.items()}
    if hasattr(model, "_blocks"):
        stage_of = {}
        for key in own:
            parts = key.split(".")
            if parts[0] == "_blocks":
                stage_of[parts[2]] = parts[1]
        mapped = 0
        renamed = {}
        for key, value in adapted.items():
            match = _LUKEMELAS_BLOCK.match(key)
            if match and key not in own and match.group(1) in stage_of:
                key = f"_blocks.{stage_of[match.group(1)]}.{match.group(1)}.{match.group(2)}"
                mapped += 1
            renamed[key] = value
        adapted = renamed
        if mapped:
            notes.append(f"mapped {mapped} lukemelas block keys to MONAI's stage layout")
    stem, head = _stems(model)
    if stem in adapted and adapted[stem].shape[1] != own[stem].shape[1]:
        if own[stem].shape[1] != 1:
            raise AlzmriError(f"the weights' first convolution takes {adapted[stem].shape[1]} channels, the model {own[stem].shape[1]}")
        channels = adapted[stem].shape[1]
        adapted[stem] = adapted[stem].sum(dim=1, keepdim=True)
        notes.append(f"stem: {channels}-channel ImageNet kernels summed to 1 gray channel")
    if f"{head}.weight" in adapted and adapted[f"{head}.weight"].shape != own[f"{head}.weight"].shape:
        notes.append(f"classifier: new {own[head + '.weight'].shape[0]}-class {head} (the file's has {adapted[head + '.weight'].shape[0]})")
        adapted.pop(f"{head}.weight")
        adapted.pop(f"{head}.bias", None)
    missing = [k for k in own if k not in adapted and not k.startswith(f"{head}.") and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in adapted if k not in own]
    if missing or unexpected:
        found = "; ".join(f"{what} {len(keys)} tensors (e.g. {keys[0]})" for what, keys in (("lacks", missing), ("has unknown", unexpected)) if keys)
        raise AlzmriError(f"the weights do not fit {type(model).__name__}: the file {found}; is it the same architecture?")
    return adapted, notes


@register_model(min_input_size=32, default_input_size=256, gradcam_layer="_conv_head", head="_fc", adapt_weights=adapt_imagenet_weights, spatial_dims=2)
def efficientnet_b4_2d(in_channels: int = 1, num_classes: int = 2, dropout: float = 0.4) -> nn.Module:
    """MONAI EfficientNet-B4 (2D, 17.6 M parameters); loads lukemelas ImageNet weights via a key map.

    Args:
        in_channels: 1 (gray slice) or 3 (2.5D).
        num_classes: output logits.
        dropout: dropout before the classifier (B4's own rate, 0.4).
    """
    from monai.networks.nets import EfficientNetBN

    model = EfficientNetBN("efficientnet-b4", pretrained=False, progress=False, spatial_dims=2, in_channels=in_channels, num_classes=num_classes)
    model._dropout = nn.Dropout(dropout)
    return model


@register_model(min_input_size=32, default_input_size=224, gradcam_layer="layer4", head="fc", adapt_weights=adapt_imagenet_weights, spatial_dims=2)
def resnet18_2d(in_channels: int = 1, num_classes: int = 2, dropout: float = 0.0) -> nn.Module:
    """MONAI ResNet-18 (2D) in torchvision's layout; loads torchvision ImageNet weights.

    Args:
        in_channels: 1 (gray slice) or 3 (2.5D).
        num_classes: output logits.
        dropout: dropout before the classifier.
    """
    from monai.networks.nets import ResNet

    model = ResNet(
        block="basic", layers=[2, 2, 2, 2], block_inplanes=[64, 128, 256, 512], spatial_dims=2, n_input_channels=in_channels,
        conv1_t_size=7, conv1_t_stride=2, no_max_pool=False, shortcut_type="B", bias_downsample=False, num_classes=num_classes,
    )  # fmt: skip
    model.fc = DropoutLinear(model.fc.in_features, num_classes, dropout)
    return model


class SmallCNN2d(nn.Module):
    """Four conv–BN–ReLU–max-pool stages (width w, 2w, 4w, 8w), global average pooling, dropout, linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, width: int = 16, dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for k in range(4):
            out = width * 2**k
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if k < 3:
                layers.append(nn.MaxPool2d(2))
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = DropoutLinear(channels, num_classes, dropout)

    def forward(self, x: torch.Tensor, *_: Any) -> torch.Tensor:
        """Map ``(N, C, H, W)`` slices to ``(N, num_classes)`` logits."""
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))


@register_model(min_input_size=16, default_input_size=128, gradcam_layer="features", head="head", spatial_dims=2)
def small_cnn_2d(in_channels: int = 1, num_classes: int = 2, width: int = 16, dropout: float = 0.3) -> nn.Module:
    """Small 2D CNN (4 conv stages, global pooling; 0.1 M parameters at width 16) for CPU runs and tests.

    Args:
        in_channels: 1 (gray slice) or 3 (2.5D).
        num_classes: output logits.
        width: channels of the first stage (doubling per stage).
        dropout: dropout before the classifier.
    """
    return SmallCNN2d(in_channels, num_classes, width, dropout)
