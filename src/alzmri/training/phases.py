"""Multi-phase fine-tuning inside one Lightning run: per-phase freezing, learning rate and schedule.

The classic two-phase recipe (head only at 1e-3 with the backbone frozen, then everything at
1e-5 with reduce-on-plateau) as one run: one optimiser holds every parameter from the start
(frozen ones have no gradient, so Adam(W) leaves them and their state alone), and at the first
epoch of each phase :class:`PhaseSchedule` sets which parameters train, sets each group's
learning rate to the phase's (times the group's head multiplier) and makes the phase's
scheduler. Reduce-on-plateau is PyTorch's, stepped on the validation loss at the end of each
validation, its state saved in the checkpoint; cosine annealing (to 0 over the phase) is set at
the start of each epoch from its closed form, so it has no state. Either way a run resumed inside
a phase continues that phase's schedule exactly (a test compares it with an uninterrupted run).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from alzmri.models.registry import count_parameters
from alzmri.training import transfer


class PhaseSchedule:
    """Applies the phases of ``TrainConfig.phases`` to a model and its optimiser.

    Args:
        phases: the phases as dicts (``epochs``, ``lr``, ``train``, ``freeze_until``, ``scheduler``).
        head: the model's classifier module name (``train="head"`` trains only it).
        gamma: factor of the plateau schedule.
        patience: epochs without a lower validation loss before the plateau schedule lowers the rate.
    """

    def __init__(self, phases: list[dict[str, Any]], head: str, gamma: float = 0.1, patience: int = 2) -> None:
        self.phases = phases
        self.head = head
        self.gamma = gamma
        self.patience = patience
        self.starts = [sum(p["epochs"] for p in phases[:k]) for k in range(len(phases))]
        self.current: int | None = None
        self.scheduler: Any = None
        self._saved: dict[str, Any] | None = None
        self.epoch_lr = float("nan")  # the (first group's) learning rate of the running epoch, for metrics.csv

    def phase_of(self, epoch: int) -> int:
        """Index of the phase that epoch ``epoch`` (0-based) belongs to (the last one after the end)."""
        return max(k for k, start in enumerate(self.starts) if start <= epoch)

    def start_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> str | None:
        """Apply the phase of ``epoch``; returns the line to print when a phase begins (or is resumed)."""
        k = self.phase_of(epoch)
        line = self._enter(k, model, optimizer, epoch) if k != self.current else None
        phase = self.phases[k]
        if phase.get("scheduler") == "cosine":  # closed form of the phase's epoch: nothing to carry over on resume
            t = (epoch - self.starts[k]) / int(phase["epochs"])
            for group in optimizer.param_groups:
                group["lr"] = float(phase["lr"]) * group.get("lr_mult", 1.0) * 0.5 * (1.0 + math.cos(math.pi * t))
        return line

    def _enter(self, k: int, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int) -> str:
        phase = self.phases[k]
        for param in model.parameters():
            param.requires_grad_(True)
        if phase.get("train", "all") == "head":
            for name, param in model.named_parameters():
                if not (name == self.head or name.startswith(self.head + ".")):
                    param.requires_grad_(False)
        if phase.get("freeze_until"):
            transfer.freeze(model, phase["freeze_until"])
        fresh = epoch == self.starts[k]
        if fresh:  # on resume inside a phase the optimiser's restored rates are the phase's current ones
            for group in optimizer.param_groups:
                group["lr"] = float(phase["lr"]) * group.get("lr_mult", 1.0)
                group["initial_lr"] = group["lr"]
        self.scheduler = self._make_scheduler(phase, optimizer)
        if self._saved is not None and not fresh and self._saved.get("phase") == k and self.scheduler is not None:
            self.scheduler.load_state_dict(self._saved["scheduler"])
        self._saved = None
        self.current = k
        trainable, frozen = count_parameters(model)
        end = self.starts[k] + int(phase["epochs"])
        what = "head only" if phase.get("train", "all") == "head" else "all layers" + (f" after {phase['freeze_until']}" if phase.get("freeze_until") else "")
        resumed = "" if fresh else f" (resumed at epoch {epoch + 1})"
        return (f"phase {k + 1}/{len(self.phases)}: epochs {self.starts[k] + 1}-{end}, {what}, lr {float(phase['lr']):g}, "
                f"scheduler {phase.get('scheduler', 'none')}; parameters: {trainable:,} trainable, {frozen:,} frozen{resumed}")  # fmt: skip

    def _make_scheduler(self, phase: dict[str, Any], optimizer: torch.optim.Optimizer) -> Any:
        if phase.get("scheduler", "none") == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=self.gamma, patience=self.patience)
        return None  # cosine: set per epoch in start_epoch

    def end_of_validation(self, val_loss: float) -> None:
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_loss)

    def state_dict(self) -> dict[str, Any]:
        return {"phase": self.current, "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._saved = state
