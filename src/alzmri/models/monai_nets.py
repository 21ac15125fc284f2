"""MONAI 3D classifiers: DenseNet-121, MedicalNet-layout ResNets and a ViT.

MONAI is imported inside the builders (it takes seconds to import), so importing the model
zoo stays as fast as importing torch. MONAI's ``pretrained=`` options download weights;
they are never used here — pretrained weights come only from a file the user names.

* ``densenet121_3d``: MONAI ``DenseNet121`` with ``spatial_dims=3``.
* ``resnet10_3d`` .. ``resnet50_3d``: MONAI ``ResNet`` laid out like MedicalNet (Chen et al.
  2019, "Med3D: Transfer Learning for 3D Medical Image Analysis"): a 7³ stride-2 first
  convolution, type-A (parameter-free, zero-padded) shortcuts for ResNet-18/34 and type-B
  (1³ convolution without bias, then batch norm) shortcuts for ResNet-10/50, as MedicalNet
  trained them. A MedicalNet ``.pth`` file therefore loads key for key (after the
  ``module.`` prefix is stripped and the segmentation head dropped). One difference remains:
  MedicalNet's segmentation backbone runs ``layer3``/``layer4`` with stride 1 and dilation 2/4,
  while this classifier uses stride 2 and no dilation (the kernels have the same shapes).
* ``vit3d``: MONAI ``ViT`` with a classification token; the builder's wrapper returns only
  the logits (MONAI's ViT also returns every block's hidden states).

The classifiers end in :class:`DropoutLinear`, so ``dropout`` means dropout on the pooled
features just before the last linear layer, as for the other registered models, while the
parameter names stay those of MONAI (``fc.weight``, ``class_layers.out.weight`` ...).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from alzmri.models.registry import register_model
from alzmri.utils.errors import AlzmriError

_INPLANES = [64, 128, 256, 512]


class DropoutLinear(nn.Linear):
    """A linear layer that applies dropout to its input first.

    Unlike ``nn.Sequential(nn.Dropout(p), nn.Linear(...))`` it keeps the parameter names of
    the plain linear layer it replaces and stays a leaf module (FLOP counting sees it).

    Args:
        in_features: input features.
        out_features: output features.
        dropout: probability of zeroing an input feature while training.
    """

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0) -> None:
        super().__init__(in_features, out_features)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        self.dropout = dropout
        nn.init.zeros_(self.bias)  # as MONAI initialises its classifiers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.dropout(x, self.dropout, self.training))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout={self.dropout}"


# ----------------------------------------------------------------------------------------------
# DenseNet-121


@register_model(min_input_size=32, default_input_size=128, gradcam_layer="features.norm5", head="class_layers")
def densenet121_3d(in_channels: int = 1, num_classes: int = 2, dropout: float = 0.0, dense_dropout: float = 0.0) -> nn.Module:
    """MONAI DenseNet-121 (3D; growth 32, dense blocks 6/12/24/16, no pretrained weights).

    Args:
        in_channels: input channels (1 for a T1w volume).
        num_classes: output logits.
        dropout: dropout on the pooled features before the classifier.
        dense_dropout: MONAI's ``dropout_prob``: dropout after every dense layer.
    """
    from monai.networks.nets import DenseNet121

    model = DenseNet121(spatial_dims=3, in_channels=in_channels, out_channels=num_classes, dropout_prob=dense_dropout)
    out = model.class_layers.out
    model.class_layers.out = DropoutLinear(out.in_features, out.out_features, dropout)
    return model


# ----------------------------------------------------------------------------------------------
# ResNets in MedicalNet layout

# depth: (block, blocks per stage, shortcut type) as MedicalNet trained them.
_MEDICALNET = {
    10: ("basic", [1, 1, 1, 1], "B"),
    18: ("basic", [2, 2, 2, 2], "A"),
    34: ("basic", [3, 4, 6, 3], "A"),
    50: ("bottleneck", [3, 4, 6, 3], "B"),
}


def medicalnet_resnet(depth: int, in_channels: int = 1, num_classes: int = 2, dropout: float = 0.0) -> nn.Module:
    """A MONAI 3D ResNet with MedicalNet's layout (see the module docstring).

    Args:
        depth: 10, 18, 34 or 50.
        in_channels: input channels (1 for a T1w volume, as MedicalNet).
        num_classes: output logits.
        dropout: dropout on the pooled features before ``fc``.
    """
    from monai.networks.nets import ResNet

    if depth not in _MEDICALNET:
        raise ValueError(f"no MedicalNet ResNet of depth {depth}; choose one of {', '.join(map(str, _MEDICALNET))}")
    block, layers, shortcut = _MEDICALNET[depth]
    model = ResNet(
        block=block,
        layers=layers,
        block_inplanes=_INPLANES,
        spatial_dims=3,
        n_input_channels=in_channels,
        conv1_t_size=7,
        conv1_t_stride=2,
        no_max_pool=False,
        shortcut_type=shortcut,
        widen_factor=1.0,
        num_classes=num_classes,
        feed_forward=True,
        bias_downsample=False,  # MedicalNet's type-B shortcut convolutions have no bias
    )
    model.fc = DropoutLinear(model.fc.in_features, num_classes, dropout)
    return model


def adapt_medicalnet_weights(state: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Fit a MedicalNet checkpoint (or a plain state dict of the same ResNet) to ``model``.

    Strips the ``module.`` prefix DataParallel left, drops the segmentation head
    (``conv_seg.*``) and a classifier ``fc.*`` whose shape differs from the model's; the
    model's classifier then keeps its fresh values.

    Returns:
        The adapted state dict and notes on what was changed (for the user).

    Raises:
        AlzmriError: the file's backbone is not this network's (other depth or shortcut type).
    """
    own = model.state_dict()
    notes: list[str] = []
    prefixed = sum(key.startswith("module.") for key in state)
    adapted = {key.removeprefix("module."): value for key, value in state.items()}
    if prefixed:
        notes.append(f"stripped the DataParallel 'module.' prefix from {prefixed} keys")
    head = [key for key in adapted if key.startswith("fc.")]
    if "fc.weight" in adapted and adapted["fc.weight"].shape != own["fc.weight"].shape:
        notes.append(f"classifier: new {own['fc.weight'].shape[0]}-class fc (the file's has {adapted['fc.weight'].shape[0]} classes)")
        for key in head:
            adapted.pop(key)
    seg = [key for key in adapted if key.startswith("conv_seg.")]
    for key in seg:
        adapted.pop(key)
    fresh = "" if "fc.weight" in adapted or head else "; the classifier fc starts fresh"
    if seg:
        notes.append(f"dropped {len(seg)} segmentation-head tensors (conv_seg.*){fresh}")
    elif fresh:
        notes.append("the file has no classifier; fc starts fresh")
    # Keys left out are filled with the model's fresh values, so a backbone tensor missing from
    # the file would silently stay random: refuse instead. (Old files lack num_batches_tracked.)
    missing = [k for k in own if k not in adapted and not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in adapted if k not in own]
    if missing or unexpected:
        found = "; ".join(
            f"{what} {len(keys)} tensors (e.g. {keys[0]})" for what, keys in (("lacks", missing), ("has unknown", unexpected)) if keys
        )
        raise AlzmriError(
            f"the weights do not fit this ResNet: the file {found}. MedicalNet's resnet_10/resnet_50 files use "
            "type-B shortcuts and resnet_18/resnet_34 type-A: pick the model of the file's depth"
        )
    return adapted, notes


@register_model(min_input_size=16, default_input_size=128, gradcam_layer="layer4", head="fc", adapt_weights=adapt_medicalnet_weights)
def resnet10_3d(in_channels: int = 1, num_classes: int = 2, dropout: float = 0.0) -> nn.Module:
    """MONAI 3D ResNet-10 in MedicalNet layout (type-B shortcuts); loads MedicalNet resnet_10 weights."""
    return medicalnet_resnet(10, in_channels, num_classes, dropout)


@register_model(min_input_size=16, default_input_size=128, gradcam_layer="layer4", head="fc", adapt_weights=adapt_medicalnet_weights)
def resnet18_3d(in_channels: int = 1, num_classes: int = 2, dropout: float = 0.0) -> nn.Module:
    """MONAI 3D ResNet-18 in MedicalNet layout (type-A shortcuts); loads MedicalNet resnet_18 weights."""
    return medicalnet_resnet(18, in_channels, num_classes, dropout)


@register_model(min_input_size=16, default_input_size=128, gradcam_layer="layer4", head="fc", adapt_weights=adapt_medicalnet_weights)
def resnet34_3d(in_channels: int = 1, num_classes: int = 2, dropout: float = 0.0) -> nn.Module:
    """MONAI 3D ResNet-34 in MedicalNet layout (type-A shortcuts); loads MedicalNet resnet_34 weights."""
    return medicalnet_resnet(34, in_channels, num_classes, dropout)


@register_model(min_input_size=16, default_input_size=128, gradcam_layer="layer4", head="fc", adapt_weights=adapt_medicalnet_weights)
def resnet50_3d(in_channels: int = 1, num_classes: int = 2, dropout: float = 0.0) -> nn.Module:
    """MONAI 3D ResNet-50 in MedicalNet layout (bottlenecks, type-B shortcuts); loads MedicalNet resnet_50 weights."""
    return medicalnet_resnet(50, in_channels, num_classes, dropout)


# ----------------------------------------------------------------------------------------------
# Vision transformer


class ViTClassifier(nn.Module):
    """MONAI's ViT returning only the class logits.

    Args:
        vit: a MONAI ``ViT`` built with ``classification=True``.
        input_size: the cubic input edge the position embeddings were built for.
    """

    def __init__(self, vit: nn.Module, input_size: int) -> None:
        super().__init__()
        self.vit = vit
        self.input_size = input_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(N, C, S, S, S)`` volumes (``S = input_size``) to ``(N, num_classes)`` logits."""
        if tuple(x.shape[2:]) != (self.input_size,) * 3:
            raise ValueError(f"vit3d was built for {self.input_size}³ inputs; got {'x'.join(map(str, x.shape[2:]))}")
        logits, _hidden_states = self.vit(x)
        return logits


@register_model(min_input_size=16, default_input_size=128, gradcam_layer="vit.blocks.11.norm1", head="vit.classification_head")
def vit3d(
    in_channels: int = 1,
    num_classes: int = 2,
    input_size: int = 128,
    patch_size: int = 16,
    hidden_size: int = 768,
    mlp_dim: int = 3072,
    num_layers: int = 12,
    num_heads: int = 12,
    dropout: float = 0.0,
    transformer_dropout: float = 0.0,
) -> nn.Module:
    """MONAI 3D vision transformer (ViT-B/16 by default, class token, learnable position embeddings).

    Args:
        in_channels: input channels (1 for a T1w volume).
        num_classes: output logits.
        input_size: cubic input edge; fixes the number of patches (a multiple of ``patch_size``).
        patch_size: cubic patch edge.
        hidden_size: token width.
        mlp_dim: width of each block's MLP.
        num_layers: transformer blocks (Grad-CAM's default layer assumes 12).
        num_heads: attention heads (must divide ``hidden_size``).
        dropout: dropout on the class token before the classifier.
        transformer_dropout: MONAI's ``dropout_rate``: dropout in the patch embedding,
            attention and MLPs.
    """
    from monai.networks.nets import ViT

    if patch_size < 1 or input_size % patch_size != 0:
        raise AlzmriError(f"vit3d: input_size {input_size} must be a multiple of patch_size {patch_size}")
    vit = ViT(
        in_channels=in_channels,
        img_size=input_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        mlp_dim=mlp_dim,
        num_layers=num_layers,
        num_heads=num_heads,
        proj_type="conv",
        pos_embed_type="learnable",
        classification=True,
        num_classes=num_classes,
        dropout_rate=transformer_dropout,
        spatial_dims=3,
        post_activation=None,  # MONAI's default Tanh would squash the logits into [-1, 1]
    )
    vit.classification_head = DropoutLinear(hidden_size, num_classes, dropout)
    return ViTClassifier(vit, input_size)

