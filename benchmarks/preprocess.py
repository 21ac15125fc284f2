"""Preprocessing speed on 1 mm 256x256x176 synthetic heads: seconds per step, per scan, per worker count.

Usage (from the repository root, after ``make setup``)::

    .venv/bin/python benchmarks/preprocess.py --scans 4 --workers 1,2

Heads come from ``alzmri.data.synth.head`` (skull, scalp, bias field, random pose, sagittal
PIR storage, 1 mm). Step timings come from the QC record of single-threaded runs (one worker
process, SimpleITK and torch limited to one thread). The whole pipeline is then timed through
``preprocess_scans`` on a fresh cache with each worker count. The skull-stripping Dice against
the phantom's true brain mask is reported too.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from alzmri.data.synth.head import synthetic_head
from alzmri.preprocessing.config import PreprocessConfig
from alzmri.preprocessing.runner import preprocess_scans

SHAPE = (256, 256, 176)


def make_heads(folder: Path, n: int) -> tuple[pd.DataFrame, list[Path]]:
    rows, truths = [], []
    for seed in range(n):
        head = synthetic_head(seed=seed, voxel_size=1.0, orientation="PIR", shape=SHAPE)
        path = folder / f"head{seed}.nii.gz"
        nib.save(head.image, str(path))
        truth = folder / f"head{seed}_brain.nii.gz"
        nib.save(head.brain_mask, str(truth))
        rows.append({"participant_id": f"sub-{seed:02d}", "session_id": "ses-01", "diagnosis": "", "path": str(path)})
        truths.append(truth)
    return pd.DataFrame(rows), truths


def skull_strip_dice(cache: Path, scans: pd.DataFrame, truths: list[Path]) -> list[float]:
    """Dice of the cached brain mask (prefix stage) against the true mask, on the resampled grid."""
    import torchio as tio

    from alzmri.preprocessing.pipeline import Intermediate

    scores = []
    for row, truth in zip(scans.to_dict("records"), truths, strict=True):
        stage = next((cache / "stages").glob(f"{row['participant_id']}_{row['session_id']}.*.npz"))
        inter = Intermediate.load(stage)
        label = tio.LabelMap(str(truth))
        label = tio.Resample(tio.ScalarImage(tensor=np.zeros((1, *inter.mask.shape), np.float32), affine=inter.affine))(tio.ToCanonical()(label))
        true = label.data[0].numpy() > 0
        found = inter.mask > 0
        scores.append(2.0 * (true & found).sum() / (true.sum() + found.sum()))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=4, help="number of synthetic heads")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    config = PreprocessConfig()  # the default pipeline: template skull stripping and N4 included
    results: dict[str, object] = {"shape": SHAPE, "scans": args.scans, "config": config.model_dump(mode="json")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        scans, truths = make_heads(tmp, args.scans)
        print(f"rendered {args.scans} heads {SHAPE} in {time.perf_counter() - start:.0f} s")
        runs = {}
        for workers in [int(w) for w in args.workers.split(",")]:
            cache = tmp / f"cache-{workers}"
            start = time.perf_counter()
            preprocess_scans(scans, cache, config, workers=workers, progress=False, report=False)
            wall = time.perf_counter() - start
            runs[workers] = wall
            print(f"workers={workers}: {wall:.1f} s for {args.scans} scans = {wall / args.scans:.1f} s per scan "
                  f"({args.scans / wall * 60:.1f} scans/min)")
            if workers == 1:
                qc = pd.read_csv(cache / "qc.tsv", sep="\t")
                steps = {c.removeprefix("seconds_"): float(qc[c].mean()) for c in qc.columns if c.startswith("seconds_")}
                dice = skull_strip_dice(cache, scans, truths)
        results["seconds_per_step_one_worker"] = steps
        results["wall_seconds"] = runs
        results["skull_strip_dice"] = dice
    print("\n| step | seconds per scan (1 worker) |\n|---|---|")
    for name, value in steps.items():
        print(f"| {name} | {value:.2f} |")
    base = runs.get(1)
    print("\n| workers | wall s | s per scan | speed-up |\n|---|---|---|---|")
    for workers, wall in runs.items():
        print(f"| {workers} | {wall:.1f} | {wall / args.scans:.1f} | {base / wall if base else float('nan'):.2f} |")
    print(f"\nskull-strip Dice vs true mask: mean {np.mean(dice):.3f}, min {np.min(dice):.3f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
