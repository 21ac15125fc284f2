"""The train command's configuration: the single source of its defaults."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

# Names only (building them needs TorchIO, imported by ``augment`` when training starts).
Augmentation = Literal["noise", "gamma", "flip", "affine", "elastic", "blur", "bias_field", "crop", "rotate", "brightness_contrast"]
DEFAULT_AUGMENTATIONS: tuple[Augmentation, ...] = ("noise", "gamma")
# The default for slice caches (anatomy-preserving 2D: left-right flip, ±15° in-plane rotation, mild
# brightness/contrast jitter), filled in by fit.for_inputs when --augmentations is not given.
SLICE_AUGMENTATIONS: tuple[Augmentation, ...] = ("flip", "rotate", "brightness_contrast")
Tracker = Literal["mlflow", "tensorboard", "wandb"]
# The default network: MONAI's 3D ResNet-10. On the hard synthetic cohort of benchmarks/recipe_study.py
# train's defaults left chance at epoch 1-3 for 5 of 5 seeds (test AUC 0.90-1.00), while liu_cnn_compact
# never reached the test subjects under any recipe tried (benchmarks/README.md, "Training recipe study").
DEFAULT_MODEL = "resnet10_3d"
# The linear baselines of 'alzmri baseline' (alzmri.evaluation.baseline): not networks, so not in the model
# registry; 'alzmri cv' runs them, 'alzmri train' points to 'alzmri baseline'.
BaselineModel = Literal["pca_logreg", "linear_svm"]
LINEAR_BASELINES: tuple[str, ...] = get_args(BaselineModel)


class TrainPhase(BaseModel):
    """One phase of a multi-phase fine-tuning schedule (see ``TrainConfig.phases``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(ge=1, description="Epochs of this phase.")
    lr: float = Field(gt=0, description="Learning rate at the start of the phase.")
    train: Literal["all", "head"] = Field("all", description="Train every layer, or only the classifier head (the backbone frozen, its batch norms in eval mode).")
    freeze_until: str | None = Field(None, description="Also freeze top-level modules up to and including this one.")
    scheduler: Literal["none", "plateau", "cosine"] = Field("none", description="Learning-rate schedule within the phase (plateau: reduce by --lr-gamma when val loss stalls).")


def parse_phases(text: str) -> list[dict[str, str]]:
    """``"train=head,epochs=10,lr=1e-3; epochs=20,lr=1e-5,scheduler=plateau"`` as one dict per phase.

    Raises:
        ValueError: an entry that is not ``key=value``.
    """
    phases = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        entry = {}
        for item in (i.strip() for i in part.split(",")):
            key, sep, value = (x.strip() for x in item.partition("="))
            if not sep or not key or not value:
                raise ValueError(f"phase entry {item!r} is not key=value (e.g. --phases 'train=head,epochs=10,lr=1e-3;epochs=20,lr=1e-5,scheduler=plateau')")
            entry[key.replace("-", "_")] = value
        phases.append(entry)
    return phases


class TrainConfig(BaseModel):
    """Train a classifier on a preprocessing cache with a subject-level split."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cache: Path | None = Field(None, description="Preprocessing cache folder (from 'alzmri preprocess').", json_schema_extra={"argument": True})
    split: Path | None = Field(None, description="Split folder with train/val/test TSVs (from 'alzmri split').", json_schema_extra={"argument": True})
    resume: Path | None = Field(None, description="Continue the run in this run folder with its stored settings (CACHE and SPLIT come from it).")
    out: Path = Field(Path("runs"), description="Folder that holds run folders and the MLflow store.")
    run_name: str | None = Field(None, description="Run folder name (default: model name + config hash, so re-running resumes).")
    model: str = Field(DEFAULT_MODEL, description="Registered model name (see 'alzmri models').")
    width: int | None = Field(None, ge=1, le=16, description="Channel widening factor of the model (default: the model's).")
    age_encoding: bool = Field(False, description="Give the model each scan's age (liu2022, liu_cnn_compact; needs an age column in the labels).")
    dropout: float = Field(0.5, ge=0.0, lt=1.0, description="Dropout in the classification head.")
    head: Literal["mlp", "pool"] | None = Field(
        None, description="Classifier head of liu2022 / liu_cnn_compact: mlp (flatten → 1024 → 512, the paper's) or pool (global average pooling → 512) (default: the model's)."
    )
    classes: list[str] | None = Field(None, description="Classes to classify, in this order (default: those in the training split, in clinical order).")
    epochs: int = Field(40, ge=1, description="Maximum number of epochs.")
    batch_size: int = Field(8, ge=1, description="Scans per batch.")
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adamw", description="Optimiser ('sgd' = SGD with Nesterov momentum 0.9).")
    lr: float = Field(3e-4, gt=0, description="Learning rate.")
    pretrained: Path | None = Field(None, description="Weights file to start from (.pth/.safetensors, e.g. torchvision Kinetics-400 for r3d_18); never downloaded.")
    freeze_until: str | None = Field(None, description="Freeze the model's top-level modules up to and including this one (e.g. layer3).")
    freeze: list[str] | None = Field(None, description="Also freeze parameters matching these patterns (e.g. 'stem.*').")
    head_lr_mult: float | None = Field(None, gt=0, description="Learning-rate multiplier of the classifier head (default: 10 with --pretrained and no --phases, else 1).")
    warmup_epochs: int = Field(0, ge=0, description="Linear learning-rate warm-up from 10 % over this many epochs.")
    weight_decay: float = Field(1e-4, ge=0, description="Weight decay.")
    scheduler: Literal["none", "cosine", "plateau", "multistep"] = Field(
        "none", description="Learning-rate schedule: cosine annealing with warm restarts, reduce-on-plateau (val loss), or multi-step decay."
    )
    cosine_t0: int = Field(5, ge=1, description="Cosine schedule: epochs of the first cycle (cycles double).")
    milestones: list[int] = Field(default_factory=lambda: [30, 60], description="Multi-step schedule: epochs at which the learning rate is multiplied by --lr-gamma.")
    lr_gamma: float = Field(0.1, gt=0, lt=1, description="Decay factor of the plateau and multi-step schedules.")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="Label smoothing of the cross-entropy.")
    grad_clip: float | None = Field(None, gt=0, description="Clip the gradient norm to this value.")
    accumulate: int = Field(1, ge=1, description="Accumulate gradients over this many batches.")
    precision: Literal["32", "bf16-mixed", "16-mixed"] = Field("32", description="Numeric precision ('bf16-mixed' works on CPU; '16-mixed' needs a GPU).")
    patience: int = Field(10, ge=1, description="Early stopping: stop when neither validation loss nor accuracy improved for this many epochs.")
    class_weights: bool = Field(True, description="Weight the cross-entropy by inverse training class frequency.")
    augment: bool = Field(True, description="Apply the training augmentations (--augmentations).")
    augmentations: list[Augmentation] = Field(
        default_factory=lambda: list(DEFAULT_AUGMENTATIONS),
        description="TorchIO augmentations in order: noise, gamma, flip, affine, elastic, blur, bias_field, crop, rotate, brightness_contrast "
        "(slice caches default to flip, rotate, brightness_contrast).",
    )
    shuffle_labels: bool = Field(
        False, description="Permute the training labels across subjects (seeded): a model for the label-randomisation sanity check ('alzmri explain --label-randomized RUN'). Validation keeps the true labels."
    )
    phases: list[TrainPhase] | None = Field(
        None,
        description="Fine-tune in phases within one run: 'train=head,epochs=10,lr=1e-3;epochs=20,lr=1e-5,scheduler=plateau' (keys: epochs, lr, "
        "train=all|head, freeze_until, scheduler=none|plateau|cosine). The phases set --epochs (their sum), the learning rate and the schedule; "
        "the best-validation checkpoints are kept across phases.",
        json_schema_extra={"text": True},
    )
    genetics: Path | None = Field(
        None, description="Genetic table (TSV/CSV/Parquet keyed by participant_id) for fusion_xattn, fusion_concat, genetics_only; "
        "with an image model it only selects the participants (see --missing-genetics), so an MRI-only run scores the same subjects.",
    )
    encoder: str | None = Field(None, description="Image encoder of fusion_xattn / fusion_concat: any registered image model (default: resnet10_3d, small_cnn_2d for slices).")
    encoder_layer: str | None = Field(
        None, description="Module of the encoder whose feature map becomes the image tokens (default: its Grad-CAM layer; e.g. layer3 of resnet10_3d for 2³ cells at 32³ instead of 1³).",
    )
    fusion_dropout: float | None = Field(
        None, ge=0.0, lt=1.0, description="Dropout of the fusion models' attention and MLPs (default: theirs, 0.1; genetics_only 0.3); --dropout is the image models' head's.",
    )
    missing_genetics: Literal["drop", "mask"] = Field(
        "drop", description="Participants with images but no genetic row: drop their scans, or keep them with a learned missing-genetics token (mask).",
    )
    shuffle_genetics: bool = Field(
        False, description="Control: permute the genetic rows across participants (seeded, in training and evaluation alike), so any gain over MRI-only is noise.",
    )
    freeze_encoder: Path | None = Field(
        None, description="Checkpoint of an earlier image-only run of the encoder model: its weights become the fusion model's image encoder, frozen.",
    )
    seed: int = Field(0, ge=0, description="Random seed (weights, batches, augmentation).")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    threads: int = Field(0, ge=0, description="CPU threads for torch (0 = all cores).")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="Where to train: auto picks CUDA, then Apple MPS, then CPU.")
    trackers: list[Tracker] = Field(
        default_factory=lambda: ["mlflow", "tensorboard"], description="Experiment trackers: mlflow, tensorboard, wandb (wandb needs the wandb package)."
    )
    tracking_uri: str | None = Field(None, description="MLflow tracking URI (default: sqlite:///OUT/mlflow.db, no server needed).")
    experiment: str = Field("alzmri", description="MLflow experiment name.")
    register_model: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
        description="Register the best checkpoint (with its preprocessing) in the MLflow model registry under this name; serve it as models:/NAME/VERSION.",
    )  # fmt: skip
    progress: bool = Field(True, description="Show a progress bar.")

    # Whether --model may name a linear baseline (True for 'alzmri cv', which runs them itself).
    accepts_baselines: ClassVar[bool] = False

    @field_validator("model")
    @classmethod
    def _not_a_baseline(cls, model: str) -> str:
        if model in LINEAR_BASELINES and not cls.accepts_baselines:
            raise PydanticCustomError(
                "baseline_model",
                "{model} is a linear baseline, not a network: run 'alzmri baseline CACHE SPLIT --model {model}' (or 'alzmri cv CACHE --model {model}')",
                {"model": model},
            )
        return model

    @field_validator("phases", mode="before")
    @classmethod
    def _parse_phases(cls, value: object) -> object:
        return parse_phases(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _phases_own_the_schedule(self) -> TrainConfig:
        if not self.phases:
            return self
        if len(self.phases) < 2:
            raise ValueError("--phases needs at least two phases (one phase is an ordinary run: use --epochs, --lr, --scheduler)")
        fields = type(self).model_fields
        given = sorted(k for k in ("scheduler", "warmup_epochs", "freeze_until", "freeze", "lr") if getattr(self, k) != fields[k].get_default())
        if given:
            raise ValueError(f"--phases sets the learning rate, schedule and freezing of each phase; leave out {', '.join('--' + k.replace('_', '-') for k in given)}")
        total = sum(p.epochs for p in self.phases)
        if self.epochs not in (total, fields["epochs"].get_default()):
            raise ValueError(f"--epochs {self.epochs} differs from the phases' {total} epochs; leave --epochs out")
        object.__setattr__(self, "epochs", total)
        return self

    @model_validator(mode="after")
    def _genetics_options(self) -> TrainConfig:
        if self.genetics is None:
            given = sorted(k for k in ("encoder", "encoder_layer", "fusion_dropout", "shuffle_genetics", "freeze_encoder") if getattr(self, k) not in (None, False))
            given += ["missing_genetics"] if self.missing_genetics != "drop" else []
            if given:
                raise ValueError(f"{', '.join('--' + k.replace('_', '-') for k in given)} need --genetics TABLE (the fusion models' genetic table)")
        if self.age_encoding and self.genetics is not None:
            raise ValueError("--age-encoding does not combine with --genetics (the fusion models take no age input)")
        return self

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.scheduler == "plateau" and self.warmup_epochs:
            raise ValueError("--warmup-epochs does not combine with --scheduler plateau; use cosine or multistep")
        if sorted(self.milestones) != self.milestones:
            raise ValueError(f"milestones must be increasing, got {self.milestones}")
        if self.register_model and "mlflow" not in self.trackers:
            raise ValueError("--register-model needs the mlflow tracker (the registry lives in its store): add mlflow to --trackers")
        return self
