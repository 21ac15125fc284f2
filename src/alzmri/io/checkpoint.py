"""Reading alzmri checkpoints safely (``weights_only=True``: nothing is unpickled)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alzmri.utils.errors import AlzmriError, first_line

REQUIRED_HPARAMS = ("model_name", "model_kwargs", "classes", "preprocess")


def checkpoint_of(run: str | Path) -> Path:
    """The checkpoint behind ``run``: the file itself, or ``RUN/checkpoints/best-loss.ckpt`` of a run folder."""
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise AlzmriError(f"{run} is neither a run folder nor a model file")
    checkpoint = run / "checkpoints" / "best-loss.ckpt"
    if not checkpoint.is_file():
        raise AlzmriError(f"run folder {run} has no checkpoints/best-loss.ckpt (did training finish a validation epoch?)")
    return checkpoint


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The checkpoint's hyper-parameters and model weights.

    Returns:
        ``{"hparams": {...}, "state_dict": {...}}`` with the ``model.`` prefix stripped from
        the weights, so they load into the bare ``nn.Module``.

    Raises:
        AlzmriError: missing, unreadable, or not an alzmri classifier checkpoint.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise AlzmriError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise AlzmriError(f"checkpoint {path} is empty (0 bytes): it was not written completely or was truncated")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AlzmriError(f"cannot read checkpoint {path}: {first_line(exc)}") from None
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or any(k not in hparams for k in REQUIRED_HPARAMS):
        raise AlzmriError(f"{path} is not an alzmri classifier checkpoint (no model config inside)")
    if not isinstance(ckpt.get("state_dict"), dict):
        raise AlzmriError(f"{path} holds no model weights (no state_dict)")
    state = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    return {"hparams": hparams, "state_dict": state}


def write_checkpoint(path: str | Path, state_dict: dict[str, Any], hparams: dict[str, Any]) -> Path:
    """Write a classifier checkpoint in the layout ``alzmri train`` writes (what :func:`read_checkpoint` reads), atomically.

    ``state_dict``: the bare ``nn.Module``'s weights (the ``model.`` prefix is added);
    ``hparams``: at least :data:`REQUIRED_HPARAMS`.
    """
    import torch

    from alzmri.utils.atomic import atomic_path

    missing = [k for k in REQUIRED_HPARAMS if k not in hparams]
    if missing:
        raise AlzmriError(f"cannot write checkpoint {path}: hyper-parameters lack {', '.join(missing)}")
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"hyper_parameters": hparams, "state_dict": {f"model.{k}": v for k, v in state_dict.items()}}, tmp)
    return path
