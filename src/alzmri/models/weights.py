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
    load_state(model, state, f"weights in {path}", strict=strict)
    return notes


def state_mismatch(model: nn.Module, state: dict[str, Any], strict: bool = True) -> str | None:
    """Why ``state`` does not load into ``model`` (missing, unexpected, wrongly shaped keys), or None."""
    own = model.state_dict()
    problems = []
    shapes = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    if shapes:
        k, theirs, ours = shapes[0]
        more = f" (and {len(shapes) - 1} more)" if len(shapes) > 1 else ""
        problems.append(f"{k} has shape {list(theirs)} in the file but {list(ours)} in the model{more}")
    if strict:
        for label, keys in (("missing", [k for k in own if k not in state]), ("unexpected", [k for k in state if k not in own])):
            if keys:
                problems.append(f"{len(keys)} {label} keys ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    return "; ".join(problems) or None


def load_state(model: nn.Module, state: dict[str, Any], source: str, strict: bool = True) -> None:
    """``model.load_state_dict(state)``, or a one-line error naming the keys that do not fit.

    Raises:
        AlzmriError: e.g. ``weights in x.pt do not fit the model: head.weight has shape [3, 64]
            in the file but [2, 64] in the model``.
    """
    problem = state_mismatch(model, state, strict)
    if problem is None:
        try:
            model.load_state_dict(state, strict=strict)
        except RuntimeError as exc:  # e.g. a non-tensor value
            lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
            problem = " ".join(lines[1:2] or lines[:1])[:300]  # line 0 only says "Error(s) in loading state_dict"
    if problem is not None:
        raise AlzmriError(f"{source} do not fit the model {type(model).__name__}: {problem}")
