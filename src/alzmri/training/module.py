"""The LightningModule around ``create_model``: class-weighted cross-entropy and validation metrics."""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

import alzmri.fusion  # noqa: F401  (registers the fusion models)
from alzmri.models import create_model, model_info
from alzmri.training import transfer
from alzmri.training.phases import PhaseSchedule
from alzmri.utils.errors import AlzmriError


class NonFiniteLossError(AlzmriError):
    """The training loss became NaN or infinite; raised before the optimiser step uses it."""


class Classifier(pl.LightningModule):
    """Trains any registered model; its hyper-parameters make the checkpoint self-describing.

    Args:
        model_name: registry name.
        model_kwargs: builder arguments (``num_classes`` included).
        classes: class names, index order = logit order.
        class_weights: per-class loss weights (or None).
        optimizer: ``"adam"`` or ``"adamw"``.
        lr: learning rate.
        weight_decay: weight decay.
        preprocess: the PreprocessConfig (as a dict) the inputs were made with, so ``predict``
            can process a raw scan the same way.
        train_config: the resolved TrainConfig (as a JSON-able dict), for the record.
        freeze_until: freeze top-level modules up to this one (see ``transfer.freeze``).
        freeze: parameter-name patterns to freeze.
        head_lr_mult: learning-rate multiplier of the classifier head.
        warmup_epochs: linear warm-up epochs (from 10 % of ``lr``).
        training_data: ids and content hashes of the train and val scans
            (:func:`alzmri.data.provenance.training_record`), so scoring commands can tell
            which scans the model has seen.
        genetics: for a run with ``--genetics``: the table's path, whether its rows were
            shuffled (and the seed), the missing-genetics policy, the alignment counts and the
            fitted :class:`~alzmri.data.genetics.GeneticEncoder` as plain data
            (``GeneticEncoder.to_dict``), so scoring rebuilds the exact encoding.
    """

    def __init__(
        self,
        model_name: str,
        model_kwargs: dict[str, Any],
        classes: list[str],
        class_weights: list[float] | None,
        optimizer: str,
        lr: float,
        weight_decay: float,
        preprocess: dict[str, Any],
        train_config: dict[str, Any],
        freeze_until: str | None = None,
        freeze: list[str] | None = None,
        head_lr_mult: float = 1.0,
        warmup_epochs: int = 0,
        training_data: dict[str, Any] | None = None,
        genetics: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(model_name, **model_kwargs)
        self.frozen = transfer.freeze(self.model, freeze_until, freeze or ())
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.loss = nn.CrossEntropyLoss(weight=weight, label_smoothing=float(train_config.get("label_smoothing", 0.0)))
        n = len(classes)
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_bacc = MulticlassAccuracy(num_classes=n, average="macro")  # mean per-class recall
        self.val_confusion = MulticlassConfusionMatrix(num_classes=n)
        self.last_val_confusion: list[list[int]] | None = None  # of the latest validation epoch
        phases = train_config.get("phases")
        self.phase_schedule = (
            PhaseSchedule(phases, model_info(model_name).head, gamma=float(train_config.get("lr_gamma", 0.1)),
                          patience=max(1, int(train_config.get("patience", 10)) // 2))
            if phases else None
        )  # fmt: skip
        self._val_loss = [0.0, 0]  # sum and count over the epoch, for the phase's plateau schedule

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        return self.model(x, *extra)

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        x, y, *extra = batch  # extra: the ages, for models with an age input
        loss = self.loss(self(x, *extra), y)
        if not torch.isfinite(loss):
            # Stop before backward/step: a NaN gradient would silently ruin every weight.
            raise NonFiniteLossError(f"training loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step} (batch {batch_idx})")
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, y, *extra = batch
        logits = self(x, *extra)
        loss = self.loss(logits, y)
        self.log("val_loss", loss, on_step=False, on_epoch=True, batch_size=len(y), sync_dist=True)
        self._val_loss[0] += float(loss) * len(y)
        self._val_loss[1] += len(y)
        self.val_acc.update(logits, y)
        self.val_bacc.update(logits, y)
        self.log("val_acc", self.val_acc, on_step=False, on_epoch=True)
        self.log("val_bacc", self.val_bacc, on_step=False, on_epoch=True)
        self.val_confusion.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        self.last_val_confusion = self.val_confusion.compute().int().tolist()  # synced across DDP processes
        self.val_confusion.reset()
        total, count = self._val_loss
        self._val_loss = [0.0, 0]
        if self.phase_schedule is not None and count and not self.trainer.sanity_checking:
            self.phase_schedule.end_of_validation(total / count)

    def on_train_epoch_start(self) -> None:
        if self.phase_schedule is not None:
            optimizer = self.optimizers().optimizer
            # Lightning restores each module's own train/eval mode after validation, so norms frozen (eval) in an
            # earlier phase would stay in eval: every epoch starts from train mode, then re-freezes what is frozen now.
            self.model.train()
            line = self.phase_schedule.start_epoch(self.model, optimizer, self.current_epoch)
            self.phase_schedule.epoch_lr = float(optimizer.param_groups[0]["lr"])
            if line and self.trainer.is_global_zero:
                print(line, flush=True)
        transfer.keep_frozen_norms_in_eval(self.model)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.phase_schedule is not None:
            checkpoint["phase_schedule"] = self.phase_schedule.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.phase_schedule is not None and checkpoint.get("phase_schedule"):
            self.phase_schedule.load_state_dict(checkpoint["phase_schedule"])

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if batch_idx:
            return
        # Dropout draws from the global generators; seeding them at each epoch's first step makes
        # epoch e depend only on (seed, e), so a resumed run continues exactly where it stopped.
        # (Not at epoch start: on resume Lightning draws from them between that hook and the first
        # step. Augmentation is seeded per scan by the dataset.)
        seed = int(self.hparams.train_config.get("seed", 0)) * 100_003 + self.current_epoch
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        if self.phase_schedule is not None:  # the optimiser holds every parameter; each phase decides which train
            for param in self.model.parameters():
                param.requires_grad_(True)
        groups = transfer.parameter_groups(self.model, model_info(hp.model_name).head, hp.lr, hp.head_lr_mult, hp.weight_decay)
        if hp.optimizer == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=0.9, nesterov=True, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.AdamW if hp.optimizer == "adamw" else torch.optim.Adam
            optimizer = opt(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        if self.phase_schedule is not None:
            return optimizer  # the phases set rates and step their schedulers themselves
        return build_schedule(optimizer, hp.train_config, hp.warmup_epochs)


def build_schedule(optimizer: torch.optim.Optimizer, settings: dict[str, Any], warmup_epochs: int) -> Any:
    """The optimiser plus its per-epoch schedule, in Lightning's ``configure_optimizers`` format."""
    from torch.optim import lr_scheduler

    kind = settings.get("scheduler", "none")
    gamma = float(settings.get("lr_gamma", 0.1))
    if kind == "plateau":
        plateau = lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=gamma, patience=max(1, int(settings.get("patience", 10)) // 2))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": "val_loss", "interval": "epoch"}}
    main: lr_scheduler.LRScheduler | None = None
    if kind == "cosine":
        main = lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=int(settings.get("cosine_t0", 5)), T_mult=2)
    elif kind == "multistep":
        milestones = [m - warmup_epochs for m in settings.get("milestones", [30, 60]) if m > warmup_epochs]
        main = lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)
    if warmup_epochs:
        warmup = lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warmup_epochs)
        main = warmup if main is None else lr_scheduler.SequentialLR(optimizer, [warmup, main], milestones=[warmup_epochs])
    if main is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": main, "interval": "epoch"}}
