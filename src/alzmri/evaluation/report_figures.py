"""The report's figures: ROC and PR curves with subject-bootstrap bands, calibration, PPV/NPV vs prevalence.

Each function draws one figure from the evaluated rows (or the report dict) and writes a PNG
atomically; the HTML page embeds the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve  # noqa: E402

from alzmri.evaluation.stats import reliability_curve  # noqa: E402
from alzmri.utils.figures import plot_confusion_matrix, save_figure  # noqa: E402

GRID = np.linspace(0.0, 1.0, 101)
BAND_RESAMPLES = 500  # curves only; the reported numbers use the full bootstrap


def _shown(classes: list[str]) -> list[str]:
    return classes[1:] if len(classes) == 2 else classes


def _subject_draws(table: pd.DataFrame, n: int, seed: int) -> list[np.ndarray]:
    """Row indices of ``n`` subject-level bootstrap resamples (all rows of each drawn subject)."""
    rng = np.random.default_rng(seed)
    codes, subjects = pd.factorize(table["participant_id"])
    rows_of = [np.flatnonzero(codes == k) for k in range(len(subjects))]
    return [np.concatenate([rows_of[k] for k in rng.integers(0, len(subjects), len(subjects))]) for _ in range(n)]


def _curve_band(table: pd.DataFrame, c: str, kind: str, draws: list[np.ndarray], level: float) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band of TPR over FPR (ROC) or precision over recall (PR)."""
    y_all = (table["diagnosis"] == c).to_numpy()
    s_all = table[f"prob_{c}"].to_numpy()
    curves = []
    for rows in draws:
        y, s = y_all[rows], s_all[rows]
        if not 0 < y.sum() < len(y):
            continue
        if kind == "roc":
            fpr, tpr, _ = roc_curve(y, s)
            curves.append(np.interp(GRID, fpr, tpr))
        else:
            precision, recall, _ = precision_recall_curve(y, s)
            curves.append(np.interp(GRID, recall[::-1], precision[::-1]))
    if not curves:
        return np.full_like(GRID, np.nan), np.full_like(GRID, np.nan)
    alpha = (1 - level) / 2
    stacked = np.vstack(curves)
    return np.quantile(stacked, alpha, axis=0), np.quantile(stacked, 1 - alpha, axis=0)


def _plot_band(rows: pd.DataFrame, classes: list[str], kind: str, path: Path, level: float, seed: int) -> Path:
    """ROC (``kind="roc"``) or precision–recall curves, one per class vs rest, with subject-bootstrap bands."""
    draws = _subject_draws(rows, BAND_RESAMPLES, seed)
    fig, ax = plt.subplots(figsize=(5.2, 5))
    for c in _shown(classes):
        y = (rows["diagnosis"] == c).to_numpy()
        if not 0 < y.sum() < len(y):
            continue
        scores = rows[f"prob_{c}"]
        if kind == "roc":
            fpr, tpr, _ = roc_curve(y, scores)
            (line,) = ax.plot(fpr, tpr, label=f"{c} vs rest (AUC {auc(fpr, tpr):.3f})")
        else:
            precision, recall, _ = precision_recall_curve(y, scores)
            (line,) = ax.plot(recall, precision, label=f"{c} (AP {average_precision_score(y, scores):.3f}; base rate {y.mean():.2f})")
            ax.axhline(y.mean(), color=line.get_color(), ls=":", lw=0.8)
        low, high = _curve_band(rows, c, kind, draws, level)
        ax.fill_between(GRID, low, high, color=line.get_color(), alpha=0.2, lw=0)
    if kind == "roc":
        ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
        labels = ("false positive rate (1 − specificity)", "true positive rate (sensitivity)", "ROC", "lower right")
    else:
        labels = ("recall (sensitivity)", "precision (PPV at the test set's prevalence)", "Precision–recall", "lower left")
    ax.set(xlabel=labels[0], ylabel=labels[1], xlim=(0, 1), ylim=(0, 1.01), title=f"{labels[2]}, {level:.0%} subject-bootstrap band")
    ax.legend(loc=labels[3], fontsize=8)
    return save_figure(fig, path)


def plot_roc_band(rows: pd.DataFrame, classes: list[str], path: Path, level: float = 0.95, seed: int = 0) -> Path:
    """One-vs-rest ROC curve per class with a subject-bootstrap band."""
    return _plot_band(rows, classes, "roc", path, level, seed)


def plot_pr_band(rows: pd.DataFrame, classes: list[str], path: Path, level: float = 0.95, seed: int = 0) -> Path:
    """One-vs-rest precision–recall curve per class with a subject-bootstrap band and its base rate (dotted)."""
    return _plot_band(rows, classes, "pr", path, level, seed)


def plot_calibration(rows: pd.DataFrame, classes: list[str], path: Path, n_bins: int = 10) -> Path:
    """Top-label reliability diagram (accuracy against confidence) with the bin counts."""
    curve = reliability_curve(rows["diagnosis"].to_numpy(), rows[[f"prob_{c}" for c in classes]].to_numpy(), n_bins=n_bins, classes=classes)
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5.2, 6), height_ratios=(3, 1), sharex=True)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    conf, acc, count = (np.asarray(curve[k], dtype=float) for k in ("confidence", "accuracy", "count"))
    keep = count > 0
    ax.plot(conf[keep], acc[keep], "o-", label="model")
    ax.set(ylabel="accuracy in bin", ylim=(0, 1.02), title="Calibration (top label)")
    ax.legend(loc="upper left", fontsize=8)
    ax_n.bar(conf[keep], count[keep], width=0.06)
    ax_n.set(xlabel="confidence (highest probability)", ylabel="scans", xlim=(0, 1.02))
    return save_figure(fig, path)


def plot_predictive_values(clinical: dict[str, Any], path: Path) -> Path:
    """PPV and NPV (posterior mean and credible band) against prevalence, at the chosen threshold."""
    curve = clinical["curve"]
    p = np.asarray(curve["prevalence"]) * 100
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for key, label in (("ppv", "PPV"), ("npv", "NPV")):
        band = curve[key]
        (line,) = ax.plot(p, band["mean"], label=label)
        ax.fill_between(p, band["low"], band["high"], color=line.get_color(), alpha=0.2, lw=0)
    ax.axvline(clinical["prevalence"] * 100, color="grey", ls=":", lw=1, label=f"stated prevalence {clinical['prevalence']:.0%}")
    ax.set(xlabel=f"prevalence of {clinical['positive_class']} (%)", ylabel="predictive value", ylim=(0, 1.02), xlim=(p.min(), p.max()),
           title=f"Predictive values at threshold {clinical['threshold']['threshold']:.3g} (per subject)")  # fmt: skip
    ax.legend(loc="center right", fontsize=8)
    return save_figure(fig, path)


def write_figures(rows: pd.DataFrame, classes: list[str], report: dict[str, Any], out: Path, seed: int = 0) -> dict[str, Path]:
    """Every figure of the report as PNGs in ``out``; returns name → path.

    A figure the data cannot support (e.g. a bootstrap band with one subject of a class) is
    left out and named in ``report["not_computed"]``.
    """
    from alzmri.evaluation.report import attempt

    level = 0.95
    skipped = report.setdefault("not_computed", {})
    makers = {
        "confusion_matrix": lambda: plot_confusion_matrix(report["scan_level"]["confusion_matrix"], classes, out / "confusion_matrix.png",
                                                          f"{report['evaluated']}: {report['n_scans']} scans"),  # fmt: skip
        "roc": lambda: plot_roc_band(rows, classes, out / "roc.png", level, seed),
        "pr": lambda: plot_pr_band(rows, classes, out / "pr.png", level, seed),
        "calibration": lambda: plot_calibration(rows, classes, out / "calibration.png"),
    }
    if "clinical" in report:
        makers["predictive_values"] = lambda: plot_predictive_values(report["clinical"], out / "predictive_values.png")
    figures = {name: attempt(skipped, f"figure {name}", make) for name, make in makers.items()}
    for name, path in figures.items():
        if path is None:  # not this report's figure: an earlier report's must not stand in for it
            (out / f"{name}.png").unlink(missing_ok=True)
    return {name: path for name, path in figures.items() if path is not None}
