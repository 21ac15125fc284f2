"""Genetics + image fusion networks: token-level bidirectional cross-attention, concatenation, genetics only.

Tokens, not one embedding per modality: with a single key, softmax attention is a fixed linear
map (the weight is 1), which is what a well-cited peer attends over. Here

* **genetic tokens**: one per source column (an APOE ε4 count, a SNP, a one-hot block of a
  categorical column), each its features through its own linear map to ``width`` plus a learned
  column embedding; a participant without genetics gets a learned *missing* token in every slot;
* **image tokens**: the spatial feature map of any registered image model, taken from its
  Grad-CAM layer (the last spatial features, so every encoder in the registry works), projected
  to ``width`` with a learned position embedding, one token per feature-map cell.

Genetic tokens attend to image tokens and image tokens to genetic tokens
(``nn.MultiheadAttention``, both directions, residual + layer norm); each attended side is
mean-pooled and an MLP maps them, with the pooled image tokens and a genetic MLP's summary
(what the concatenation ablation sees), to logits: attention adds the cross-modal interactions
on top of the concatenation, and the ablation says whether they help. The last forward's attention weights are kept
(``last_attention``) for the pictures of which features attend to which regions.
"""

from __future__ import annotations

import torch
from torch import nn

from alzmri.models.registry import create_model, model_info
from alzmri.utils.errors import AlzmriError


class GeneticTokens(nn.Module):
    """One token per genetic column group, or the learned missing token where a participant has no genetics.

    Args:
        groups: number of features of each column group, in feature order.
        width: token width.
    """

    def __init__(self, groups: list[int], width: int) -> None:
        super().__init__()
        self.groups = [int(g) for g in groups]
        self.embed = nn.ModuleList(nn.Linear(g, width) for g in self.groups)
        self.column = nn.Parameter(torch.zeros(len(self.groups), width))
        self.missing = nn.Parameter(torch.zeros(len(self.groups), width))
        nn.init.normal_(self.column, std=0.02)
        nn.init.normal_(self.missing, std=0.02)

    def forward(self, genetics: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """``(N, F)`` features and ``(N,)`` presence → ``(N, T, width)`` tokens."""
        parts = torch.split(genetics, self.groups, dim=1)
        tokens = torch.stack([embed(part) for embed, part in zip(self.embed, parts, strict=True)], dim=1) + self.column
        return torch.where(present.view(-1, 1, 1).bool(), tokens, self.missing.expand_as(tokens))


class _Stop(Exception):
    """Raised by the feature hook: the rest of the encoder (its classifier head) is not run."""


def _drop_head(model: nn.Module, head: str) -> None:
    """Replace the classifier module ``head`` (a dotted name) with an identity."""
    parent, _, name = head.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, nn.Identity())


class ImageTokens(nn.Module):
    """The spatial feature map of a registered image model as ``(N, cells, width)`` tokens.

    Args:
        encoder: registry name of the image model.
        in_channels: image channels.
        input_size: image edge (fixes the number of cells for the position embedding).
        width: token width.
        layer: the encoder module whose output becomes the tokens (default: its Grad-CAM layer,
            the last spatial features); an earlier one gives more, finer cells (resnet10_3d's
            ``layer4`` is 1³ at a 32³ input, ``layer3`` 2³, ``layer2`` 4³). Modules after it
            never run.
    """

    def __init__(self, encoder: str, in_channels: int, input_size: int, width: int, layer: str | None = None) -> None:
        super().__init__()
        info = model_info(encoder)
        self.spatial_dims = info.spatial_dims
        self.encoder = encoder
        sized = {"input_size": input_size} if "input_size" in info.defaults else {}  # e.g. a ViT's patch grid
        self.model = create_model(encoder, in_channels=in_channels, num_classes=2, **sized)
        _drop_head(self.model, info.head)  # never run (the hook stops before it): no unused parameters under DDP
        self._features: torch.Tensor | None = None
        self._layer = layer or info.gradcam_layer
        names = [n for n, _ in self.model.named_modules() if n]
        if self._layer not in names:
            raise AlzmriError(f"encoder {encoder} has no module {self._layer!r}; its modules include {', '.join(n for n in names if '.' not in n)}")
        with torch.no_grad():
            was = self.model.training
            self.model.eval()
            channels, cells = self._map(torch.zeros(1, in_channels, *([input_size] * self.spatial_dims))).shape[1:]
            self.model.train(was)
        self.grid = self._grid  # the feature map's spatial shape (cells in C order), to map attention back onto the image
        self.project = nn.Linear(channels, width)
        self.position = nn.Parameter(torch.zeros(cells, width))
        nn.init.normal_(self.position, std=0.02)
        self.cells = cells

    def _keep(self, _module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        self._features = output
        raise _Stop

    def _map(self, images: torch.Tensor) -> torch.Tensor:
        # The hook keeps the feature map and stops there: the encoder's own head never runs. It is added for
        # this call only, after any hooks others put on the layer (Grad-CAM's), so theirs still see the output.
        handle = self.model.get_submodule(self._layer).register_forward_hook(self._keep)
        try:
            self.model(images)
        except _Stop:
            pass
        finally:
            handle.remove()
        features, self._features = self._features, None
        if features is None:
            raise RuntimeError("the image encoder's feature layer did not run")
        if features.dim() == 3:  # a transformer's (N, tokens, C): no grid to map back onto
            self._grid: tuple[int, ...] = (features.shape[1],)
            return features.transpose(1, 2)
        self._grid = tuple(features.shape[2:])
        return features.flatten(2)  # (N, C, cells)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images → ``(N, cells, width)``."""
        features = self._map(images)
        if features.shape[2] != self.cells:
            raise ValueError(f"the image gives {features.shape[2]} feature cells, the model was built for {self.cells}: use the input size it was built with")
        return self.project(features.transpose(1, 2)) + self.position


class WithFixedGenetics(nn.Module):
    """A fusion model seen as an image model for one participant: ``forward(images)`` with that participant's genetics.

    For attribution methods (Grad-CAM, occlusion...) that call ``model(images)``: the genetics
    (``(F,)`` features, presence flag) are repeated over the batch.
    """

    def __init__(self, fusion: nn.Module, genetics: torch.Tensor, present: bool) -> None:
        super().__init__()
        self.fusion = fusion
        self.register_buffer("genetics", torch.as_tensor(genetics, dtype=torch.float32).reshape(1, -1))
        self.register_buffer("present", torch.tensor([bool(present)]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        n = images.shape[0]
        return self.fusion(images, self.genetics.expand(n, -1), self.present.expand(n))


class CrossAttention(nn.Module):
    """Queries of one modality attend to the tokens of the other (residual, layer norm, feed-forward)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.feed = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.norm2 = nn.LayerNorm(width)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, Q, W)`` attending to ``(N, K, W)`` → updated queries and ``(N, heads, Q, K)`` weights."""
        attended, weights = self.attention(queries, keys, keys, need_weights=True, average_attn_weights=False)
        out = self.norm(queries + attended)
        return self.norm2(out + self.feed(out)), weights


def _with_presence(genetics: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Features zeroed where a participant has no genetics, and the presence flag as one more feature."""
    flag = present.view(-1, 1).float()
    return torch.cat([genetics * flag, flag], dim=1)


def _mlp(inputs: int, hidden: list[int], outputs: int, dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(inputs, size), nn.BatchNorm1d(size), nn.ReLU(), nn.Dropout(dropout)]
        inputs = size
    return nn.Sequential(*layers, nn.Linear(inputs, outputs))


class FusionXAttn(nn.Module):
    """Bidirectional token-level cross-attention between genetics and an image (see the module docstring).

    ``forward(images, genetics, present)``: ``(N, C, *S)`` images, ``(N, F)`` encoded genetics,
    ``(N,)`` whether each participant has genetics → ``(N, num_classes)`` logits.
    """

    def __init__(self, groups: list[int], encoder: str, in_channels: int = 1, num_classes: int = 2, input_size: int = 32,
                 width: int = 64, heads: int = 4, dropout: float = 0.1, feature_layer: str | None = None) -> None:
        super().__init__()
        self.genetic = GeneticTokens(groups, width)
        self.image = ImageTokens(encoder, in_channels, input_size, width, feature_layer)
        self.genetic_to_image = CrossAttention(width, heads, dropout)
        self.image_to_genetic = CrossAttention(width, heads, dropout)
        self.genetic_summary = _mlp(sum(groups) + 1, [128], width, dropout)  # + presence flag; as the concatenation's genetic branch
        self.head = nn.Sequential(nn.LayerNorm(4 * width), nn.Linear(4 * width, width), nn.GELU(), nn.Dropout(dropout), nn.Linear(width, num_classes))
        self.last_attention: dict[str, torch.Tensor] = {}

    def forward(self, images: torch.Tensor, genetics: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        g, i = self.genetic(genetics, present), self.image(images)
        g2, g_weights = self.genetic_to_image(g, i)  # genetic queries over image cells
        i2, i_weights = self.image_to_genetic(i, g)  # image queries over genetic columns
        self.last_attention = {"genetic_to_image": g_weights.detach(), "image_to_genetic": i_weights.detach()}
        # The head sees what the concatenation ablation sees (pooled image tokens, the genetic MLP's summary) and both
        # attended sides: attention adds the cross-modal terms on top.
        summary = self.genetic_summary(_with_presence(genetics, present))
        return self.head(torch.cat([i.mean(dim=1), summary, g2.mean(dim=1), i2.mean(dim=1)], dim=1))


class FusionConcat(nn.Module):
    """The ablation without attention: pooled image features and a genetics MLP, concatenated, then an MLP."""

    def __init__(self, groups: list[int], encoder: str, in_channels: int = 1, num_classes: int = 2, input_size: int = 32,
                 width: int = 64, dropout: float = 0.1, feature_layer: str | None = None) -> None:
        super().__init__()
        self.image = ImageTokens(encoder, in_channels, input_size, width, feature_layer)
        self.genetic = _mlp(sum(groups) + 1, [128], width, dropout)  # + presence flag
        self.head = _mlp(2 * width, [width], num_classes, dropout)

    def forward(self, images: torch.Tensor, genetics: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        g = self.genetic(_with_presence(genetics, present))
        return self.head(torch.cat([self.image(images).mean(dim=1), g], dim=1))


class GeneticsOnly(nn.Module):
    """The seed's genetic MLP (256 → 128 → 64, batch norm, dropout) to logits; the image is ignored."""

    def __init__(self, groups: list[int], num_classes: int = 2, dropout: float = 0.3) -> None:
        super().__init__()
        self.mlp = _mlp(sum(groups) + 1, [256, 128, 64], num_classes, dropout)

    def forward(self, images: torch.Tensor, genetics: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return self.mlp(_with_presence(genetics, present))
