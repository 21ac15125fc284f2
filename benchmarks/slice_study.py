"""2D slices, done honestly (issue 14): the leakage table, 2D vs 2.5D vs 3D, and the Kaggle 4-class data with its audit.

Usage (from the repository root, after ``make setup``)::

    .venv/bin/python benchmarks/slice_study.py --results /tmp/slice-results            # everything
    .venv/bin/python benchmarks/slice_study.py --parts leakage,dims --epochs 10       # synthetic parts only
    .venv/bin/python benchmarks/slice_study.py --parts kaggle --kaggle ../shared/data/kaggle-alzheimer-4class

**leakage** — the hard synthetic cohort of ``recipe_study.py`` (150 subjects, CN/AD, atrophy
×1.5, one session each, 48³) is cut into 9 adjacent axial slices per scan (``alzmri slices --step
1``). ``small_cnn_2d`` is trained as much 2D work does it (no augmentation, no dropout, ``--leak-epochs``
epochs, long enough to fit the training slices; the best-validation-*accuracy* checkpoint kept)
under four conditions: a subject-level split (``alzmri split``) and a slice-level split
(``--level slice``), each with the true labels and with *random* labels (the subjects' labels
permuted across subjects before splitting, so all slices of a subject share its random label, as
in Yagis et al. 2021). Each run is scored on its own test split at slice level and at subject
level (mean probability over a subject's test slices), with 95 % subject-bootstrap intervals;
chance is a balanced accuracy of 0.5.

**dims** — on the volumes' own subject split, with ``alzmri train``'s defaults and ``--epochs``:
``small_cnn_2d`` on 2D slices (9 per scan, 2 voxels apart), ``small_cnn_2d`` on 2.5D slices
(``--context 1``), and ``resnet10_3d`` (the default 3D model) on the volumes.

**kaggle** — the "Alzheimer's Dataset (4 class of Images)" with the train/test split it comes
with (val: 10 % of train, per slice, since the training names carry no subject): the near-duplicate
audit (``alzmri slice-audit``), its threshold calibrated twice: on the synthetic cohort's adjacent
slices (known subjects), and on the test half's image sets taken as people; and ``small_cnn_2d``
trained on it, scored on its test half (slice-level accuracy and macro-F1, bootstrap intervals
with each slice its own pseudo-subject).

Everything resumes (runs are cached under ``--out``); results go to ``--results``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

TRAIN = {"model": "small_cnn_2d", "batch_size": 32, "lr": 1e-3, "progress": False, "trackers": [], "seed": 0}


def derived_cache(source: Path, out: Path, change: Any) -> pd.DataFrame:
    """A slice cache whose manifest is ``change(source's manifest)``, sharing the source's arrays through a symlink."""
    from alzmri.data.slices.store import ARRAY_DIR, MANIFEST_FILE, SLICE_CONFIG

    out.mkdir(parents=True, exist_ok=True)
    table = change(pd.read_csv(source / MANIFEST_FILE, sep="\t", dtype=str, keep_default_na=False))
    table.to_csv(out / MANIFEST_FILE, sep="\t", index=False)
    shutil.copy(source / SLICE_CONFIG, out / SLICE_CONFIG)
    if not (out / ARRAY_DIR).exists():
        (out / ARRAY_DIR).symlink_to((source / ARRAY_DIR).resolve())
    return table


def random_label_cache(source: Path, out: Path, seed: int = 0) -> Path:
    """A copy of a slice cache with the subjects' labels permuted across subjects (arrays shared)."""

    def permute(table: pd.DataFrame) -> pd.DataFrame:
        subjects = table.drop_duplicates("participant_id")
        permuted = np.random.default_rng(seed).permutation(subjects["diagnosis"].to_numpy())
        changed = table.assign(diagnosis=table["participant_id"].map(dict(zip(subjects["participant_id"], permuted, strict=True))))
        print(f"random labels: {(changed['diagnosis'] != table['diagnosis']).mean():.0%} of the slices changed label")
        return changed

    derived_cache(source, out, permute)
    return out


def split(source: Path, out: Path, level: str = "subject", ratios=(0.7, 0.15, 0.15)) -> Path:
    from alzmri.cli.commands.split import run_split
    from alzmri.data.config import SplitConfig

    if not (out / "train.tsv").is_file():
        run_split(SplitConfig(source=source, out=out, ratios=ratios, seed=0, level=level))
    return out


def train_and_score(cache: Path, split_dir: Path, runs: Path, name: str, epochs: int, threads: int, checkpoint: str = "best-loss", **settings: Any) -> dict[str, Any]:
    """Train (resumably), evaluate on the test split, return slice/scan- and subject-level balanced accuracy and AUC."""
    from alzmri.evaluation.config import EvaluateConfig
    from alzmri.evaluation.evaluate import evaluate
    from alzmri.training.config import TrainConfig
    from alzmri.training.fit import fit

    start = time.time()
    config = TrainConfig(cache=cache, split=split_dir, out=runs, run_name=name, epochs=epochs, patience=epochs, threads=threads, **(TRAIN | settings))
    run = fit(config)
    seconds = time.time() - start
    # A slice-level split's test slices are of training subjects by construction: scored under the LEAKAGE banner.
    from alzmri.data.splits import split_level

    metrics = evaluate(EvaluateConfig(checkpoint=run / "checkpoints" / f"{checkpoint}.ckpt", cache=cache, split=split_dir, out=run / f"eval-test-{checkpoint}",
                                      allow_seen=split_level(split_dir) == "slice"))  # fmt: skip
    ci, sci = metrics["intervals"], metrics.get("subject_intervals", {})

    def cell(value: float, interval: dict[str, Any] | None) -> list[float | None]:
        interval = interval or {}
        return [round(float(value), 3), _r(interval.get("low")), _r(interval.get("high"))]

    subject = metrics.get("subject_level", {})
    positive = metrics["auc"] and list(metrics["auc"])[-1]
    return {
        "run": name, "checkpoint": checkpoint, "unit": metrics.get("unit", "scan"), "model": config.model, "epochs": epochs, "train_seconds": round(seconds, 1),
        "n_test": metrics["n_scans"], "n_test_subjects": metrics["n_subjects"],
        "balanced_accuracy": cell(metrics["balanced_accuracy"], ci.get("balanced_accuracy")),
        "accuracy": cell(metrics["accuracy"], ci.get("accuracy")), "macro_f1": cell(metrics["macro_f1"], ci.get("macro_f1")),
        "auc": cell(metrics["auc"][positive], ci.get(f"{positive}/auc")) if positive else None,
        "subject_balanced_accuracy": cell(subject["balanced_accuracy"], sci.get("balanced_accuracy")) if subject else None,
        "subject_auc": cell(subject["auc"][positive], sci.get(f"{positive}/auc")) if subject and positive else None,
        "leaky": bool(metrics["audit"]["leaky"]) or metrics.get("split_level") == "slice", "subjects_unknown": metrics.get("subjects_unknown", 0),
    }  # fmt: skip


def _r(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


# The leakage runs follow common 2D practice: every adjacent slice, no augmentation, no dropout, trained long
# enough to fit the training slices, and the checkpoint of the best validation *accuracy* kept.
LEAK = {"augment": False, "dropout": 0.0}


def leakage(out: Path, slices: Path, epochs: int, threads: int) -> list[dict[str, Any]]:
    random = random_label_cache(slices, out / f"{slices.name}-random")
    rows = []
    for labels, cache in (("true", slices), ("random", random)):
        for level in ("subject", "slice"):
            split_dir = split(cache, out / f"split-{slices.name}-{labels}-{level}", level)
            row = train_and_score(cache, split_dir, out / "runs", f"leak-{slices.name}-{labels}-{level}-e{epochs}", epochs, threads, "best-acc", **LEAK)
            metrics = pd.read_csv(out / "runs" / row["run"] / "metrics.csv")
            row["final_train_loss"] = round(float(metrics["train_loss"].iloc[-1]), 4)
            row["best_val_acc"] = round(float(metrics["val_acc"].max()), 3)
            rows.append({"labels": labels, "split": level, **row})
            print(json.dumps(rows[-1]))
    return rows


def dims(out: Path, volumes: Path, volume_split: Path, slices: Path, slices25: Path, epochs: int, threads: int) -> list[dict[str, Any]]:
    rows = []
    for label, cache, settings in (("2D (1 axial slice)", slices, {}), ("2.5D (3 adjacent slices)", slices25, {}),
                                   ("3D (volume)", volumes, {"model": "resnet10_3d", "batch_size": 8, "lr": 3e-4})):  # fmt: skip
        row = train_and_score(cache, volume_split, out / "runs", f"dims-{label.split()[0]}-e{epochs}", epochs, threads, **settings)
        rows.append({"input": label, **row})
        print(json.dumps(rows[-1]))
    return rows


def kaggle(out: Path, source: Path, calibration: Path, epochs: int, threads: int, size: int, resnet_epochs: int = 0) -> dict[str, Any]:
    from alzmri.data.slices.audit_run import run_slice_audit
    from alzmri.data.slices.config import ImportSlicesConfig, SliceAuditConfig
    from alzmri.data.slices.from_images import import_slices

    cache = out / f"kaggle-{size}"
    start = time.time()
    imported = import_slices(ImportSlicesConfig(source=source, out=cache, names="slice_set", size=size, progress=False))
    imported["seconds"] = round(time.time() - start, 1)
    audit = run_slice_audit(SliceAuditConfig(cache=cache, out=out / "kaggle-audit", calibrate=calibration))
    # A second calibration inside the data: the test half's '<slice> (<n>).jpg' names, taking each class's image
    # set n as one person (an assumption the names suggest, not a stated fact).
    sets = image_set_cache(cache, out / "kaggle-test-sets")
    audit_sets = run_slice_audit(SliceAuditConfig(cache=cache, out=out / "kaggle-audit-sets", calibrate=sets, max_gap=2))
    nearest = nearest_neighbour_report(out / "kaggle-audit-sets" / "audit.tsv", imported["classes"], out / "kaggle-1nn")
    rows = [train_and_score(cache, cache / "split", out / "runs", f"kaggle-{size}-e{epochs}", epochs, threads),
            train_and_score(cache, cache / "split", out / "runs", f"kaggle-{size}-e{epochs}-unweighted", epochs, threads, class_weights=False)]
    if resnet_epochs:
        rows.append(train_and_score(cache, cache / "split", out / "runs", f"kaggle-{size}-resnet18-e{resnet_epochs}-unweighted", resnet_epochs, threads,
                                    model="resnet18_2d", class_weights=False, lr=3e-4))  # fmt: skip
    for row in rows:  # accuracy on the test slices the audit flags vs the others
        predictions = pd.read_csv(out / "runs" / row["run"] / f"eval-test-{row['checkpoint']}" / "predictions.tsv", sep="\t")
        flags = pd.read_csv(out / "kaggle-audit-sets" / "audit.tsv", sep="\t")[["slice_id", "flagged"]]
        merged = predictions[predictions["split"] == "test"].merge(flags, on="slice_id")
        correct = merged["predicted"] == merged["diagnosis"]
        row["accuracy_flagged"] = round(float(correct[merged["flagged"]].mean()), 3)
        row["accuracy_not_flagged"] = round(float(correct[~merged["flagged"]].mean()), 3)
    return {"import": {k: v for k, v in imported.items() if k != "out"}, "audit": audit, "audit_image_sets": audit_sets,
            "nearest_neighbour": nearest, "models": rows}  # fmt: skip


def nearest_neighbour_report(audit_tsv: Path, classes: list[str], out: Path) -> dict[str, Any]:
    """A model that learns nothing: each test slice gets the label of its most similar training slice (the audit's match).

    Scored with alzmri's own report (one-hot probabilities), so its numbers are comparable with a network's.
    """
    from alzmri.evaluation.predictions import validate_predictions
    from alzmri.evaluation.report_html import write_report

    table = pd.read_csv(audit_tsv, sep="\t", dtype=str, keep_default_na=False)
    predictions = table[["participant_id", "session_id", "slice_id", "diagnosis"]].copy()
    for c in classes:
        predictions[f"prob_{c}"] = (table["match_diagnosis"] == c).astype(float)
    validate_predictions(predictions, str(audit_tsv))
    report = write_report(predictions, classes, out, title="1-nearest-neighbour lookup (NCC) on the Kaggle test half", subset=None, threshold_split=None)
    level, ci = report["scan_level"], report["intervals"]["scan_level"]
    flagged = table["flagged"].str.lower() == "true"
    correct = table["match_diagnosis"] == table["diagnosis"]
    return {"accuracy": [round(level["accuracy"], 3), _r(ci["accuracy"]["low"]), _r(ci["accuracy"]["high"])],
            "balanced_accuracy": [round(level["balanced_accuracy"], 3), _r(ci["balanced_accuracy"]["low"]), _r(ci["balanced_accuracy"]["high"])],
            "macro_f1": [round(level["macro_f1"], 3), _r(ci["macro_f1"]["low"]), _r(ci["macro_f1"]["high"])],
            "accuracy_flagged": round(float(correct[flagged].mean()), 3), "accuracy_not_flagged": round(float(correct[~flagged].mean()), 3)}  # fmt: skip


def image_set_cache(cache: Path, out: Path) -> Path:
    """The test half's slices with an image set, as a slice cache whose subjects are (class, image set)."""

    def as_people(table: pd.DataFrame) -> pd.DataFrame:
        table = table[(table["given_split"] == "test") & (table["image_set"] != "")].copy()
        return table.assign(participant_id=table["diagnosis"] + "-set" + table["image_set"], subject_known="True")

    table = derived_cache(cache, out, as_people)
    print(f"image-set calibration: {len(table)} test slices in {table['participant_id'].nunique()} (class, set) groups")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/alzmri-slices"))
    parser.add_argument("--cohort", type=Path, default=Path("/tmp/alzmri-rs2"), help="recipe_study.py's cohort folder (made if missing)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "slices")
    parser.add_argument("--parts", default="leakage,dims,kaggle")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--leak-epochs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kaggle", type=Path, default=ROOT.parent / "shared" / "data" / "kaggle-alzheimer-4class")
    parser.add_argument("--kaggle-size", type=int, default=128)
    parser.add_argument("--resnet-epochs", type=int, default=0, help="also train resnet18_2d from scratch on the Kaggle data for this many epochs (0: not)")
    args = parser.parse_args()

    from alzmri.data.slices.config import SlicesConfig
    from alzmri.data.slices.from_volumes import slices_from_volumes
    from recipe_study import build_cohort

    args.out.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    volumes, volume_split = build_cohort(args.cohort, 150, 1.5, workers=2)
    slices, slices25 = args.out / "slices", args.out / "slices-25d"
    slices_from_volumes(SlicesConfig(cache=volumes, out=slices, plane="axial", n=9, step=2, progress=False))
    slices_from_volumes(SlicesConfig(cache=volumes, out=slices25, plane="axial", n=9, step=2, context=1, progress=False))
    parts = set(args.parts.split(","))
    result_path = args.results / "slice_study.json"
    results = json.loads(result_path.read_text()) if result_path.is_file() else {}
    results["settings"] = {"epochs": args.epochs, "train": TRAIN, "slices": "axial, 9 per scan, 2 voxels apart, 48x48", "cohort": "recipe_study.py (150 subjects, atrophy x1.5)"}
    adjacent = args.out / "slices-adjacent"  # the leakage slices; also the audit's calibration (neighbours 1-3 slices apart)
    slices_from_volumes(SlicesConfig(cache=volumes, out=adjacent, plane="axial", n=9, step=1, progress=False))
    if "leakage" in parts:
        results["leakage"] = leakage(args.out, adjacent, args.leak_epochs, args.threads)
        results["settings"]["leakage"] = {"slices": "axial, 9 adjacent per scan", "epochs": args.leak_epochs, "checkpoint": "best-acc", **LEAK}
    if "dims" in parts:
        results["dims"] = dims(args.out, volumes, volume_split, slices, slices25, args.epochs, args.threads)
    if "kaggle" in parts:
        results["kaggle"] = kaggle(args.out, args.kaggle, adjacent, args.epochs, args.threads, args.kaggle_size, args.resnet_epochs)
    result_path.write_text(json.dumps(results, indent=2) + "\n")
    if results.get("leakage"):
        plot_leakage(results["leakage"], args.results / "leakage.png")
    print(f"results: {result_path}")


def plot_leakage(rows: list[dict[str, Any]], path: Path) -> None:
    """Balanced accuracy (slice and subject level, 95 % CI) of the four leakage conditions, chance marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    labels = [f"{r['labels']} labels\n{r['split']}-level split" for r in rows]
    x = np.arange(len(rows))
    for offset, key, name, colour in ((-0.18, "balanced_accuracy", "slice level", "tab:blue"), (0.18, "subject_balanced_accuracy", "subject level", "tab:orange")):
        values = np.array([r[key][0] for r in rows])
        low = np.array([r[key][1] if r[key][1] is not None else r[key][0] for r in rows])
        high = np.array([r[key][2] if r[key][2] is not None else r[key][0] for r in rows])
        ax.bar(x + offset, values, 0.34, color=colour, label=name, yerr=[values - low, high - values], capsize=3)
    ax.axhline(0.5, color="black", ls="--", lw=1, label="chance")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test balanced accuracy")
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("small_cnn_2d on synthetic slices: slice-level splits leak", fontsize=9)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    main()
