"""Figures shared by training (logged to trackers) and evaluation (written next to metrics)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from alzmri.utils.atomic import atomic_path  # noqa: E402


def save_figure(fig: plt.Figure, path: Path) -> Path:
    """Write ``fig`` atomically as PNG and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def confusion_matrix_figure(matrix: list[list[int]], classes: list[str], title: str = "") -> plt.Figure:
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
    return fig


def plot_confusion_matrix(matrix: list[list[int]], classes: list[str], path: Path, title: str = "") -> Path:
    """:func:`confusion_matrix_figure` written to ``path``."""
    return save_figure(confusion_matrix_figure(matrix, classes, title), path)
