"""Predictions tables: one row per scan with class probabilities, from a checkpoint alone."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from alzmri.data.dataset import CachedVolumeDataset
from alzmri.data.genetics import WithGenetics
from alzmri.io.checkpoint import read_checkpoint
import alzmri.fusion  # noqa: F401  (registers the fusion models)
from alzmri.models import create_model, model_info
from alzmri.models.weights import load_state
from alzmri.data.inputs import InputConfig, stored_inputs
from alzmri.utils.errors import AlzmriError, first_line


def load_classifier(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the exact model stored in a checkpoint (eval mode) and return it with its hparams."""
    ckpt = read_checkpoint(path)
    hp = ckpt["hparams"]
    try:
        model = create_model(hp["model_name"], **hp["model_kwargs"])
    except (TypeError, ValueError) as exc:  # settings this version's model does not take
        raise AlzmriError(f"checkpoint {path} describes a {hp['model_name']} this version cannot build: {first_line(exc)}") from None
    if len(hp["classes"]) != hp["model_kwargs"].get("num_classes", len(hp["classes"])):
        raise AlzmriError(f"checkpoint {path} names {len(hp['classes'])} classes {list(hp['classes'])} but its model has {hp['model_kwargs']['num_classes']} outputs")
    load_state(model, ckpt["state_dict"], f"the weights in checkpoint {path}")
    return model.eval(), hp


def checkpoint_preprocess(hparams: dict[str, Any]) -> InputConfig:
    """The input settings the model was trained with (a PreprocessConfig, or a SliceSetConfig for slices)."""
    return stored_inputs(hparams["preprocess"], "the checkpoint")


@torch.no_grad()
def predict_probabilities(model: nn.Module, volumes: torch.utils.data.Dataset, batch_size: int = 8) -> np.ndarray:
    """Softmax probabilities, shape ``(n_scans, n_classes)``."""
    out = [torch.softmax(model(x, *age), dim=1) for x, _, *age in DataLoader(volumes, batch_size=batch_size)]
    return torch.cat(out).numpy()


def uses_age(model: nn.Module) -> bool:
    """Whether the model takes each scan's age as a second input (``liu2022 age_encoding=True``)."""
    return bool(getattr(model, "uses_age", False))


SLICE_COLUMNS = ("slice_id", "slice_index", "subject_known")


def predictions_table(scans: pd.DataFrame, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """participant_id, session_id, [slice_id, slice_index, subject_known,] diagnosis (true label, if known), prob_<class>..., predicted."""
    table = pd.DataFrame({"participant_id": scans["participant_id"].values, "session_id": scans["session_id"].values})
    for column in SLICE_COLUMNS:  # rows of a slice cache: which slice, and whether its subject is known
        if column in scans:
            table[column] = scans[column].values
    if "diagnosis" in scans:
        table["diagnosis"] = scans["diagnosis"].values
    for i, c in enumerate(classes):
        table[f"prob_{c}"] = probs[:, i].round(6)
    table["predicted"] = [classes[i] for i in probs.argmax(axis=1)]
    return table


def predict_cached(model: nn.Module, classes: list[str], scans: pd.DataFrame, batch_size: int = 8, genetics: ModelGenetics | None = None) -> pd.DataFrame:
    """Predictions for cache-manifest rows (a fusion model also gets each scan's participant's genetics)."""
    images: torch.utils.data.Dataset = CachedVolumeDataset(scans, classes, with_age=uses_age(model))
    if genetics is not None and genetics.used:
        images = WithGenetics(images, *genetics.inputs(scans["participant_id"]))
    probs = predict_probabilities(model, images, batch_size)
    return predictions_table(scans, probs, classes)


@dataclass(frozen=True)
class ModelGenetics:
    """The genetics of a checkpoint trained with ``--genetics``: its table (shuffled as in training) and fitted encoder.

    Attributes:
        table: the genetic table read (rows permuted as in training for the shuffled control).
        encoder: the encoder fitted on the training participants, rebuilt from the checkpoint.
        record: the checkpoint's genetics record (source, shuffled, seed, missing, alignment).
        used: whether the model takes genetics (False for an image model trained with
            ``--genetics``, which only selected its participants).
    """

    table: Any
    encoder: Any
    record: dict[str, Any]
    used: bool

    @property
    def drops_missing(self) -> bool:
        """Whether the model was trained with ``--missing-genetics drop`` (it never saw a participant without genetics)."""
        return self.record.get("missing", "drop") == "drop"

    def inputs(self, participants: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(features, present)`` for each participant id."""
        return self.encoder.transform(self.table, [str(p) for p in participants])

    def select(self, scans: pd.DataFrame, name: str) -> pd.DataFrame:
        """The scans to score: without the participants lacking genetics when the model was trained with ``--missing-genetics drop``."""
        from alzmri.data.genetics import keep_with_genetics

        return keep_with_genetics(scans, self.table, name) if self.drops_missing else scans


def checkpoint_genetics(hp: dict[str, Any], table: str | Path | None = None) -> ModelGenetics | None:
    """The checkpoint's genetics (None for a model trained without ``--genetics``), read from ``table`` or the training table.

    Raises:
        AlzmriError: the table is missing or unreadable, or lacks a column the model was trained with.
    """
    from alzmri.data.genetics import GeneticEncoder, shuffled
    from alzmri.io.genetics import read_genetics

    record = hp.get("genetics")
    if not record:
        if table is not None:
            raise AlzmriError(f"this checkpoint ({hp['model_name']}) was trained without genetics; leave --genetics out")
        return None
    path = Path(table) if table is not None else Path(record["source"])
    if not path.is_file():
        raise AlzmriError(f"genetic table {path} (the one the model was trained with) is not there; pass --genetics TABLE")
    genetics = read_genetics(path)
    if record.get("shuffled"):
        genetics = shuffled(genetics, int(record.get("seed", 0)))
    return ModelGenetics(genetics, GeneticEncoder.from_dict(record["encoder"]), record, model_info(hp["model_name"]).uses_genetics)
