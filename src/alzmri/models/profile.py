"""What a model costs before it is trained: parameters, FLOPs and a training-memory estimate.

The model is built and run on PyTorch's ``meta`` device, which tracks shapes without
allocating or computing anything, so a 128³ transformer can be sized on a laptop in a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from alzmri.models.registry import create_model, model_info
from alzmri.utils.errors import AlzmriError

_BYTES = 4  # float32


@dataclass(frozen=True)
class ModelProfile:
    """Size and cost of one model at one input size.

    Attributes:
        parameters: number of parameters.
        forward_gflops: forward-pass GFLOPs per batch (2 x multiply-accumulates of convs and linears).
        activation_gb: memory of every module output in one forward pass, GB.
        train_gb: rough peak memory of one training step: parameters, gradients and two Adam
            moments, plus the activations kept for the backward pass (framework overhead and
            allocator slack not included).
    """

    parameters: int
    forward_gflops: float
    activation_gb: float
    train_gb: float


def profile_model(name: str, input_size: int, batch_size: int = 2, in_channels: int = 1, **kwargs: Any) -> ModelProfile:
    """Profile a registered model on a ``batch_size x in_channels x input_size³`` input (``input_size²`` for 2D models).

    Raises:
        AlzmriError: the input is smaller than the model accepts.
    """
    info = model_info(name)
    power = "²" if info.spatial_dims == 2 else "³"
    if input_size < info.min_input_size:
        raise AlzmriError(f"model {name} needs inputs of at least {info.min_input_size}{power}; got {input_size}{power}")
    if "input_size" in info.defaults:
        kwargs.setdefault("input_size", input_size)
    with torch.device("meta"):
        model = create_model(name, in_channels=in_channels, **kwargs)
    macs = 0
    activations = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
        nonlocal macs, activations
        if isinstance(output, torch.Tensor):
            if not getattr(module, "inplace", False):  # in-place ops reuse their input's memory
                activations += output.numel()
            if isinstance(module, nn.Conv3d | nn.Conv2d | nn.Conv1d):
                macs += output.numel() * module.in_channels // module.groups * int(torch.tensor(module.kernel_size).prod())
            elif isinstance(module, nn.Linear):
                macs += output.numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    with torch.no_grad():
        model.train()(torch.empty(batch_size, in_channels, *(input_size,) * info.spatial_dims, device="meta"))
    for handle in handles:
        handle.remove()
    parameters = sum(p.numel() for p in model.parameters())
    activation_bytes = activations * _BYTES
    train_bytes = parameters * _BYTES * 4 + activation_bytes
    return ModelProfile(parameters, 2.0 * macs / 1e9, activation_bytes / 1e9, train_bytes / 1e9)


def count_parameters_of(name: str, **kwargs: Any) -> int:
    """Parameter count of a registered model with its default settings (built on ``meta``)."""
    with torch.device("meta"):
        model = create_model(name, **kwargs)
    return sum(p.numel() for p in model.parameters())
