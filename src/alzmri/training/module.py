"""The LightningModule around ``create_model``: class-weighted cross-entropy and validation metrics."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from alzmri.models import create_model


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
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(model_name, **model_kwargs)
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.loss = nn.CrossEntropyLoss(weight=weight)
        n = len(classes)
        self.val_acc = MulticlassAccuracy(num_classes=n, average="micro")
        self.val_bacc = MulticlassAccuracy(num_classes=n, average="macro")  # mean per-class recall

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(y))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", self.loss(logits, y), on_step=False, on_epoch=True, batch_size=len(y))
        self.val_acc.update(logits, y)
        self.val_bacc.update(logits, y)
        self.log("val_acc", self.val_acc, on_step=False, on_epoch=True)
        self.log("val_bacc", self.val_bacc, on_step=False, on_epoch=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        opt = torch.optim.AdamW if self.hparams.optimizer == "adamw" else torch.optim.Adam
        return opt(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
