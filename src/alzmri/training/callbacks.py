"""Callbacks that write the run folder (metrics per epoch, curves), stop early, keep the best confusion matrix."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd

from alzmri.utils.atomic import atomic_path

METRICS = ("train_loss", "val_loss", "val_acc", "val_bacc")


class EpochMetricsWriter(pl.Callback):
    """Keep one row per finished epoch, rewrite ``metrics.csv`` (atomically) from them.

    The rows are part of the callback state, so every checkpoint carries the table up to its
    epoch: a resumed (or moved) run writes exactly the rows an uninterrupted run would.

    Args:
        run_dir: the run folder.
        echo: also print one line per epoch (readable in logs, unlike a progress bar).
    """

    def __init__(self, run_dir: Path, echo: bool = False) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self.echo = echo
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch}
        row.update({k: float(m[k]) if k in m else math.nan for k in METRICS})
        schedule = getattr(pl_module, "phase_schedule", None)
        if schedule is not None:  # multi-phase runs: which phase, at which (backbone) learning rate
            row["phase"] = (schedule.current or 0) + 1
            row["lr"] = schedule.epoch_lr
        self.rows = [r for r in self.rows if r["epoch"] < trainer.current_epoch] + [row]
        if not trainer.is_global_zero:
            return
        self.write()
        if self.echo:
            print(
                f"epoch {row['epoch']:3d}/{trainer.max_epochs}  train loss {row['train_loss']:.4f}  val loss {row['val_loss']:.4f}  "
                f"val acc {row['val_acc']:.3f}  val bal. acc {row['val_bacc']:.3f}",
                flush=True,
            )

    def write(self) -> pd.DataFrame:
        """Write ``metrics.csv`` and ``curves.png`` from the rows; return the table."""
        extra = [c for c in ("phase", "lr") if any(c in r for r in self.rows)]
        table = pd.DataFrame(self.rows, columns=["epoch", *METRICS, *extra])
        with atomic_path(self.path) as tmp:
            table.to_csv(tmp, index=False)
        if not table.empty:
            plot_curves(table, self.path.with_name("curves.png"))
        return table

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Take the rows of a checkpoint made before the rows were kept in it from ``metrics.csv``."""
        if self.state_key not in checkpoint.get("callbacks", {}) and self.path.is_file():
            table = pd.read_csv(self.path)
            self.rows = table[table["epoch"] <= int(checkpoint.get("epoch", -1))].to_dict("records")

    def state_dict(self) -> dict[str, list[dict[str, float]]]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, list[dict[str, float]]]) -> None:
        self.rows = list(state_dict.get("rows", []))


def plot_curves(table: pd.DataFrame, path: Path) -> None:
    """Loss and validation accuracy against epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for col in ("train_loss", "val_loss"):
        ax_loss.plot(table["epoch"], table[col], marker="o", ms=3, label=col)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    ax_loss.legend()
    for col in ("val_acc", "val_bacc"):
        ax_acc.plot(table["epoch"], table[col], marker="o", ms=3, label=col)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1.02), title="Validation")
    ax_acc.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


class EarlyStoppingOnLossOrAccuracy(pl.Callback):
    """Stop when neither validation loss nor validation accuracy improved for ``patience`` epochs.

    Two counters: one since the loss last fell, one since the accuracy last rose. Training goes on
    while either is within ``patience`` (accuracy often keeps improving while the loss plateaus).
    With ``--phases`` the counters restart at each phase and only the last phase can stop early.

    Args:
        patience: epochs without improvement of both metrics before stopping.
        min_delta: smallest change that counts as an improvement.
    """

    def __init__(self, patience: int = 10, min_delta: float = 0.0) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best_loss = math.inf
        self.best_acc = -math.inf
        self.since_loss = 0
        self.since_acc = 0
        self.stopped = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.stopped:  # resumed from the checkpoint of the epoch that stopped the run
            trainer.should_stop = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        schedule = getattr(pl_module, "phase_schedule", None)
        if schedule is not None and trainer.current_epoch in schedule.starts:
            # A new phase (e.g. unfreezing after head-only training) gets its own patience; the best scores stay.
            self.since_loss = self.since_acc = 0

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if "val_loss" not in metrics or "val_acc" not in metrics:
            return
        loss, acc = float(metrics["val_loss"]), float(metrics["val_acc"])
        if loss < self.best_loss - self.min_delta:
            self.best_loss, self.since_loss = loss, 0
        else:
            self.since_loss += 1
        if acc > self.best_acc + self.min_delta:
            self.best_acc, self.since_acc = acc, 0
        else:
            self.since_acc += 1
        schedule = getattr(pl_module, "phase_schedule", None)
        if schedule is not None and schedule.phase_of(trainer.current_epoch) < len(schedule.phases) - 1:
            return  # an earlier phase always runs to its end: stopping there would skip the later phases
        if self.since_loss >= self.patience and self.since_acc >= self.patience:
            trainer.should_stop = self.stopped = True

    def state_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("best_loss", "best_acc", "since_loss", "since_acc", "stopped")}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        for key, value in state_dict.items():
            setattr(self, key, value)


class BestValidationConfusion(pl.Callback):
    """Keep the validation confusion matrix of the epoch with the lowest validation loss.

    The epoch is the one ``best-loss.ckpt`` holds; at the end of training the matrix is drawn
    to ``RUN/confusion_matrix_val.png`` (:meth:`draw`, by rank 0) for the trackers. Its state is checkpointed,
    so a resumed run keeps the best epoch seen before the interruption.

    Args:
        run_dir: the run folder.
        classes: class names in logit order.
    """

    def __init__(self, run_dir: Path, classes: list[str]) -> None:
        self.path = Path(run_dir) / "confusion_matrix_val.png"
        self.classes = classes
        self.best_loss = math.inf
        self.epoch = -1
        self.matrix: list[list[int]] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or "val_loss" not in trainer.callback_metrics:
            return
        loss = float(trainer.callback_metrics["val_loss"])
        if loss < self.best_loss and getattr(pl_module, "last_val_confusion", None) is not None:
            self.best_loss, self.epoch, self.matrix = loss, trainer.current_epoch, pl_module.last_val_confusion

    def draw(self) -> Path | None:
        """Draw the kept matrix to ``confusion_matrix_val.png``; None when no epoch was validated."""
        if self.matrix is None:
            return None
        from alzmri.utils.figures import plot_confusion_matrix

        n = sum(map(sum, self.matrix))
        plot_confusion_matrix(self.matrix, self.classes, self.path, f"validation, epoch {self.epoch} (lowest val loss), {n} scans")
        return self.path

    def state_dict(self) -> dict[str, object]:
        return {"best_loss": self.best_loss, "epoch": self.epoch, "matrix": self.matrix}

    def load_state_dict(self, state_dict: dict[str, object]) -> None:
        for key, value in state_dict.items():
            setattr(self, key, value)
