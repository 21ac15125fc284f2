"""The run folder's three checkpoints, written so that any of them resumes exactly.

Lightning's ``ModelCheckpoint`` writes one file per callback instance, each at its own turn in
the callback order, so a file saved by the first instance holds the *previous* epoch's state of
the others (``last.ckpt`` knew the best-so-far scores of the epoch before, and a resume from it
could pick another ``best-acc.ckpt``). It also stores absolute paths and drops its best scores
when the folder was moved, so a relocated run re-saved ``best-loss.ckpt`` from its first resumed
epoch. :class:`RunCheckpoints` instead updates every best score first and then saves, so each
file holds the state *after* its epoch, and it stores file names relative to the run folder.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint

FILES = {"best_acc": "best-acc.ckpt", "best_loss": "best-loss.ckpt", "last": "last.ckpt"}
# monitored metric, and whether larger is better
_MONITORS = {"best_acc": ("val_acc", True), "best_loss": ("val_loss", False)}


class RunCheckpoints(Checkpoint):
    """``last.ckpt`` every epoch; ``best-acc.ckpt`` / ``best-loss.ckpt`` when val accuracy rises / val loss falls.

    A score counts only when strictly better than the best so far (the earliest epoch wins a
    tie) and finite. The best files are written before ``last.ckpt``, which is the commit point:
    a run killed in between re-runs that epoch from the previous ``last.ckpt`` and rewrites the
    same files.

    Args:
        ckpt_dir: the run's ``checkpoints`` folder.
    """

    def __init__(self, ckpt_dir: Path) -> None:
        self.dir = Path(ckpt_dir)
        self.best: dict[str, dict[str, float | int] | None] = {name: None for name in _MONITORS}

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        saves = []
        for name, (metric, larger) in _MONITORS.items():
            if metric not in metrics:
                continue
            value = float(metrics[metric])
            best = self.best[name]
            if math.isfinite(value) and (best is None or (value > best["score"] if larger else value < best["score"])):
                self.best[name] = {"score": value, "epoch": trainer.current_epoch}
                saves.append(name)
        for name in [*saves, "last"]:  # every process calls save_checkpoint; rank 0 writes
            trainer.save_checkpoint(self.dir / FILES[name])

    def summary(self) -> dict[str, Any]:
        """Best scores, their epochs and the checkpoint files (relative to the run folder)."""
        out: dict[str, Any] = {}
        for name, metric in (("best_acc", "best_val_acc"), ("best_loss", "best_val_loss")):
            best = self.best[name]
            out[metric] = None if best is None else best["score"]
            out[f"{metric}_epoch"] = None if best is None else best["epoch"]
        out["checkpoints"] = {
            name: f"{self.dir.name}/{file}" for name, file in FILES.items() if name == "last" or self.best.get(name) is not None
        }
        return out

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Take the best scores from a checkpoint made before this callback existed (three ``ModelCheckpoint`` callbacks)."""
        states = checkpoint.get("callbacks", {})
        if self.state_key in states:
            return  # load_state_dict restores ours
        for name, (metric, _) in _MONITORS.items():
            old = next((v for k, v in states.items() if k.startswith("ModelCheckpoint{") and f"'monitor': '{metric}'" in k), None)
            score = None if old is None else old.get("best_model_score")
            path = self.dir / FILES[name]
            if score is not None and path.is_file():
                epoch = torch.load(path, map_location="cpu", weights_only=True).get("epoch")
                self.best[name] = {"score": float(score), "epoch": int(epoch)}

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = {name: state_dict.get("best", {}).get(name) for name in _MONITORS}
