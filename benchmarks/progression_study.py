"""Disease-progression generators judged against the true future (issue 15): synthetic longitudinal 2D, and Kaggle unpaired.

Usage (from the repository root, after ``make setup``)::

    .venv/bin/python benchmarks/progression_study.py --out /tmp/prog --results /tmp/prog-results
    .venv/bin/python benchmarks/progression_study.py --parts kaggle --kaggle ../shared/data/kaggle-alzheimer-4class

Every step is an ``alzmri`` command (printed before it runs), so the study is what a user would
type. Everything resumes: a finished step is skipped when its output exists.

**synthetic** — ``alzmri synth --longitudinal`` (every subject visited at CDR 0, 0.5, 1 and 2 at
its own pace; atrophy ×4, so that one stage's change moves region borders by about a pixel of the
96² slices: at ×2 and 64² the per-stage change was sub-pixel and even the mean change did not beat
no change; cortical thinning ×0.3 on top, i.e. ×1.2: at ×4 the temporal and parietal cortex reach the
0.9 thinning limit by the second stage and show no further change), preprocessed with N4 and MNI registration onto the template grid (no crop, so every
visit of a subject shares one grid), cut into axial slices around the hippocampi, split by subject.
A 4-stage classifier (``small_cnn_2d``) is trained on the same split. Progression runs: alzmri's
default (paired, residual, L1, ROI), the same without ROI, the seed's recipe (no residual, no
L1: adversarial loss only) with and without ROI, L1 regression alone (no adversarial loss), and the default with an
identity term |G(x) − x| of weight 10 or 30 (a sparsity prior on the change map). Each is scored by ``alzmri evaluate-progression``
on the test subjects against their true later visits, beside no change and mean change.

**kaggle** — the Kaggle 4-class OASIS slices (``../shared/data``), imported at ``--kaggle-size``,
with the train/test split they come with; no subject is followed, so the run is unpaired (cycle
consistency) and there is no true future; FID on the classifier's features and the predicted stage
per chain step are what can be reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ALZMRI = str(ROOT / ".venv" / "bin" / "alzmri")

SYNTH = ["--longitudinal", "--subjects", "60", "--voxel-size", "2", "--atrophy-scale", "4", "--thinning-scale", "0.3", "--seed", "15"]
PREPROCESS = ["--steps", "reorient,resample,n4,skull_strip,register,resize,normalize", "--skull-strip", "none",
              "--interpolation", "linear", "--size", "96", "--spacing", "2"]  # fmt: skip
SLICES = ["--plane", "axial", "--n", "3", "--step", "4", "--structure", "Hippocampus"]
RUNS = {  # every recipe spelled out, so a change of alzmri's defaults does not change what a name means
    "identity-30": ["--identity-weight", "30"],  # alzmri's default since 2026-12-02 (paired, residual, L1 100, identity 30, ROI)
    "identity-30-no-roi": ["--identity-weight", "30", "--no-roi"],
    "default": ["--identity-weight", "0"],  # the default before: no identity term
    "default-no-roi": ["--identity-weight", "0", "--no-roi"],
    "seed-roi": ["--identity-weight", "0", "--no-residual", "--l1-weight", "0"],
    "seed": ["--identity-weight", "0", "--no-residual", "--l1-weight", "0", "--no-roi"],
    "l1-only": ["--identity-weight", "0", "--adversarial-weight", "0"],
    "identity-10": ["--identity-weight", "10"],
}
LABELS = {"identity-30": "default (identity 30)", "identity-30-no-roi": "default, no ROI", "default": "no identity (the default before)",
          "default-no-roi": "no identity, no ROI"}  # fmt: skip


def alzmri(*args: Any, done: Path | None = None) -> float:
    """Run one alzmri command (skipped when ``done`` exists); returns its seconds."""
    if done is not None and done.exists():
        print(f"[skip] alzmri {' '.join(map(str, args))}", flush=True)
        return 0.0
    command = [ALZMRI, *map(str, args)]
    print("$ alzmri " + " ".join(map(str, args)), flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return round(time.perf_counter() - start, 1)


def classifier_checkpoint(folder: Path) -> Path:
    found = sorted(folder.glob("*/checkpoints/best-loss.ckpt"))
    if not found:
        raise SystemExit(f"no classifier checkpoint under {folder}")
    return found[0]


def synthetic(out: Path, epochs: int, runs: list[str], classifier_epochs: int) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    seconds["synth"] = alzmri("synth", out / "bids", *SYNTH, "--workers", "0", done=out / "bids" / "labels.tsv")
    seconds["preprocess"] = alzmri("preprocess", out / "bids", out / "cache", *PREPROCESS, "--no-progress", done=out / "cache" / "manifest.tsv")
    seconds["slices"] = alzmri("slices", out / "cache", out / "slices", *SLICES, "--no-progress", done=out / "slices" / "manifest.tsv")
    seconds["split"] = alzmri("split", out / "slices", out / "split", "--ratios", "0.6,0.2,0.2", "--seed", "0", done=out / "split" / "test.tsv")
    seconds["classifier"] = alzmri("train", out / "slices", out / "split", "--model", "small_cnn_2d", "--epochs", classifier_epochs, "--out", out / "classifier",
                                   "--trackers", "mlflow", "--no-progress", done=out / "classifier" / "done")  # fmt: skip
    (out / "classifier" / "done").touch()
    classifier = classifier_checkpoint(out / "classifier")
    seconds["classifier_eval"] = alzmri("evaluate", classifier, out / "slices", out / "split", done=classifier.parent.parent / "eval-test" / "metrics.json")
    results: dict[str, Any] = {"seconds": seconds, "runs": {}}
    for name in runs:
        run = out / "runs" / name
        seconds[f"train {name}"] = alzmri("train-progression", out / "slices", out / "split", "--out", out / "runs", "--run-name", name, "--epochs", epochs,
                                          "--no-progress", *RUNS[name], done=run / "result.json")  # fmt: skip
        for folder, level in (("eval-test", "0.1"), ("eval-test-core", "0.5")):  # planted change, and its core (boundary moved ≥ 1.5 mm, cortex thinned ≥ 25 %)
            summary = run / folder / "summary.json"
            done = summary if summary.is_file() and "planted" in json.loads(summary.read_text()) else None  # made before --truth: again
            seconds[f"evaluate {name} {level}"] = alzmri("evaluate-progression", run, "--cache", out / "slices", "--split", out / "split", "--classifier", classifier,
                                                         "--truth", out / "bids" / "derivatives" / "synth", "--truth-level", level, "--out", run / folder,
                                                         done=done or run / folder / "absent")  # fmt: skip
        results["runs"][name] = json.loads((run / "eval-test" / "summary.json").read_text())
    results["classifier"] = json.loads((classifier.parent.parent / "eval-test" / "metrics.json").read_text())
    return results


def kaggle(out: Path, source: Path, size: int, epochs: int, steps: int, classifier_epochs: int) -> dict[str, Any]:
    seconds: dict[str, float] = {}
    cache = out / f"kaggle-{size}"
    seconds["import"] = alzmri("import-slices", source, cache, "--names", "slice_set", "--size", size, "--no-progress", done=cache / "manifest.tsv")
    split = cache / "split"
    seconds["classifier"] = alzmri("train", cache, split, "--model", "small_cnn_2d", "--epochs", classifier_epochs, "--out", out / "kaggle-classifier",
                                   "--trackers", "mlflow", "--no-progress", done=out / "kaggle-classifier" / "done")  # fmt: skip
    (out / "kaggle-classifier" / "done").touch()
    classifier = classifier_checkpoint(out / "kaggle-classifier")
    run = out / "kaggle-runs" / "unpaired"
    seconds["train"] = alzmri("train-progression", cache, split, "--out", out / "kaggle-runs", "--run-name", "unpaired", "--pairing", "unpaired", "--epochs", epochs,
                              "--steps-per-epoch", steps, "--no-progress", done=run / "result.json")  # fmt: skip
    seconds["evaluate"] = alzmri("evaluate-progression", run, "--cache", cache, "--split", split, "--classifier", classifier, done=run / "eval-test" / "summary.json")
    return {"seconds": seconds, "summary": json.loads((run / "eval-test" / "summary.json").read_text())}


def _pooled(pairs_tsv: Path, columns: list[str]) -> dict[str, dict[str, float]]:
    """Subject-bootstrap means of ``columns`` over all one-step pairs of all transitions (the seed's one-table view)."""
    import pandas as pd

    from alzmri.evaluation.stats.bootstrap import bootstrap_many, mean_metric

    table = pd.read_csv(pairs_tsv, sep="\t")
    for metric in ("psnr", "psnr_brain", "ssim", "mse"):
        table[f"{metric}__generator_minus_no_change"] = table[f"{metric}__generator"] - table[f"{metric}__no_change"]
    wanted = [c for c in columns if c in table.columns]
    return bootstrap_many({c: mean_metric(c) for c in wanted}, table, n_resamples=2000, seed=0)


def _ci(v: dict[str, float] | None, digits: int = 3) -> str:
    return "–" if not v else f"{v['estimate']:.{digits}f} [{v['low']:.{digits}f}, {v['high']:.{digits}f}]"


def _estimate(block: dict[str, Any], key: str) -> str:
    value = (block.get(key) or {}).get("estimate")
    return "–" if value is None else f"{value:.2f}"


def _planted_table(out: Path, runs: list[str]) -> list[str]:
    """Enrichment of the change maps where the truth planted the change (one step per transition, and the chain's three steps)."""
    lines = ["", "Where the change falls: enrichment (mean |change| where the truth planted change between the two visits over mean |change| "
             "in the brain; 1 = spread evenly), generated / true change, at planted strength ≥ 0.1 (all planted change) and ≥ 0.5 (its core):", "",
             "| recipe | level | one step: t1 | t2 | t3 | chain: 1 step | 2 steps | 3 steps |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in runs:
        for folder, level in (("eval-test", "≥ 0.1"), ("eval-test-core", "≥ 0.5")):
            summary = json.loads((out / "runs" / name / folder / "summary.json").read_text())
            cells = [f"{_ci(b.get('enrichment_planted__generator'), 2)} / {_estimate(b, 'enrichment_planted__truth')}"
                     for block in (summary["transitions"], summary["chain"]) for b in block.values()]  # fmt: skip
            lines.append(f"| {LABELS.get(name, name)} | {level} | {' | '.join(cells)} |")
    return lines + [""]


def synthetic_tables(out: Path, runs: list[str]) -> str:
    """Markdown: the seed's table (FID, MSE, PSNR, SSIM per recipe, one step pooled over transitions) and the chain's."""
    lines = ["| recipe | FID (classifier features) ↓ | MSE ↓ | PSNR dB ↑ | SSIM ↑ | MS-SSIM ↑ | PSNR − no change | stage rises at every step |", "|---|---|---|---|---|---|---|---|"]
    baseline_done = False
    for name in runs:
        folder = out / "runs" / name / "eval-test"
        summary = json.loads((folder / "summary.json").read_text())
        cols = [f"{m}__{k}" for m in ("mse", "psnr", "ssim", "ms_ssim") for k in ("generator", "no_change", "mean_change")] + ["psnr__generator_minus_no_change"]
        pooled = _pooled(folder / "pairs.tsv", cols)
        steps = [r for r in summary["fid"] if r["kind"] == "one step" and r["features"] == "classifier"]
        fid = {k: sum(r[f"fid_{k}"] for r in steps) / len(steps) for k in ("generator", "no_change", "mean_change")}
        if not baseline_done:
            for kind, label in (("no_change", "no change (the input)"), ("mean_change", "mean change (input + average training change)")):
                lines.append(f"| {label} | {fid[kind]:.2f} | {_ci(pooled[f'mse__{kind}'], 4)} | {_ci(pooled[f'psnr__{kind}'], 2)} | {_ci(pooled[f'ssim__{kind}'])} | {_ci(pooled[f'ms_ssim__{kind}'])} | – | – |")
            baseline_done = True
        stage = summary["predicted_stage"]
        lines.append(f"| {LABELS.get(name, name)} (best epoch {json.loads((out / 'runs' / name / 'result.json').read_text())['best_epoch']}) | {fid['generator']:.2f} | "
                     f"{_ci(pooled['mse__generator'], 4)} | {_ci(pooled['psnr__generator'], 2)} | {_ci(pooled['ssim__generator'])} | {_ci(pooled['ms_ssim__generator'])} | "
                     f"{_ci(pooled['psnr__generator_minus_no_change'], 2)} | {_ci(stage['advances_every_step'], 2)} |")  # fmt: skip
    lines += ["", "The chain from the NonDemented image, against the true visit at each stage (PSNR gain over no change, dB; "
              "classifier's expected stage, 0 = NonDemented ... 3 = ModerateDemented; enrichment of the accumulated change after three steps, "
              "generated / true):", "",
              "| recipe | PSNR gain, 1 step | 2 steps | 3 steps | expected stage after 1 / 2 / 3 steps | ventricles | hippocampus + amygdala | entorhinal + parahippocampal | cortex |",
              "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in runs:
        summary = json.loads((out / "runs" / name / "eval-test" / "summary.json").read_text())
        chain, stage = summary["chain"], summary["predicted_stage"]["per_step"]
        gains = [_ci(chain[s].get("psnr__generator_minus_no_change"), 2) for s in list(chain)]
        expected = " / ".join(f"{stage[str(k)]['expected_stage']['estimate']:.2f}" if str(k) in stage else f"{stage[k]['expected_stage']['estimate']:.2f}" for k in (1, 2, 3))
        last = chain[list(chain)[-1]]
        regions = [f"{last[f'enrichment_{r}__generator']['estimate']:.2f} / {last[f'enrichment_{r}__truth']['estimate']:.2f}" if f"enrichment_{r}__generator" in last else "–"
                   for r in ("ventricles", "hippocampus_amygdala", "entorhinal_parahippocampal", "cortex")]  # fmt: skip
        lines.append(f"| {LABELS.get(name, name)} | {' | '.join(gains)} | {expected} | {' | '.join(regions)} |")
    lines += _planted_table(out, runs)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/alzmri-progression"))
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "progression")
    parser.add_argument("--parts", default="synthetic,kaggle")
    parser.add_argument("--prefix", default="synthetic", help="name prefix of the synthetic part's result files")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--runs", default=",".join(RUNS))
    parser.add_argument("--classifier-epochs", type=int, default=30)
    parser.add_argument("--kaggle", type=Path, default=ROOT.parent / "shared" / "data" / "kaggle-alzheimer-4class")
    parser.add_argument("--kaggle-size", type=int, default=64)
    parser.add_argument("--kaggle-epochs", type=int, default=10)
    parser.add_argument("--kaggle-steps", type=int, default=40, help="batches per transition per epoch (unpaired sets are large)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    parts = args.parts.split(",")
    if "synthetic" in parts:
        result = synthetic(args.out, args.epochs, args.runs.split(","), args.classifier_epochs)
        (args.results / f"{args.prefix}.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
        for name in result["runs"]:
            shutil.copy(args.out / "runs" / name / "eval-test" / "report.md", args.results / f"{args.prefix}-{name}.md")
        first = next(iter(result["runs"]))  # the pictures of the first recipe named (they are large)
        for figure in ("chain_examples.png", "predicted_stage.png"):
            shutil.copy(args.out / "runs" / first / "eval-test" / figure, args.results / f"{args.prefix}-{first}-{figure}")
        (args.results / f"{args.prefix}-tables.md").write_text(synthetic_tables(args.out, list(result["runs"])))
    if "kaggle" in parts:
        result = kaggle(args.out, args.kaggle, args.kaggle_size, args.kaggle_epochs, args.kaggle_steps, args.classifier_epochs)
        (args.results / "kaggle.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
        run = args.out / "kaggle-runs" / "unpaired" / "eval-test"
        shutil.copy(run / "report.md", args.results / "kaggle-unpaired.md")
        for figure in ("chain_examples.png", "predicted_stage.png"):
            shutil.copy(run / figure, args.results / f"kaggle-{figure}")
    print(f"results in {args.results}")


if __name__ == "__main__":
    main()
