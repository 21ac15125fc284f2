"""Settings of ``alzmri train-progression`` and ``alzmri progress``: the single source of their defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Pairing = Literal["auto", "paired", "unpaired"]
# Fields that do not change what a run learns (so a re-run with other values resumes the same run).
_NOT_HASHED = {"out", "run_name", "progress", "tracking_uri", "mlflow", "epochs", "samples"}


# |G(x) − x| weight of paired runs unless given: on the synthetic longitudinal study it raised the change map's
# enrichment in the planted core from 1.97–2.09 to 2.35–2.75 at the same PSNR against the true follow-up (benchmarks/README.md).
PAIRED_IDENTITY_WEIGHT = 30.0


class ProgressionConfig(BaseModel):
    """Train one stage-to-stage generator per transition (stage 1 → 2, 2 → 3, ...), to be chained."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cache: Path = Field(description="Slice cache (2D; 'alzmri slices' or 'alzmri import-slices') or preprocessing cache (3D).", json_schema_extra={"argument": True})
    split: Path = Field(description="Subject-level split folder ('alzmri split'): generators learn on train, are watched on val; test stays unseen.", json_schema_extra={"argument": True})
    out: Path = Field(Path("progression-runs"), description="Folder holding the run folders and the MLflow store.")
    run_name: str | None = Field(None, description="Run folder name (default: 'progression-' + settings hash, so re-running resumes).")
    stages: list[str] | None = Field(None, description="Stages in disease order, e.g. NonDemented,VeryMildDemented,MildDemented,ModerateDemented (default: the cache's classes in clinical order).")
    pairing: Pairing = Field(
        "auto", description="paired: the same subject's images at adjacent stages (needs longitudinal data); unpaired: any images of adjacent stages, with cycle consistency; auto: paired when the training split has such pairs."
    )
    roi: bool = Field(True, description="Weight the discriminator's patch scores by the brain mask (judge the brain, not the background).")
    residual: bool = Field(True, description="Generators predict the change and add it to the input (tanh(atanh(x) + h)), keeping the subject's anatomy; --no-residual predicts the image itself, as the seed did.")
    l1_weight: float = Field(100.0, ge=0.0, description="Paired: weight of |generated − true next stage| (pix2pix's 100); 0 leaves the adversarial loss alone, as the seed.")
    cycle_weight: float = Field(10.0, ge=0.0, description="Unpaired: weight of the cycle-consistency term |F(G(x)) − x| (CycleGAN's 10).")
    identity_weight: float | None = Field(
        None, ge=0.0,
        description="Weight of |generated − input|, a sparsity prior on the change map (default: 30 paired, where it concentrated the change "
        "where the disease acts without costing accuracy against the true follow-up; 0 unpaired, not measured there).",
    )  # fmt: skip
    adversarial_weight: float = Field(1.0, ge=0.0, description="Weight of the generators' adversarial loss (0: plain regression to the true follow-up, paired only).")
    width: int = Field(64, ge=4, le=128, description="Maps of the first convolution of generator and discriminator (the seed's 64: 64-128-256).")
    epochs: int = Field(30, ge=1, description="Epochs (passes over the larger stage set of each transition).")
    batch_size: int = Field(16, ge=1, description="Images per batch.")
    steps_per_epoch: int | None = Field(None, ge=1, description="Batches per transition per epoch (default: one pass over the pairs, or over the larger stage set); caps epochs of large unpaired sets.")
    lr: float = Field(2e-4, gt=0, description="Adam learning rate (the seed's 2e-4).")
    betas: tuple[float, float] = Field((0.5, 0.999), description="Adam betas (the seed's 0.5, 0.999).")
    oversample: bool = Field(True, description="Draw the smaller stage set of a transition with replacement up to the larger one's size each epoch (the seed's minority-stage oversampling).")
    samples: int = Field(4, ge=0, le=16, description="Validation images shown in the per-epoch sample grid (samples/epoch-NNN.png, logged to MLflow).")
    seed: int = Field(0, ge=0, description="Seed of weights, batch order and sampling (a resumed run continues exactly).")
    mlflow: bool = Field(True, description="Log losses and sample grids to MLflow (local SQLite store in OUT).")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI (default: sqlite:///OUT/mlflow.db).")
    progress: bool = Field(True, description="Show a progress bar.")

    @model_validator(mode="after")
    def _check(self) -> ProgressionConfig:
        if self.stages is not None and len(self.stages) < 2:
            raise ValueError(f"stages must name at least two stages, got {self.stages}")
        if self.stages is not None and len({s.lower() for s in self.stages}) != len(self.stages):
            raise ValueError(f"stages must not repeat a stage: {self.stages}")
        if self.adversarial_weight == 0 and (self.pairing == "unpaired" or self.l1_weight == 0):
            raise ValueError("--adversarial-weight 0 leaves only the L1 term to the true follow-up: it needs paired data (--pairing paired or auto) and --l1-weight > 0")
        low, high = self.betas
        if not (0 <= low < 1 and 0 <= high < 1):
            raise ValueError(f"betas must lie in [0, 1), got {self.betas}")
        return self

    def identity_for(self, paired: bool) -> float:
        """The identity weight the run uses: the one given, else 30 with same-subject pairs and 0 without."""
        if self.identity_weight is not None:
            return float(self.identity_weight)
        return PAIRED_IDENTITY_WEIGHT if paired else 0.0

    def hashed(self) -> dict[str, Any]:
        """The settings that define what the run learns (a run folder is reused only for the same ones)."""
        return self.model_dump(mode="json", exclude=_NOT_HASHED)


class ProgressConfig(BaseModel):
    """Show what comes next for one scan: the image at every later stage, the change maps and a GIF."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: Path = Field(description="Progression run folder (from 'alzmri train-progression') or its checkpoint.", json_schema_extra={"argument": True})
    scan: Path = Field(
        description="The input: an image file (runs trained on imported slices), a cached array (.npy inside a slice or preprocessing cache made like the run's), or a raw volume (NIfTI etc.; runs trained on volumes).",
        json_schema_extra={"argument": True},
    )
    stage: str | None = Field(None, description="The input's stage (default: the first stage of the run); the chain starts there.")
    out: Path | None = Field(None, description="Output folder (default: progress-<scan name> next to the run).")
