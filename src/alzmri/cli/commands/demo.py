"""``alzmri demo``: synth → preprocess → split → train → evaluate on the embedded synthetic cohort."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from alzmri.preprocessing.config import PreprocessConfig
from alzmri.training.config import DEFAULT_MODEL, TrainConfig


# The synthetic scans are already skull-stripped (brain mask = their foreground). The demo skips
# N4 and resizes linearly: with N4 and cubic resizing its held-out balanced accuracy was 0.769
# instead of 0.833 (seed 0, liu_cnn_compact) and preprocessing took 172 s instead of 44 s (see benchmarks/README.md).
DEMO_PREPROCESS = PreprocessConfig(steps=("reorient", "resample", "skull_strip", "crop", "resize", "normalize"),
                                   skull_strip="none", interpolation="linear")


class DemoConfig(BaseModel):
    """Settings of the end-to-end demo; sized to finish in minutes on two CPU cores."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    out: Path = Field(Path("alzmri-demo"), description="Folder for everything the demo makes (re-running resumes).", json_schema_extra={"argument": True})
    subjects: int = Field(100, ge=20, description="Synthetic subjects.")
    classes: list[Literal["CN", "MCI", "AD"]] = Field(default_factory=lambda: ["CN", "AD"], description="Diagnoses in the cohort.")
    seed: int = Field(0, ge=0, description="Seed for the cohort, the split and training.")
    atrophy_scale: float = Field(
        3.0, ge=0.0, description="Multiplier on the synthetic AD atrophy (1 = realistic strength; the demo exaggerates it so a CPU-sized model learns it from ~100 scans in minutes)."
    )
    voxel_size: float = Field(2.0, gt=0.3, le=4.0, description="Voxel size of the synthetic scans in mm.")
    spacing: float = Field(2.0, gt=0.1, le=8.0, description="Resampling voxel size in mm before crop and resize.")
    size: int = Field(48, ge=16, le=256, description="Edge of the cubic model input.")
    ratios: tuple[float, float, float] = Field((0.7, 0.15, 0.15), description="Train,val,test scan ratios.")
    model: str = Field(DEFAULT_MODEL, description="Registered model name.")
    epochs: int = Field(30, ge=1, description="Maximum training epochs.")
    lr: float = Field(TrainConfig.model_fields["lr"].default, gt=0, description="Learning rate (default: alzmri train's).")
    dropout: float = Field(TrainConfig.model_fields["dropout"].default, ge=0.0, lt=1.0, description="Dropout in the classification head (default: alzmri train's).")
    workers: int = Field(0, ge=0, description="Worker processes for synthesis and preprocessing (0 = one per core).")


def run(config: DemoConfig) -> dict:
    from alzmri.cli.commands.evaluate import print_metrics
    from alzmri.data.config import SplitConfig
    from alzmri.data.synth import SynthConfig, synthesize_cohort
    from alzmri.evaluation.config import EvaluateConfig
    from alzmri.evaluation.evaluate import evaluate
    from alzmri.io.bids import load_scans
    from alzmri.preprocessing.runner import preprocess_scans
    from alzmri.training.config import TrainConfig
    from alzmri.training.fit import fit
    from alzmri.cli.commands.split import run_split

    out = Path(config.out)
    bids, cache, split, runs = out / "bids", out / "cache", out / "split", out / "runs"
    start = time.perf_counter()

    def stage(n: int, text: str) -> None:
        print(f"[{n}/5 {time.perf_counter() - start:5.0f}s] {text}", flush=True)

    stage(1, f"synthesising {config.subjects} subjects ({', '.join(config.classes)}; atrophy x{config.atrophy_scale:g}) → {bids}")
    synthesize_cohort(
        SynthConfig(
            subjects=config.subjects,
            classes=config.classes,
            voxel_size=config.voxel_size,
            atrophy_scale=config.atrophy_scale,
            seed=config.seed,
            workers=config.workers,
        ),
        bids,
        progress=True,
    )
    stage(2, f"preprocessing to {config.size}³ → {cache}")
    scans = load_scans(bids)
    manifest = preprocess_scans(scans, cache, DEMO_PREPROCESS.model_copy(update={"size": config.size, "spacing": config.spacing}), workers=config.workers)
    if (manifest["warnings"].fillna("") != "").any():
        print("  (expected here: the synthetic brains are grown from the MNI152 template, ~1,880 ml, larger than most adult "
              "brains, so QC flags the biggest of them as outside the adult range)")
    stage(3, f"subject-level split {config.ratios} → {split}")
    run_split(SplitConfig(source=bids, out=split, ratios=config.ratios, seed=config.seed))
    stage(4, f"training {config.model} → {runs}")
    run_dir = fit(
        TrainConfig(cache=cache, split=split, out=runs, model=config.model, epochs=config.epochs, lr=config.lr, dropout=config.dropout, seed=config.seed)
    )
    stage(5, "evaluating the best-validation-loss checkpoint on the held-out test subjects")
    metrics = evaluate(EvaluateConfig(checkpoint=run_dir / "checkpoints" / "best-loss.ckpt", cache=cache, split=split))
    print_metrics(metrics)
    print(f"REPORT: {Path(metrics['report']).resolve()}  (open in a browser: metrics with 95 % CIs, ROC/PR/calibration, PPV/NPV)")
    print(
        f"done in {time.perf_counter() - start:.0f}s — held-out test subjects only; synthetic data with AD atrophy x{config.atrophy_scale:g}\n"
        f"  cohort:       {bids}\n  cache:        {cache}\n  split:        {split}\n"
        f"  run:          {run_dir}  (config.json, metrics.csv, curves.png, checkpoints/)\n"
        f"  test results: {metrics['out']}  (predictions.tsv, metrics.json, PNG figures)\n"
        f"  MLflow:       mlflow ui --backend-store-uri sqlite:///{(runs / 'mlflow.db').resolve()}\n"
        f"  TensorBoard:  tensorboard --logdir {runs}\n"
        f"  next:         alzmri cv {cache} --folds 3 --epochs {config.epochs} --lr {config.lr:g} --dropout {config.dropout:g} --out {out / 'cv'}\n"
        f"  explain:      alzmri explain {run_dir} --cache {cache} --split {split} --truth {bids / 'derivatives' / 'synth'} --regions --target true --method occlusion --occlusion-size 8\n"
        f"  serve:        alzmri serve {run_dir / 'checkpoints' / 'best-loss.ckpt'}  (a page at http://127.0.0.1:8000/: upload a scan of {bids})"
    )
    return metrics
