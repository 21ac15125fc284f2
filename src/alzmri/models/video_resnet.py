"""Video ResNets (Tran et al. 2018): R3D-18, MC3-18 and R(2+1)D-18 for single-channel volumes.

The modules and their attribute names follow torchvision's ``models.video`` layout
(``stem``, ``layer1``..``layer4``, ``fc``; blocks ``conv1``/``conv2``/``downsample``), so a
torchvision Kinetics-400 ``state_dict`` loads key for key. torchvision itself is not a
dependency: its wheels here are CUDA-linked and break torch imports (see README).

Pretrained RGB weights become a 1-channel stem by summing the first convolution's kernels over
the colour axis (a grey image fed to all three channels gives the same response), and the
400-class Kinetics head is replaced by a fresh one when ``num_classes`` differs. The first
spatial axis of the input plays the role of video time: MC3 and R(2+1)D treat it differently
from the other two axes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from alzmri.models.registry import register_model

_KINETICS_STEM = "stem.0.weight"


class Conv3DSimple(nn.Conv3d):
    """Full 3x3x3 convolution."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None, stride: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)

    @staticmethod
    def downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


class Conv3DNoTemporal(nn.Conv3d):
    """1x3x3 convolution: no mixing along the first ("time") axis."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int | None = None, stride: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=(1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)

    @staticmethod
    def downsample_stride(stride: int) -> tuple[int, int, int]:
        return 1, stride, stride


class Conv2Plus1D(nn.Sequential):
    """A 1x3x3 "spatial" convolution then a 3x1x1 "temporal" one, with ``midplanes`` between."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv3d(in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(midplanes),
            nn.ReLU(inplace=True),
            nn.Conv3d(midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
        )

    @staticmethod
    def downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


ConvBuilder = type[Conv3DSimple] | type[Conv3DNoTemporal] | type[Conv2Plus1D]


class BasicBlock(nn.Module):
    """Two convolutions with a residual connection."""

    def __init__(self, inplanes: int, planes: int, conv: ConvBuilder, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        # Parameter count of a full 3x3x3 conv, matched by the (2+1)D factorisation.
        midplanes = (inplanes * planes * 27) // (inplanes * 9 + 3 * planes)
        self.conv1 = nn.Sequential(conv(inplanes, planes, midplanes, stride), nn.BatchNorm3d(planes), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv(planes, planes, midplanes), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + residual)


def basic_stem(in_channels: int) -> nn.Sequential:
    """3x7x7 convolution, stride (1, 2, 2)."""
    return nn.Sequential(
        nn.Conv3d(in_channels, 64, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
        nn.BatchNorm3d(64),
        nn.ReLU(inplace=True),
    )


def r2plus1d_stem(in_channels: int) -> nn.Sequential:
    """1x7x7 then 3x1x1 convolutions (45 channels between)."""
    return nn.Sequential(
        nn.Conv3d(in_channels, 45, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(45),
        nn.ReLU(inplace=True),
        nn.Conv3d(45, 64, kernel_size=(3, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(64),
        nn.ReLU(inplace=True),
    )


class VideoResNet3d(nn.Module):
    """An 18-layer video ResNet on ``(N, C, D, H, W)`` volumes.

    Args:
        convs: the convolution type of each of the four stages.
        stem: builds the stem from the number of input channels.
        in_channels: input channels (1 for a T1w volume).
        num_classes: output logits.
        dropout: dropout before the classifier.
    """

    def __init__(self, convs: tuple[ConvBuilder, ...], stem: Any, in_channels: int = 1, num_classes: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = stem(in_channels)
        inplanes = 64
        for index, (conv, planes) in enumerate(zip(convs, (64, 128, 256, 512), strict=True)):
            stride = 1 if index == 0 else 2
            downsample = None
            if stride != 1 or inplanes != planes:
                downsample = nn.Sequential(
                    nn.Conv3d(inplanes, planes, kernel_size=1, stride=conv.downsample_stride(stride), bias=False), nn.BatchNorm3d(planes)
                )
            blocks = [BasicBlock(inplanes, planes, conv, stride, downsample), BasicBlock(planes, planes, conv)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(512, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, D, H, W)`` volumes to ``(N, num_classes)`` logits."""
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def adapt_kinetics_weights(state: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Fit a torchvision video ResNet state dict to ``model``.

    The stem's RGB kernels are summed to the model's single input channel, and a classifier
    whose shape differs (Kinetics' 400 classes) is left out so the model keeps its new head.

    Returns:
        The adapted state dict and notes on what was changed (for the user).
    """
    own = model.state_dict()
    state = dict(state)
    notes = []
    stem = state.get(_KINETICS_STEM)
    if stem is not None and stem.shape[1] != own[_KINETICS_STEM].shape[1] and own[_KINETICS_STEM].shape[1] == 1:
        state[_KINETICS_STEM] = stem.sum(dim=1, keepdim=True)
        notes.append(f"stem: {stem.shape[1]}-channel kernels summed to 1 channel")
    head = state.get("fc.weight")
    if head is not None and head.shape != own["fc.weight"].shape:
        state.pop("fc.weight")
        state.pop("fc.bias", None)
        notes.append(f"classifier: new {own['fc.weight'].shape[0]}-class head (the file's has {head.shape[0]} classes)")
    return state, notes


@register_model(min_input_size=16, default_input_size=128, gradcam_layer="layer4", head="fc", adapt_weights=adapt_kinetics_weights)
def r3d_18(in_channels: int = 1, num_classes: int = 2, dropout: float = 0.0) -> nn.Module:
    """R3D-18 video ResNet (full 3D convolutions); loads torchvision Kinetics-400 weights."""
    return VideoResNet3d((Conv3DSimple,) * 4, basic_stem, in_channels, num_classes, dropout)


@register_model(min_input_size=16, default_input_size=128, gradcam_layer="layer4", head="fc", adapt_weights=adapt_kinetics_weights)
def mc3_18(in_channels: int = 1, num_classes: int = 2, dropout: float = 0.0) -> nn.Module:
    """MC3-18 video ResNet (3D convs in stage 1, 2D after); loads torchvision Kinetics-400 weights."""
    return VideoResNet3d((Conv3DSimple,) + (Conv3DNoTemporal,) * 3, basic_stem, in_channels, num_classes, dropout)


@register_model(min_input_size=16, default_input_size=128, gradcam_layer="layer4", head="fc", adapt_weights=adapt_kinetics_weights)
def r2plus1d_18(in_channels: int = 1, num_classes: int = 2, dropout: float = 0.0) -> nn.Module:
    """R(2+1)D-18 video ResNet (factorised convs); loads torchvision Kinetics-400 weights."""
    return VideoResNet3d((Conv2Plus1D,) * 4, r2plus1d_stem, in_channels, num_classes, dropout)
