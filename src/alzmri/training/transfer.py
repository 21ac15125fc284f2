"""Transfer-learning controls: freezing, differential learning rates, frozen batch-norm statistics."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

from torch import nn

from alzmri.utils.errors import AlzmriError


def freeze(model: nn.Module, until: str | None = None, patterns: Sequence[str] = ()) -> list[str]:
    """Stop gradients for part of ``model``.

    Args:
        model: the network.
        until: freeze every top-level child module up to and including this one, in the order
            the model defines them (e.g. ``layer3`` freezes ``stem``, ``layer1``..``layer3``).
        patterns: shell-style patterns of parameter names to freeze too (e.g. ``stem.*``).

    Returns:
        The frozen parameter names.

    Raises:
        AlzmriError: ``until`` is not a top-level module, or a pattern matches nothing.
    """
    names: set[str] = set()
    if until:
        children = [name for name, _ in model.named_children()]
        if until not in children:
            raise AlzmriError(f"--freeze-until {until!r} is not a top-level module of the model; choose one of {', '.join(children)}")
        for name in children[: children.index(until) + 1]:
            names |= {f"{name}.{p}" for p, _ in getattr(model, name).named_parameters()}
    all_names = [n for n, _ in model.named_parameters()]
    for pattern in patterns:
        matched = fnmatch.filter(all_names, pattern)
        if not matched:
            raise AlzmriError(f"--freeze pattern {pattern!r} matches no parameter (names look like {all_names[0]})")
        names |= set(matched)
    for name, param in model.named_parameters():
        if name in names:
            param.requires_grad_(False)
    return [n for n in all_names if n in names]


def parameter_groups(model: nn.Module, head: str, lr: float, head_lr_mult: float, weight_decay: float) -> list[dict[str, Any]]:
    """Optimiser groups: trainable backbone parameters at ``lr``, the ``head`` module at ``lr * head_lr_mult``.

    Raises:
        AlzmriError: nothing is left to train.
    """
    backbone, top = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (top if name == head or name.startswith(head + ".") else backbone).append(param)
    if not backbone and not top:
        raise AlzmriError("every parameter is frozen: nothing to train (check --freeze-until / --freeze)")
    groups = []
    if backbone:
        groups.append({"params": backbone, "lr": lr, "weight_decay": weight_decay, "name": "backbone", "lr_mult": 1.0})
    if top:
        groups.append({"params": top, "lr": lr * head_lr_mult, "weight_decay": weight_decay, "name": "head", "lr_mult": head_lr_mult})
    return groups


def keep_frozen_norms_in_eval(model: nn.Module) -> None:
    """Put batch norms whose parameters are all frozen in eval mode (call after ``model.train()``).

    A frozen layer whose running statistics keep moving is no longer the layer that was
    pretrained, and with small 3D batches those statistics are noisy.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()
