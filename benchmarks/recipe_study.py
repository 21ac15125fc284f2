"""Does a training recipe leave chance early, and for how many seeds? (issue 13, item 8)

Usage (from the repository root, after ``make setup``)::

    .venv/bin/python benchmarks/recipe_study.py                          # every recipe, seeds 0-4
    .venv/bin/python benchmarks/recipe_study.py --recipes default,demo --seeds 0,1 --epochs 10

A hard-but-learnable synthetic cohort (``alzmri synth``: CN/AD, one session per subject, AD
atrophy x ``--atrophy`` — weak next to the demo's x3 —, the synthetic scanners' contrast, bias
and noise left in because N4 is skipped) is preprocessed like the demo (2 mm, 48³) and split
70/15/15 by subject. Each recipe trains its model (``alzmri train``'s default, ``resnet10_3d``,
unless it names another) from each seed for ``--epochs`` epochs without early stopping. A run *has left chance* at the first epoch whose training loss
is below 0.60 (chance is ln 2 = 0.693 with class weights) and whose validation balanced accuracy
is at least 0.65; the table gives that epoch per seed and the share of seeds that left chance
within the first 5 epochs; the same with the validation loss (eval mode) in place of the
training loss is given beside it, and the eval-mode val and test ROC AUC of each run's
best-validation-loss checkpoint (leaving chance on validation is worth nothing if test stays at chance). Runs are cached in ``--out`` (re-running resumes).
Writes ``recipe_study.json`` and ``recipe_curves.png`` under ``benchmarks/results/recipe_study``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
LEFT_CHANCE_LOSS = 0.60
LEFT_CHANCE_BACC = 0.65
WITHIN = 5

# Settings over TrainConfig's defaults; "default" is whatever 'alzmri train' does now.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    # liu_cnn_compact, the default until this study (every setting below over TrainConfig's defaults).
    "liu": {"model": "liu_cnn_compact"},
    "demo": {"model": "liu_cnn_compact", "lr": 1e-3, "dropout": 0.2},
    "lr1e-3": {"model": "liu_cnn_compact", "lr": 1e-3},
    "lr3e-3": {"model": "liu_cnn_compact", "lr": 3e-3},
    "warmup": {"model": "liu_cnn_compact", "lr": 1e-3, "warmup_epochs": 2},
    "no-class-weights": {"model": "liu_cnn_compact", "class_weights": False},
    "no-augment": {"model": "liu_cnn_compact", "augment": False},
    "dropout0.2": {"model": "liu_cnn_compact", "dropout": 0.2},
    "pool-head": {"model": "liu_cnn_compact", "head": "pool"},
    "pool-head-lr1e-3": {"model": "liu_cnn_compact", "head": "pool", "lr": 1e-3},
    "no-regularisation": {"model": "liu_cnn_compact", "augment": False, "dropout": 0.0},
    "batch4": {"model": "liu_cnn_compact", "batch_size": 4},
    "no-regularisation-lr1e-3": {"model": "liu_cnn_compact", "augment": False, "dropout": 0.0, "lr": 1e-3},
    "no-augment-dropout0.2-lr1e-3": {"model": "liu_cnn_compact", "augment": False, "dropout": 0.2, "lr": 1e-3},
    "no-regularisation-width2": {"model": "liu_cnn_compact", "augment": False, "dropout": 0.0, "width": 2},
    "no-regularisation-warmup": {"model": "liu_cnn_compact", "augment": False, "dropout": 0.0, "lr": 1e-3, "warmup_epochs": 2},
    "sgd-no-regularisation": {"model": "liu_cnn_compact", "augment": False, "dropout": 0.0, "optimizer": "sgd", "lr": 0.01},
    # MONAI's 3D ResNet-10 (batch norm, residual blocks, global pooling): the default since this study.
    "resnet10-no-augment": {"model": "resnet10_3d", "augment": False},
    "resnet10-lr1e-3": {"model": "resnet10_3d", "lr": 1e-3},
    "resnet10-dropout0": {"model": "resnet10_3d", "dropout": 0.0},
}


def variant_tag(preprocessing: dict[str, Any]) -> str:
    """``-<setting>-<value>...`` naming a preprocessing variant's cache and runs ("" for the demo's)."""
    return "".join(f"-{k}-{v}" for k, v in sorted(preprocessing.items()))


def build_cohort(out: Path, subjects: int, atrophy: float, workers: int, preprocessing: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Synthesise, preprocess and split the study cohort (each step resumes).

    ``preprocessing`` overrides the demo's settings (e.g. ``{"zero_background": False}``, the
    preprocessing before this study); such a cache goes to ``cache-<setting>-<value>...``.
    """
    from alzmri.cli.commands.demo import DEMO_PREPROCESS
    from alzmri.cli.commands.split import run_split
    from alzmri.data.config import SplitConfig
    from alzmri.data.synth import SynthConfig, synthesize_cohort
    from alzmri.io.bids import load_scans
    from alzmri.preprocessing.runner import preprocess_scans

    preprocessing = preprocessing or {}
    bids, cache, split = out / "bids", out / f"cache{variant_tag(preprocessing)}", out / "split"
    synthesize_cohort(SynthConfig(subjects=subjects, classes=["CN", "AD"], sessions=(1, 1), voxel_size=2.0, atrophy_scale=atrophy, seed=0, workers=workers), bids, progress=True)
    preprocess_scans(load_scans(bids), cache, DEMO_PREPROCESS.model_copy(update={"size": 48, "spacing": 2.0, **preprocessing}), workers=workers, report=False)
    if not (split / "train.tsv").is_file():
        run_split(SplitConfig(source=bids, out=split, ratios=(0.7, 0.15, 0.15), seed=0))
    return cache, split


def left_chance_at(metrics: pd.DataFrame, loss: str = "train_loss") -> int | None:
    """First epoch with ``loss`` < 0.60 and validation balanced accuracy >= 0.65, or None.

    ``train_loss`` (the default: what the issue saw sit at 0.69 on real data) is the epoch mean
    in training mode (dropout, augmentation, batch statistics); ``val_loss`` is in eval mode.
    """
    hit = metrics[(metrics[loss] < LEFT_CHANCE_LOSS) & (metrics["val_bacc"] >= LEFT_CHANCE_BACC)]
    return None if hit.empty else int(hit["epoch"].iloc[0])


def held_out_auc(run: Path, cache: Path, split: Path) -> dict[str, float]:
    """Eval-mode ROC AUC of the run's best-validation-loss checkpoint on val and test (does it generalise?)."""
    from sklearn.metrics import roc_auc_score

    from alzmri.data.dataset import select_scans
    from alzmri.data.splits import read_split_dir
    from alzmri.evaluation.predict import load_classifier, predict_cached
    from alzmri.preprocessing.cache import read_cache

    scans, _ = read_cache(cache)
    splits = read_split_dir(split)
    model, hparams = load_classifier(run / "checkpoints" / "best-loss.ckpt")
    out = {}
    for name in ("val", "test"):
        table = predict_cached(model, hparams["classes"], select_scans(scans, splits[name], name))
        out[name] = round(float(roc_auc_score(table["diagnosis"] == "AD", table["prob_AD"])), 3)
    return out


def train_one(cache: Path, split: Path, runs: Path, recipe: str, seed: int, epochs: int, threads: int, tag: str = "") -> pd.DataFrame:
    from alzmri.training.config import TrainConfig
    from alzmri.training.fit import fit

    config = TrainConfig(cache=cache, split=split, out=runs, run_name=f"{recipe}{tag}-s{seed}-e{epochs}", epochs=epochs, patience=epochs, seed=seed,
                         progress=False, threads=threads, trackers=[], **RECIPES[recipe])  # fmt: skip
    run = fit(config)
    metrics = pd.read_csv(run / "metrics.csv")
    metrics.attrs["auc"] = held_out_auc(run, cache, split)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/alzmri-recipe-study"))
    parser.add_argument("--recipes", default=",".join(RECIPES))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--subjects", type=int, default=150)
    parser.add_argument("--atrophy", type=float, default=1.5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep-background", action="store_true", help="preprocess with zero_background=False (as before this study)")
    parser.add_argument("--normalization", choices=["zscore", "minmax"], default="zscore")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "recipe_study")
    args = parser.parse_args()
    preprocessing = ({"zero_background": False} if args.keep_background else {}) | ({"normalization": "minmax"} if args.normalization == "minmax" else {})
    cache, split = build_cohort(args.out, args.subjects, args.atrophy, workers=args.threads, preprocessing=preprocessing)
    tag = variant_tag(preprocessing)
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, Any] = {"cohort": {"subjects": args.subjects, "atrophy_scale": args.atrophy, "size": 48, "epochs": args.epochs, "preprocessing": preprocessing}, "recipes": {}}
    curves: dict[str, list[pd.DataFrame]] = {}
    for recipe in args.recipes.split(","):
        start = time.perf_counter()
        runs = [train_one(cache, split, args.out / "runs", recipe, seed, args.epochs, args.threads, tag) for seed in seeds]
        curves[recipe] = runs
        at = [left_chance_at(m) for m in runs]
        at_val = [left_chance_at(m, "val_loss") for m in runs]
        results["recipes"][recipe] = {
            "settings": RECIPES[recipe],
            "left_chance_at_epoch": dict(zip(map(str, seeds), at, strict=True)),
            "share_within_5": sum(a is not None and a < WITHIN for a in at) / len(at),
            "val_left_chance_at_epoch": dict(zip(map(str, seeds), at_val, strict=True)),
            "val_share_within_5": sum(a is not None and a < WITHIN for a in at_val) / len(at_val),
            "best_val_bacc": [round(float(m["val_bacc"].max()), 3) for m in runs],
            "train_loss_epoch_4": [round(float(m["train_loss"].iloc[min(4, len(m) - 1)]), 3) for m in runs],
            "best_loss_val_auc": [m.attrs["auc"]["val"] for m in runs],
            "best_loss_test_auc": [m.attrs["auc"]["test"] for m in runs],
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(recipe, json.dumps(results["recipes"][recipe]), flush=True)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "recipe_study.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(curves, args.results / "recipe_curves.png")
    print("\n| recipe | settings | train loss < 0.60: epoch per seed | within 5 | val loss < 0.60: epoch per seed | within 5 | best val bal. acc. per seed "
          "| test AUC per seed (best-loss checkpoint) |\n|---|---|---|---|---|---|---|---|")
    for recipe, r in results["recipes"].items():
        at = ", ".join("—" if a is None else str(a) for a in r["left_chance_at_epoch"].values())
        at_val = ", ".join("—" if a is None else str(a) for a in r["val_left_chance_at_epoch"].values())
        print(f"| {recipe} | {r['settings'] or 'train defaults'} | {at} | {r['share_within_5']:.0%} | {at_val} | {r['val_share_within_5']:.0%} | "
              f"{', '.join(map(str, r['best_val_bacc']))} | {', '.join(map(str, r['best_loss_test_auc']))} |")


def plot(curves: dict[str, list[pd.DataFrame]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(curves)
    cols = min(n, 4)
    fig, axes = plt.subplots(math.ceil(n / cols), cols, figsize=(4 * cols, 3 * math.ceil(n / cols)), squeeze=False, sharey=True)
    for ax, (recipe, runs) in zip(axes.flat, curves.items(), strict=False):
        for m in runs:
            ax.plot(m["epoch"], m["train_loss"], lw=1)
        ax.axhline(math.log(2), color="grey", ls="--", lw=0.8)
        ax.set(title=recipe, xlabel="epoch", ylabel="train loss", ylim=(0, 1.2))
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
