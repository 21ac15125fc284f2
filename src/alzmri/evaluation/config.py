"""Configurations of the evaluate and predict commands."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from alzmri.training.config import TrainConfig


class ReportOptions(BaseModel):
    """What the evaluation report computes (shared by 'evaluate' and 'report')."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subset: str = Field("test", description="The split whose rows are evaluated (held-out test by default; ignored for a table without a split column).")
    threshold_split: str = Field("val", description="Split on which the binary operating threshold is chosen, then applied unchanged.")
    threshold_rule: Literal["youden", "sensitivity"] = Field("youden", description="Threshold rule: Youden's J, or the highest threshold reaching --target-sensitivity.")
    target_sensitivity: float = Field(0.9, gt=0, le=1, description="Sensitivity the 'sensitivity' threshold rule must reach.")
    prevalence: float = Field(0.1, gt=0, lt=1, description="Prevalence of the positive class for PPV/NPV (e.g. 0.1 screening, 0.5 memory clinic).")
    bootstrap: int = Field(2000, ge=100, description="Subject-level bootstrap resamples for the 95 % intervals.")
    seed: int = Field(0, description="Seed of the bootstrap and the posterior draws.")

    def report_options(self) -> dict[str, object]:
        """Keyword arguments of ``build_report``."""
        return {
            "subset": self.subset,
            "threshold_split": self.threshold_split,
            "threshold_rule": self.threshold_rule,
            "target_sensitivity": self.target_sensitivity,
            "prevalence": self.prevalence,
            "n_resamples": self.bootstrap,
            "seed": self.seed,
        }


class EvaluateConfig(ReportOptions):
    """Evaluate a checkpoint on one split of a preprocessing cache."""

    checkpoint: Path = Field(description="Checkpoint file (e.g. RUN/checkpoints/best-loss.ckpt).", json_schema_extra={"argument": True})
    cache: Path = Field(description="Preprocessing cache folder.", json_schema_extra={"argument": True})
    split: Path = Field(description="Split folder with train/val/test TSVs.", json_schema_extra={"argument": True})
    out: Path | None = Field(None, description="Output folder (default: RUN/eval-SUBSET next to the checkpoint's run).")
    batch_size: int = Field(8, ge=1, description="Scans per forward pass.")


class ReportConfig(ReportOptions):
    """Report on any predictions table (from 'alzmri evaluate' or another tool)."""

    predictions: Path = Field(description="Predictions table (.tsv/.csv): participant_id, diagnosis, prob_<class>..., optional session_id, split, predicted.", json_schema_extra={"argument": True})
    out: Path | None = Field(None, description="Output folder (default: a 'report' folder next to the table).")
    title: str = Field("alzmri evaluation report", description="Title of the HTML report.")


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


class CompareConfig(BaseModel):
    """Compare two models on the same subjects (two predictions tables or two cross-validation folders)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    a: Path = Field(description="Model A: predictions table, eval folder, run folder (uses eval-test/), or 'alzmri cv' folder.", json_schema_extra={"argument": True})
    b: Path = Field(description="Model B, of the same kind as A.", json_schema_extra={"argument": True})
    subset: str = Field("test", description="Split whose rows are compared (tables with a split column).")
    bootstrap: int = Field(2000, ge=100, description="Subject-level bootstrap resamples for the paired interval.")
    seed: int = Field(0, description="Seed of the bootstrap.")
    out: Path | None = Field(None, description="Also write the result as JSON here.")
