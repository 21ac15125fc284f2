"""Loading model weights from a file the user names; never from the network."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alzmri.utils.errors import AlzmriError


def load_weights(
    model: nn.Module,
    path: str | Path,
    strict: bool = True,
    adapt: Callable[[dict[str, Any], nn.Module], tuple[dict[str, Any], list[str]]] | None = None,
) -> list[str]:
    """Load a state dict from ``.safetensors`` or a torch file (``weights_only=True``) into ``model``.

    Args:
        model: the freshly built model.
        path: the weights file the user named.
        strict: refuse missing or unexpected keys (after ``adapt``).
        adapt: the model's hook that fits a foreign checkpoint (e.g. RGB stem, other head).

    Returns:
        Notes on what ``adapt`` changed (empty when nothing).
    """
    path = Path(path)
    if not path.is_file():
        raise AlzmriError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
    except Exception as exc:  # corrupt or foreign file: one clear line
        raise AlzmriError(f"cannot read weights from {path}: {exc}") from None
    notes: list[str] = []
    if adapt is not None:
        state, notes = adapt(state, model)
        # Keys the hook left out on purpose (a new classifier) keep their fresh values.
        own = model.state_dict()
        state = {**{k: v for k, v in own.items() if k not in state}, **state}
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        first = " ".join(lines[1:2] or lines[:1])[:300]  # line 0 only says "Error(s) in loading state_dict"
        raise AlzmriError(f"weights in {path} do not fit the model: {first}") from None
    return notes
