"""Loading model weights from a file the user names; never from the network."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from alzmri.utils.errors import AlzmriError


def load_weights(model: nn.Module, path: str | Path, strict: bool = True) -> nn.Module:
    """Load a state dict from ``.safetensors`` or a torch file (``weights_only=True``) into ``model``."""
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
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise AlzmriError(f"weights in {path} do not fit the model: {first}") from None
    return model
