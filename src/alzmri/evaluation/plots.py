"""Confusion-matrix and ROC figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from alzmri.evaluation.metrics import probabilities  # noqa: E402
from alzmri.utils.atomic import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str], path: Path, title: str = "") -> Path:
    """Counts with row-normalised colour (per-class recall)."""
    counts = np.asarray(matrix)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(classes), 1.2 + 1.1 * len(classes)))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{counts[i, j]}\n{rates[i, j]:.0%}", ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title or "Confusion matrix")
    return _save(fig, path)


def plot_roc(predictions: pd.DataFrame, classes: list[str], path: Path, title: str = "") -> Path:
    """One-vs-rest ROC curve per class (one curve for two classes), AUC in the legend."""
    y_true = predictions["diagnosis"].to_numpy()
    probs = probabilities(predictions, classes)
    fig, ax = plt.subplots(figsize=(5, 5))
    shown = classes[1:] if len(classes) == 2 else classes
    for c in shown:
        i = classes.index(c)
        positive = y_true == c
        if 0 < positive.sum() < len(positive):
            fpr, tpr, _ = roc_curve(positive, probs[:, i])
            ax.plot(fpr, tpr, label=f"{c} vs rest (AUC {roc_auc_score(positive, probs[:, i]):.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01), title=title or "ROC")
    ax.legend(loc="lower right")
    return _save(fig, path)
