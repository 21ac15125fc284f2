"""Configurations of the evaluate and predict commands."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from alzmri.training.config import TrainConfig


class EvaluateConfig(BaseModel):
    """Evaluate a checkpoint on one split of a preprocessing cache."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: Path = Field(description="Checkpoint file (e.g. RUN/checkpoints/best-loss.ckpt).", json_schema_extra={"argument": True})
    cache: Path = Field(description="Preprocessing cache folder.", json_schema_extra={"argument": True})
    split: Path = Field(description="Split folder with train/val/test TSVs.", json_schema_extra={"argument": True})
    subset: str = Field("test", description="Which split file to evaluate on (held-out test by default).")
    out: Path | None = Field(None, description="Output folder (default: RUN/eval-SUBSET next to the checkpoint's run).")
    batch_size: int = Field(8, ge=1, description="Scans per forward pass.")


class PredictConfig(BaseModel):
    """Predict diagnoses for raw scans with a checkpoint (preprocessing comes from the checkpoint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: Path = Field(description="Checkpoint file.", json_schema_extra={"argument": True})
    inputs: list[Path] = Field(description="NIfTI files, a manifest TSV/CSV, or a BIDS folder.", json_schema_extra={"argument": True})
    out: Path = Field(Path("predictions.tsv"), description="Where to write the predictions table.")


class CrossValidateConfig(TrainConfig):
    """Subject-level stratified group k-fold cross-validation: one training run per fold."""

    cache: Path = Field(description="Preprocessing cache folder (from 'alzmri preprocess').", json_schema_extra={"argument": True})  # type: ignore[assignment]
    resume: None = Field(None, description="(Not for cv: re-running the command resumes each fold.)", json_schema_extra={"cli": False})  # type: ignore[assignment]
    split: Path | None = Field(  # type: ignore[assignment]
        None, description="Folder of fold-K splits from 'alzmri split --method kfold' (default: made from the cache's scans).",
    )
    folds: int = Field(5, ge=3, le=20, description="Number of folds (each fold is the test set once; the next one is its val set).")
    out: Path = Field(Path("cv"), description="Folder for the folds, one run per fold, and the summary.")
    run_name: str | None = Field(None, description="Prefix of the per-fold run folders (default: 'fold' → fold-0, fold-1, ...).")
