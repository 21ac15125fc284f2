"""Configurations of the evaluate and predict commands."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from alzmri.training.config import DEFAULT_MODEL, BaselineModel, TrainConfig


class ReportOptions(BaseModel):
    """What the evaluation report computes (shared by 'evaluate' and 'report')."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subset: str = Field("test", description="The split whose rows are evaluated (held-out test by default; ignored for a table without a split column).")
    threshold_split: str = Field("val", description="Split on which the binary operating threshold is chosen, then applied unchanged.")
    threshold_rule: Literal["youden", "sensitivity"] = Field("youden", description="Threshold rule: Youden's J, or the highest threshold reaching --target-sensitivity.")
    target_sensitivity: float = Field(0.9, gt=0, le=1, description="Sensitivity the 'sensitivity' threshold rule must reach.")
    prevalence: float = Field(0.1, gt=0, lt=1, description="Prevalence of the positive class for PPV/NPV (e.g. 0.1 screening, 0.5 memory clinic).")
    bootstrap: int = Field(2000, ge=100, description="Subject-level bootstrap resamples for the 95 % intervals.")
    seed: int = Field(0, ge=0, description="Seed of the bootstrap and the posterior draws.")

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
    allow_seen: bool = Field(False, description="Report scans the model trained or was validated on under a red LEAKAGE banner instead of refusing.")
    genetics: Path | None = Field(None, description="Genetic table for a model trained with --genetics (default: the table it was trained with).")


class ReportConfig(ReportOptions):
    """Report on any predictions table (from 'alzmri evaluate' or another tool)."""

    predictions: Path = Field(description="Predictions table (.tsv/.csv): participant_id, diagnosis, prob_<class>..., optional session_id, split, predicted.", json_schema_extra={"argument": True})
    out: Path | None = Field(None, description="Output folder (default: a 'report' folder next to the table).")
    title: str = Field("alzmri evaluation report", description="Title of the HTML report.")
    checkpoint: Path | None = Field(None, description="The model's checkpoint: rows of scans it trained or was validated on get a red LEAKAGE banner.")


class PredictConfig(BaseModel):
    """Predict diagnoses for raw scans with a checkpoint (preprocessing comes from the checkpoint)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: Path = Field(description="Checkpoint file.", json_schema_extra={"argument": True})
    inputs: list[Path] = Field(description="Scan files, a manifest TSV/CSV, or a BIDS folder (slice models: image files or folders of them).", json_schema_extra={"argument": True})
    out: Path = Field(Path("predictions.tsv"), description="Where to write the predictions table.")
    genetics: Path | None = Field(None, description="Genetic table for a fusion model (default: the table it was trained with); rows are matched by participant_id.")
    engine: Literal["auto", "torch", "onnxruntime", "torchscript"] = Field(
        "auto", description="What runs the network: torch (a checkpoint), onnxruntime or torchscript (a file from 'alzmri export'); auto picks by the file's content."
    )
    threads: int | None = Field(None, ge=1, le=256, description="CPU threads of the network (default: the runtime's own).")


class ExportConfig(BaseModel):
    """Export a checkpoint for deployment: ONNX (ONNX Runtime, C++, C#, JS) or TorchScript (LibTorch)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: Path = Field(description="Checkpoint file, or a run folder (its checkpoints/best-loss.ckpt), from 'alzmri train'.", json_schema_extra={"argument": True})
    format: Literal["onnx", "torchscript"] = Field("onnx", description="onnx (run by ONNX Runtime) or torchscript (LibTorch; deprecated upstream).")
    out: Path | None = Field(None, description="Where to write the model (default: beside the checkpoint, .onnx or .torchscript.pt).")


class BaselineOptions(BaseModel):
    """How the linear baselines (pca_logreg, linear_svm) are fitted (shared by 'baseline' and 'cv')."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    downsample: int = Field(1, ge=1, le=8, description="Baseline: average-pool each scan by this factor before taking its brain voxels (2 keeps memory small at 96³ and up).")
    mask_fraction: float = Field(
        0.5, gt=0, le=1, description="Baseline: a voxel is a brain voxel when it is brain in at least this fraction of the training scans (small = union)."
    )
    components: list[float] = Field(
        default_factory=lambda: [0.5, 0.8, 0.95],
        description="Baseline: PCA sizes to try: a fraction of the variance in (0, 1), or a number of components (≥ 1).",
    )
    c_values: list[float] = Field(
        default_factory=lambda: [1e-4, 1e-3, 1e-2, 1e-1, 1.0], description="Baseline: inverse regularisation strengths C to try."
    )
    inner_folds: int = Field(5, ge=2, le=20, description="Baseline: subject-level folds of the inner search on the training subjects (at most the subjects of the rarest class).")
    scoring: Literal["balanced_accuracy", "neg_log_loss"] = Field("balanced_accuracy", description="Baseline: inner-search score (ties go to fewer components and smaller C).")
    jobs: int = Field(1, ge=1, description="Baseline: parallel fits of the inner search.")

    @field_validator("components")
    @classmethod
    def _check_components(cls, values: list[float]) -> list[float]:
        bad = [v for v in values if not (0 < v < 1 or (v >= 1 and float(v).is_integer()))]
        if not values or bad:
            raise ValueError(f"give fractions of the variance in (0, 1) or whole numbers of components ≥ 1, got {bad or 'none'}")
        return values

    @field_validator("c_values")
    @classmethod
    def _check_c(cls, values: list[float]) -> list[float]:
        if not values or any(v <= 0 for v in values):
            raise ValueError(f"C values must be positive, got {values or 'none'}")
        return values

    def baseline_options(self) -> dict[str, object]:
        """These options as keyword arguments (to pass from 'cv' to 'baseline')."""
        return {name: getattr(self, name) for name in BaselineOptions.model_fields}


class BaselineConfig(ReportOptions, BaselineOptions):
    """Fit a linear baseline on brain voxels and evaluate it like a network (same predictions table and report)."""

    cache: Path = Field(description="Preprocessing cache folder (from 'alzmri preprocess').", json_schema_extra={"argument": True})
    split: Path = Field(description="Split folder with train/val/test TSVs (from 'alzmri split').", json_schema_extra={"argument": True})
    model: BaselineModel = Field("pca_logreg", description="pca_logreg (scaler, PCA, logistic regression) or linear_svm (scaler, PCA, linear SVM).")
    classes: list[str] | None = Field(None, description="Classes to classify, in this order (default: those in the training split, in clinical order).")
    class_weights: bool = Field(True, description="Weight classes by inverse training frequency.")
    seed: int = Field(0, ge=0, description="Seed of the inner folds, the classifier, the bootstrap and the posterior draws.")
    out: Path = Field(Path("runs"), description="Folder that holds run folders.")
    run_name: str | None = Field(None, description="Run folder name (default: model name + settings hash, so re-running reports the finished run).")


class CrossValidateConfig(BaselineOptions, TrainConfig):
    """Subject-level stratified group k-fold cross-validation: one training run (or linear baseline) per fold."""

    accepts_baselines: ClassVar[bool] = True

    cache: Path = Field(description="Preprocessing cache folder (from 'alzmri preprocess').", json_schema_extra={"argument": True})  # type: ignore[assignment]
    resume: None = Field(None, description="(Not for cv: re-running the command resumes each fold.)", json_schema_extra={"cli": False})  # type: ignore[assignment]
    register_model: None = Field(None, description="(Not for cv: register one run with 'alzmri train --register-model'.)", json_schema_extra={"cli": False})  # type: ignore[assignment]
    split: Path | None = Field(  # type: ignore[assignment]
        None, description="Folder of fold-K splits from 'alzmri split --method kfold' (default: made from the cache's scans).",
    )
    folds: int = Field(5, ge=3, le=20, description="Number of folds (each fold is the test set once; the next one is its val set).")
    out: Path = Field(Path("cv"), description="Folder for the folds, one run per fold, and the summary.")
    run_name: str | None = Field(None, description="Prefix of the per-fold run folders (default: 'fold' → fold-0, fold-1, ...).")
    model: str = Field(DEFAULT_MODEL, description="Registered model name (see 'alzmri models'), or a linear baseline: pca_logreg, linear_svm (see 'alzmri baseline').")


class CompareConfig(BaseModel):
    """Compare two models on the same subjects (two predictions tables or two cross-validation folders)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    a: Path = Field(description="Model A: predictions table, eval folder, run folder (uses eval-test/), or 'alzmri cv' folder.", json_schema_extra={"argument": True})
    b: Path = Field(description="Model B, of the same kind as A.", json_schema_extra={"argument": True})
    subset: str = Field("test", description="Split whose rows are compared (tables with a split column).")
    bootstrap: int = Field(2000, ge=100, description="Subject-level bootstrap resamples for the paired interval.")
    seed: int = Field(0, ge=0, description="Seed of the bootstrap.")
    out: Path | None = Field(None, description="Also write the result as JSON here.")


class EvaluateProgressionConfig(BaseModel):
    """Judge a progression run against each held-out subject's true later images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: Path = Field(description="Progression run folder (from 'alzmri train-progression') or its checkpoint.", json_schema_extra={"argument": True})
    cache: Path = Field(description="The slice or preprocessing cache the run learned from (or one made the same way).")
    split: Path = Field(description="The run's split folder: only its held-out subjects are scored.")
    data: Literal["test", "val"] = Field("test", description="Which held-out split to score.")
    classifier: Path | None = Field(None, description="Checkpoint of an alzmri stage classifier ('alzmri train' on the same inputs and stages): predicted stage per chain step, and its features for FID.")
    feature_net: Path | None = Field(None, description="A feature network of your own as a TorchScript file (torch.jit.save; images → features) for a second FID.")
    lpips: list[Path] | None = Field(None, description="LPIPS weight files (2D only; nothing is downloaded): torchvision's AlexNet state dict and the lpips package's alex.pth, or one file with both.")
    truth: Path | None = Field(None, description="The derivatives/synth folder of an 'alzmri synth --longitudinal' cohort: score each change map in the region the truth changed between the two visits.")
    truth_level: float = Field(0.1, gt=0, le=1, description="Planted-change strength (fraction of full scale) at which a pixel counts as changed by the truth.")
    out: Path | None = Field(None, description="Output folder (default: RUN/eval-<data>).")
    bootstrap: int = Field(2000, ge=100, description="Subject-level bootstrap resamples for the 95 % intervals.")
    seed: int = Field(0, ge=0, description="Seed of the bootstrap.")


AblationArm = Literal["genetics_only", "mri_only", "fusion_concat", "fusion_xattn", "shuffled_genetics"]
ABLATION_ARMS: tuple[str, ...] = get_args(AblationArm)
_HIDDEN = {"cli": False}


class FusionAblationConfig(CrossValidateConfig):
    """Does fusing genetics with MRI help? Every arm on the same subject-level folds, compared on the same subjects."""

    genetics: Path = Field(description="Genetic table (TSV/CSV/Parquet keyed by participant_id).", json_schema_extra={"argument": True})  # type: ignore[assignment]
    out: Path = Field(Path("fusion-ablation"), description="Folder for the folds, one 'alzmri cv' folder per arm, the tables and the comparisons.")
    arms: list[AblationArm] = Field(
        default_factory=lambda: list(ABLATION_ARMS),
        description="Arms: genetics_only, mri_only (the encoder alone), fusion_concat, fusion_xattn, shuffled_genetics (fusion_xattn with the genetic rows permuted across participants).",
    )
    bootstrap: int = Field(2000, ge=100, description="Subject-level bootstrap resamples for the intervals and paired differences.")
    model: str = Field("fusion_xattn", description="(Set per arm.)", json_schema_extra=_HIDDEN)
    shuffle_genetics: bool = Field(False, description="(Set per arm: shuffled_genetics.)", json_schema_extra=_HIDDEN)
    freeze_encoder: None = Field(None, description="(Set per arm by --encoder-from-mri-only.)", json_schema_extra=_HIDDEN)  # type: ignore[assignment]
    encoder_from_mri_only: bool = Field(
        False, description="Two-stage: the fusion arms take the mri_only arm's trained encoder of the same fold, frozen (arm folders ARM-frozen; tables *-frozen.*). "
        "Needs --encoder-layer or the encoder's own layer; mri_only runs first.",
    )
