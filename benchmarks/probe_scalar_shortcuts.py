"""Probe, not product code: how well does one global number of each input predict AD, split by split?

Usage: ``.venv/bin/python benchmarks/probe_scalar_shortcuts.py [CACHE]`` after ``benchmarks/recipe_study.py``
has built its cohort in ``/tmp/alzmri-recipe-study`` (``CACHE`` defaults to its ``cache``). For each
cached input: its background level (the plateau :func:`~alzmri.preprocessing.brain_mask.background_value`
finds; in a z-scored, skull-stripped scan it is ``-mean / sd`` of the brain), quantiles of the brain's
intensities, the share of dark brain voxels, and from the synth sidecar the scan's contrast gamma and
noise, plus age. Prints the ROC AUC of each for AD in train, val and test: a number that predicts AD
in train and val but not in test is a shortcut a network can take without looking at anatomy.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from alzmri.data.dataset import select_scans
from alzmri.data.splits import read_split_dir
from alzmri.preprocessing.brain_mask import background_value
from alzmri.preprocessing.cache import load_array, read_cache

ROOT = Path("/tmp/alzmri-recipe-study")
cache, _ = read_cache(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "cache")
splits = read_split_dir(ROOT / "split")
rows = []
for name in ("train", "val", "test"):
    for _, scan in select_scans(cache, splits[name], name).iterrows():
        x = np.asarray(load_array(scan["array"]), dtype=np.float32)
        brain = np.load(scan["mask"]) > 0
        q = np.percentile(x[brain], [5, 50, 95])
        sidecar = json.loads(Path(str(scan["source"]).replace(".nii.gz", ".json")).read_text()).get("SynthAcquisition", {})
        rows.append({"split": name, "AD": scan["diagnosis"] == "AD", "background level": background_value(x), "brain q5": q[0],
                     "brain median": q[1], "brain q95": q[2], "dark share (below q5 of all brains)": np.nan, "x": x[brain],
                     "contrast gamma": sidecar.get("gamma"), "noise": sidecar.get("noise_fraction"), "age": scan["age"]})  # fmt: skip
table = pd.DataFrame(rows)
cut = np.percentile(np.concatenate(table["x"].to_list()), 5)
table["dark share (below q5 of all brains)"] = [float((v < cut).mean()) for v in table["x"]]
print("| number | AUC for AD: train | val | test |\n|---|---|---|---|")
for column in table.columns.drop(["split", "AD", "x"]):
    aucs = [roc_auc_score(g["AD"], g[column].astype(float)) for _, g in table.groupby("split", sort=False)]
    print(f"| {column} | " + " | ".join(f"{a:.2f}" for a in aucs) + " |")
