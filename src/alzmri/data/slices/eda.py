"""``eda``: what a slice dataset looks like per class, on one self-contained HTML page.

Figures: class counts (slices and subjects), the mean slice of each class, the difference between
the means of adjacent stages (later minus earlier, on a symmetric colour scale), intensity
histograms per class (foreground pixels), and the SSIM between adjacent-stage means (scikit-image).
A difference map shows where the classes differ *on average*; it is not evidence that a model
uses those places, and in a dataset with several slices per person it weighs people by their
slice counts.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alzmri.data.slices.store import read_slice_cache
from alzmri.utils.atomic import atomic_write_text
from alzmri.utils.errors import AlzmriError


def class_images(table: pd.DataFrame, classes: list[str], limit: int) -> dict[str, np.ndarray]:
    """Per class, up to ``limit`` slices (middle channel) as one ``(n, H, W)`` float32 stack, drawn evenly through the table."""
    out = {}
    for c in classes:
        paths = table.loc[table["diagnosis"] == c, "array"].tolist()
        if len(paths) > limit:
            paths = [paths[i] for i in np.linspace(0, len(paths) - 1, limit).round().astype(int)]
        stack = [np.asarray(np.load(p), dtype=np.float32) for p in paths]
        out[c] = np.stack([s[s.shape[0] // 2] for s in stack])
    return out


def summarise(cache: str | Path, limit: int = 2000) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Counts, mean images and adjacent-stage SSIMs of a slice cache."""
    from skimage.metrics import structural_similarity

    table, config = read_slice_cache(cache)
    classes = [c for c in config.classes if c in set(table["diagnosis"])]
    if len(classes) < 1:
        raise AlzmriError(f"slice cache {cache} has no slices of its classes {config.classes}")
    images = class_images(table, classes, limit)
    means = {c: images[c].mean(axis=0) for c in classes}
    counts = {c: {"slices": int((table["diagnosis"] == c).sum()),
                  "subjects": int(table.loc[(table["diagnosis"] == c) & table["subject_known"], "participant_id"].nunique())} for c in classes}  # fmt: skip
    ssim = []
    for a, b in zip(classes, classes[1:], strict=False):
        span = float(max(means[a].max(), means[b].max()) - min(means[a].min(), means[b].min())) or 1.0
        ssim.append({"pair": f"{a} → {b}", "ssim": round(float(structural_similarity(means[a], means[b], data_range=span)), 4),
                     "mean_abs_difference": round(float(np.abs(means[b] - means[a]).mean()), 4)})  # fmt: skip
    summary = {"cache": str(cache), "classes": classes, "counts": counts, "adjacent_stages": ssim, "images_per_class_used": {c: len(images[c]) for c in classes},
               "subjects_unknown": int((~table["subject_known"]).sum()), "size": config.size, "origin": config.origin}  # fmt: skip
    return summary, images


def figures(summary: dict[str, Any], images: dict[str, np.ndarray], out: Path) -> dict[str, Path]:
    import matplotlib.pyplot as plt

    from alzmri.utils.figures import save_figure

    classes = summary["classes"]
    paths = {}
    fig, ax = plt.subplots(figsize=(1.4 * len(classes) + 2, 2.8))
    x = np.arange(len(classes))
    ax.bar(x, [summary["counts"][c]["slices"] for c in classes], color="tab:blue")
    for i, c in enumerate(classes):
        subjects = summary["counts"][c]["subjects"]
        ax.text(i, summary["counts"][c]["slices"], f"{summary['counts'][c]['slices']}" + (f"\n{subjects} subj." if subjects else ""), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, classes, fontsize=8)
    ax.set_ylabel("slices")
    ax.set_title("class counts", fontsize=9)
    paths["counts"] = save_figure(fig, out / "counts.png")

    means = {c: images[c].mean(axis=0) for c in classes}
    low, high = min(float(m.min()) for m in means.values()), max(float(m.max()) for m in means.values())
    fig, axes = plt.subplots(1, len(classes), figsize=(2.2 * len(classes), 2.6), squeeze=False)
    for ax, c in zip(axes[0], classes, strict=True):
        ax.imshow(means[c], cmap="gray", vmin=low, vmax=high)
        ax.set_title(f"{c}\nmean of {len(images[c])}", fontsize=8)
        ax.axis("off")
    paths["means"] = save_figure(fig, out / "means.png")

    if len(classes) > 1:
        diffs = [means[b] - means[a] for a, b in zip(classes, classes[1:], strict=False)]
        bound = max(float(np.abs(d).max()) for d in diffs) or 1.0
        fig, axes = plt.subplots(1, len(diffs), figsize=(2.6 * len(diffs) + 0.6, 2.6), squeeze=False)
        for ax, d, row in zip(axes[0], diffs, summary["adjacent_stages"], strict=True):
            shown = ax.imshow(d, cmap="RdBu_r", vmin=-bound, vmax=bound)
            ax.set_title(f"{row['pair'].replace(' → ', ' →' + chr(10))}\nSSIM {row['ssim']:.3f}", fontsize=7)
            ax.axis("off")
        fig.colorbar(shown, ax=axes[0].tolist(), shrink=0.8, label="later − earlier (z units)")
        paths["differences"] = save_figure(fig, out / "differences.png")

    fig, ax = plt.subplots(figsize=(5.5, 3))
    values = np.concatenate([images[c][images[c] != 0] for c in classes])
    bins = np.linspace(*np.percentile(values, [0.5, 99.5]), 60) if values.size else 60
    for c in classes:
        fg = images[c][images[c] != 0]
        ax.hist(fg, bins=bins, density=True, histtype="step", lw=1.5, label=c)
    ax.set_xlabel("intensity of foreground pixels (z units)")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    paths["histograms"] = save_figure(fig, out / "histograms.png")
    return paths


CAPTIONS = {
    "counts": "Slices per class (and subjects, where known).",
    "means": "Mean slice of each class (one grey scale for all).",
    "differences": "Difference of adjacent-stage means, later minus earlier; red: brighter in the later stage.",
    "histograms": "Intensity histograms of the foreground pixels per class.",
}


def run_eda(cache: str | Path, out: str | Path, limit: int = 2000) -> dict[str, Any]:
    """Write ``eda.html`` (figures embedded), ``eda.json`` and the PNGs; returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary, images = summarise(cache, limit)
    paths = figures(summary, images, out)
    rows = "".join(f"<tr><td>{html.escape(r['pair'])}</td><td>{r['ssim']:.4f}</td><td>{r['mean_abs_difference']:.4f}</td></tr>" for r in summary["adjacent_stages"])
    counts = "".join(f"<tr><td>{html.escape(c)}</td><td>{v['slices']}</td><td>{v['subjects'] or '—'}</td></tr>" for c, v in summary["counts"].items())
    figs = "".join(f"<figure><img alt='{k}' src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}'><figcaption>{CAPTIONS[k]}</figcaption></figure>" for k, p in paths.items())
    unknown = (f"<p><b>{summary['subjects_unknown']} slices have no subject id</b>: subject counts are not known for them.</p>" if summary["subjects_unknown"] else "")
    page = f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>alzmri slice EDA</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px}}
figure{{display:inline-block;margin:8px}}img{{max-width:100%}}figcaption{{font-size:.8em;color:#555}}</style></head><body>
<h1>Slice dataset: {html.escape(str(cache))}</h1>
<p>{summary['origin']} slices of {summary['size']}×{summary['size']}; classes in clinical order: {', '.join(map(html.escape, summary['classes']))}.
Means use up to {max(summary['images_per_class_used'].values())} slices per class.</p>{unknown}
<h2>Counts</h2><table><tr><th>class</th><th>slices</th><th>subjects</th></tr>{counts}</table>
<h2>Adjacent stages</h2><table><tr><th>pair</th><th>SSIM of the means</th><th>mean |difference|</th></tr>{rows}</table>
<p>Mean images and their differences show where classes differ on average, not what a model uses.</p>
<h2>Figures</h2>{figs}</body></html>
"""
    atomic_write_text(out / "eda.html", page)
    atomic_write_text(out / "eda.json", json.dumps(summary, indent=2) + "\n")
    summary["out"] = str(out)
    return summary
