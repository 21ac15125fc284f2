"""``slice-audit``: calibrate, search every test slice's best training match, write the table, summary and figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alzmri.data.dataset import select_scans
from alzmri.data.slices.audit import SIZE, audit, calibrate
from alzmri.data.slices.config import SliceAuditConfig
from alzmri.data.slices.store import SPLIT_DIR, read_slice_cache
from alzmri.data.splits import read_split_dir
from alzmri.utils.atomic import atomic_path, atomic_write_text
from alzmri.utils.errors import AlzmriError


def run_slice_audit(config: SliceAuditConfig) -> dict[str, Any]:
    """The audit of one split of a slice cache; returns the summary written to ``summary.json``."""
    slices, slice_config = read_slice_cache(config.cache)
    split_dir = Path(config.split) if config.split else Path(config.cache) / SPLIT_DIR
    if not split_dir.is_dir():
        raise AlzmriError(f"{config.cache} has no split/ folder; give the SPLIT folder to audit")
    splits = read_split_dir(split_dir)
    for name in (config.train, config.test):
        if name not in splits:
            raise AlzmriError(f"split folder {split_dir} has no {name!r} split")
    train = select_scans(slices, splits[config.train], config.train)
    test = select_scans(slices, splits[config.test], config.test)
    for name, part in ((config.train, train), (config.test, test)):
        if part.empty:
            raise AlzmriError(f"the {name} split of {split_dir} has no slices: nothing to audit")
    if config.threshold is not None:
        calibration = {"threshold": config.threshold, "source": "", "rule": "given with --threshold"}
        cal = None
    else:
        source = Path(config.calibrate) if config.calibrate else Path(config.cache)
        reference = slices if source == Path(config.cache) else read_slice_cache(source)[0]
        cal = calibrate(reference, max_gap=config.max_gap, quantile=config.quantile, size=config.size, shift=config.shift, source=str(source))
        calibration = cal.summary()
    table = audit(train, test, calibration["threshold"], size=config.size, shift=config.shift)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "audit.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    classes = [c for c in slice_config.classes if c in set(table["diagnosis"])]
    per_class = {c: {"slices": int((table["diagnosis"] == c).sum()), "flagged": int(table.loc[table["diagnosis"] == c, "flagged"].sum())} for c in classes}
    summary = {
        "cache": str(config.cache), "split": str(split_dir), "train": config.train, "test": config.test,
        "train_slices": int(len(train)), "test_slices": int(len(test)), "flagged": int(table["flagged"].sum()),
        "flagged_share": float(table["flagged"].mean()), "same_class_matches": float((table["match_diagnosis"] == table["diagnosis"]).mean()),
        "flagged_same_class": float((table.loc[table["flagged"], "match_diagnosis"] == table.loc[table["flagged"], "diagnosis"]).mean()) if table["flagged"].any() else None,
        "per_class": per_class, "calibration": calibration, "size": config.size, "shift": config.shift, "out": str(out),
    }  # fmt: skip
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    plot_scores(table, cal, calibration["threshold"], out / "ncc.png", config)
    plot_pairs(table, train, test, out / "pairs.png")
    return summary


def plot_scores(table: pd.DataFrame, cal: Any, threshold: float, path: Path, config: SliceAuditConfig) -> Path:
    """Histograms: test slices' best training match, and (when calibrated) same-person pairs and strangers' best matches."""
    import matplotlib.pyplot as plt

    from alzmri.utils.figures import save_figure

    fig, ax = plt.subplots(figsize=(7, 3.6))
    bins = np.linspace(min(-0.2, float(table["ncc"].min())), 1.0, 60)
    if cal is not None:
        ax.hist(cal.strangers_best, bins=bins, density=True, alpha=0.45, color="tab:blue", label="calibration: best match among other people")
        ax.hist(cal.same_person, bins=bins, density=True, alpha=0.45, color="tab:green", label=f"calibration: same person, 1-{config.max_gap} slices apart")
    ax.hist(table["ncc"], bins=bins, density=True, histtype="step", lw=2, color="black", label=f"{config.test} slices: best {config.train} match")
    ax.axvline(threshold, color="tab:red", ls="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel(f"normalised cross-correlation ({SIZE if config.size == SIZE else config.size}² images, shifts ≤ {config.shift} px)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"{int(table['flagged'].sum())} of {len(table)} {config.test} slices flagged", fontsize=9)
    return save_figure(fig, path)


def plot_pairs(table: pd.DataFrame, train: pd.DataFrame, test: pd.DataFrame, path: Path, n: int = 6) -> Path:
    """The highest-scoring pairs and the lowest-scoring flagged ones, test slice over its best training match."""
    import matplotlib.pyplot as plt

    from alzmri.utils.figures import save_figure

    order = table["ncc"].sort_values(ascending=False).index
    flagged = [i for i in order if table.at[i, "flagged"]]
    picks = list(dict.fromkeys(list(order[: n // 2]) + (flagged[-(n - n // 2):] if flagged else list(order[n // 2 : n]))))[:n]
    train_by_id = dict(zip(zip(train["participant_id"], train["slice_id"], strict=True), train["array"], strict=True))
    fig, axes = plt.subplots(2, max(len(picks), 1), figsize=(1.9 * max(len(picks), 1), 4.2), squeeze=False)
    for k, i in enumerate(picks):
        row = table.loc[i]
        for r, array in enumerate((test["array"].iloc[i], train_by_id.get((row["match_participant_id"], row["match_slice_id"])))):
            ax = axes[r, k]
            ax.axis("off")
            if array is None:
                continue
            image = np.asarray(np.load(array), dtype=np.float32)
            ax.imshow(image[image.shape[0] // 2], cmap="gray")
        axes[0, k].set_title(f"NCC {row['ncc']:.3f}{' (flagged)' if row['flagged'] else ''}\ntest: {row['diagnosis']}\ntrain: {row['match_diagnosis']}", fontsize=6)
    axes[0, 0].text(-0.1, 0.5, "test", transform=axes[0, 0].transAxes, rotation=90, va="center", ha="right", fontsize=8)
    axes[1, 0].text(-0.1, 0.5, "best train", transform=axes[1, 0].transAxes, rotation=90, va="center", ha="right", fontsize=8)
    return save_figure(fig, path)
