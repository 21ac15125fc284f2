"""Confusion-matrix and ROC figures."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from alzmri.evaluation.metrics import probabilities  # noqa: E402
from alzmri.utils.figures import plot_confusion_matrix, save_figure  # noqa: E402

__all__ = ["plot_confusion_matrix", "plot_roc"]


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
    return save_figure(fig, path)
