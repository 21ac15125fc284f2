"""A timm-style model registry: ``@register_model`` builders, ``create_model`` and ``list_models``.

Every builder returns a plain ``nn.Module`` that maps ``(N, C, D, H, W)`` volumes (or, for
models registered with ``spatial_dims=2``, ``(N, C, H, W)`` slices) to ``(N, num_classes)`` logits. Builders take keyword arguments only, so a checkpoint can store
``(name, kwargs)`` and rebuild the exact model.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from alzmri.utils.errors import AlzmriError


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model besides its builder.

    Args:
        name: registry name.
        builder: function returning the ``nn.Module``.
        min_input_size: smallest input edge (voxels or pixels) the architecture accepts.
        default_input_size: the input edge the architecture was designed for.
        description: one line for ``list_models``.
        defaults: the builder's keyword defaults.
        gradcam_layer: name of the module whose activations Grad-CAM uses by default.
        head: name of the classifier module (a new head trains at a higher learning rate).
        adapt_weights: ``(state_dict, model) -> (state_dict, notes)`` fitting a foreign
            checkpoint (e.g. RGB video weights) to the model before a strict load.
        spatial_dims: 3 for volumes, 2 for slices, 0 for the fusion models (their image
            encoder's, an ``encoder`` argument naming another registered model).
        inputs: ``"image"``, or ``"image+genetics"`` for the fusion models, whose
            ``forward(images, genetics, present)`` also takes encoded genetics and whether each
            participant has any (builders take ``groups``: features per genetic column).
    """

    name: str
    builder: Callable[..., nn.Module]
    min_input_size: int
    default_input_size: int
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    gradcam_layer: str = ""
    head: str = "head"
    adapt_weights: Callable[[dict[str, Any], nn.Module], tuple[dict[str, Any], list[str]]] | None = None
    spatial_dims: int = 3
    inputs: str = "image"

    @property
    def uses_genetics(self) -> bool:
        """Whether the model takes genetics besides the image."""
        return self.inputs == "image+genetics"


_REGISTRY: dict[str, ModelInfo] = {}


def register_model(
    *,
    min_input_size: int,
    default_input_size: int,
    gradcam_layer: str,
    head: str = "head",
    adapt_weights: Callable[[dict[str, Any], nn.Module], tuple[dict[str, Any], list[str]]] | None = None,
    spatial_dims: int = 3,
    inputs: str = "image",
) -> Callable:
    """Decorator that registers a builder under its function name (see :class:`ModelInfo`)."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = fn.__name__
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        defaults = {
            k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty
        }
        doc = (inspect.getdoc(fn) or "").splitlines()
        _REGISTRY[name] = ModelInfo(name, fn, min_input_size, default_input_size, doc[0] if doc else "", defaults, gradcam_layer, head, adapt_weights, spatial_dims, inputs)
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (e.g. ``"liu*"``), sorted."""
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def model_info(name: str) -> ModelInfo:
    """The registry entry for ``name``; AlzmriError naming the known models otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise AlzmriError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def create_model(name: str, pretrained: str | Path | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model.

    Args:
        name: registry name (see ``list_models()``).
        pretrained: optional path to a local weights file (``.safetensors`` or a torch state
            dict loaded with ``weights_only=True``). Nothing is ever downloaded.
        **kwargs: builder arguments (``in_channels``, ``num_classes``, ``width`` ...).
    """
    info = model_info(name)
    accepted = set(inspect.signature(info.builder).parameters)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise AlzmriError(f"model {name!r} does not take {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}")
    model = info.builder(**kwargs)
    if pretrained is not None:
        from alzmri.models.weights import load_weights

        load_weights(model, pretrained, adapt=info.adapt_weights)
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, frozen)`` parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen
