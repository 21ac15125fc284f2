"""Attention you can read: which genetic columns attend to which image regions, per class (``fusion_xattn``).

Written by ``alzmri explain`` for a cross-attention fusion checkpoint, next to the Grad-CAM maps:

    attention_genetic.tsv   genetic columns ranked by the attention the image tokens give them
                            (overall and per class; ``uniform`` = attention spread evenly) and
                            by their share of the attention-weighted value norms (how much each
                            column passes to the image tokens, not only how much it is looked at)
    attention_cells.tsv     per class, genetic column and image cell: the column's attention on
                            that cell and the cell's centre on the model grid (voxel x, y, z)
    attention_heatmap.png   per class, the most-attended columns (rows) × image cells (columns)
    attention_<class>.png   the image-token attention mapped back onto the volume: each cell's
                            attention from the genetic tokens (mean over columns), upsampled
                            (trilinear) from the feature grid to the model grid, shown inside the
                            brain above its lowest value there, over the class's mean image; per
                            scan as ``<scan>/attention.png``

Attention says where the model routes information, not why a prediction is right; read it beside
the ablation (does fusion beat MRI-only and the shuffled control?), not instead of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

from alzmri.explain.overlay import plot_triplanar  # noqa: E402
from alzmri.fusion.attention import Attention, collect_attention, genetic_ranking, image_attention_by_class  # noqa: E402
from alzmri.io.manifest import write_manifest  # noqa: E402
from alzmri.utils.figures import save_figure  # noqa: E402

TOP_COLUMNS = 15


def on_image(cells: np.ndarray, grid: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Per-cell values ``(cells,)`` on the model grid: reshaped to the feature grid and upsampled (linear)."""
    values = np.asarray(cells, dtype=np.float32).reshape(grid)
    return ndimage.zoom(values, [s / g for s, g in zip(shape, grid, strict=True)], order=1, mode="nearest", grid_mode=True)


def _in_brain(heat: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The attention above its lowest value inside the brain, zero outside (the overlay shows where it rises)."""
    inside = heat[brain] if brain.any() else heat.ravel()
    return np.where(brain, np.clip(heat - inside.min(), 0, None), 0.0)


def cell_centres(grid: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """``(cells, dims)`` centre of each feature cell on the model grid (voxel indices)."""
    index = np.stack(np.unravel_index(np.arange(int(np.prod(grid))), grid), axis=1).astype(float)
    return (index + 0.5) * (np.asarray(shape) / np.asarray(grid)) - 0.5


def attention_tables(attention: Attention, columns: list[str], classes: list[str], grid: tuple[int, ...], shape: tuple[int, ...]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ranking of genetic columns and the long table of column × cell attention per class."""
    ranking = genetic_ranking(attention, columns, classes)
    centres = cell_centres(grid, shape).round(1)
    parts = []
    for name, matrix in image_attention_by_class(attention, classes).items():
        g, c = np.meshgrid(np.arange(len(columns)), np.arange(matrix.shape[1]), indexing="ij")
        parts.append(pd.DataFrame({"class": name, "column": np.asarray(columns)[g.ravel()], "cell": c.ravel(), "attention": matrix.ravel().round(6),
                                   **{f"centre_{axis}": centres[c.ravel(), k] for k, axis in enumerate("xyz"[: len(grid)])}}))  # fmt: skip
    return ranking, pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def plot_heatmap(attention: Attention, columns: list[str], classes: list[str], ranking: pd.DataFrame, path: Path) -> Path:
    """Per class, the most-attended genetic columns × image cells."""
    by_class = image_attention_by_class(attention, classes)
    shown = list(ranking["column"][:TOP_COLUMNS])
    rows = [columns.index(c) for c in shown]
    fig, axes = plt.subplots(1, max(len(by_class), 1), figsize=(4.5 * max(len(by_class), 1), 0.35 * len(shown) + 1.8), squeeze=False)
    vmin = min((m[rows].min() for m in by_class.values()), default=0.0)
    vmax = max((m[rows].max() for m in by_class.values()), default=1.0)
    for ax, (name, matrix) in zip(axes[0], by_class.items(), strict=False):
        image = ax.imshow(matrix[rows], aspect="auto", cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_yticks(range(len(shown)), shown, fontsize=7)
        ax.set_xlabel("image cell (feature-map position, C order)", fontsize=8)
        ax.set_title(f"{name}: genetic column → image cell", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), fraction=0.03, label="attention (mean over heads and scans)")
    return save_figure(fig, path)


def explain_attention(model: torch.nn.Module, rows: list[dict[str, Any]], features: np.ndarray, present: np.ndarray, classes: list[str],
                      columns: list[str], names: list[str], out: Path) -> dict[str, Any]:  # fmt: skip
    """Write the attention tables and pictures (see the module docstring) for the explained scans."""
    grid, shape = tuple(model.image.grid), rows[0]["volume"].shape
    if not np.asarray(present).any():
        print("attention: no explained scan has genetics, so there is no genetic attention to show")
        return {}
    labels = [classes.index(r["diagnosis"]) if r["diagnosis"] in classes else int(r["predicted_index"]) for r in rows]
    items = [(torch.from_numpy(r["volume"])[None], labels[i], torch.from_numpy(features[i]), torch.tensor(bool(present[i]))) for i, r in enumerate(rows)]
    attention = collect_attention(model, items)
    if len(grid) != len(shape):  # a transformer's token sequence: no grid to put back on the image
        grid = (attention.genetic_to_image.shape[-1],)
    ranking, cells = attention_tables(attention, columns, classes, grid, shape) if len(grid) == len(shape) else (genetic_ranking(attention, columns, classes), pd.DataFrame())
    write_manifest(ranking, out / "attention_genetic.tsv")
    write_manifest(cells, out / "attention_cells.tsv")
    pictures = [plot_heatmap(attention, columns, classes, ranking, out / "attention_heatmap.png")]
    if len(grid) != len(shape):
        print("attention: the encoder's tokens are a sequence (a transformer), not a grid: ranking and heatmap, no overlays")
        return {"ranking": ranking.head(TOP_COLUMNS).to_dict("records"), "pictures": [], "grid": list(grid)}
    per_scan = attention.genetic_to_image.mean(axis=1)  # (N, cells): attention each cell gets from the genetic tokens
    for i, row in enumerate(rows):
        plot_triplanar(row["volume"], _in_brain(on_image(per_scan[i], grid, shape), row["brain"]), out / names[i] / "attention.png", predicted=classes[labels[i]],
                       brain=row["brain"], title=f"{names[i]}: where the genetic tokens attend (image-token attention, in the brain)")  # fmt: skip
    for k, name in enumerate(classes):
        chosen = [i for i in range(len(rows)) if labels[i] == k and present[i]]
        if chosen:
            brain = np.any([rows[i]["brain"] for i in chosen], axis=0)
            heat = _in_brain(on_image(per_scan[chosen].mean(axis=0), grid, shape), brain)
            mean_image = np.mean([rows[i]["volume"] for i in chosen], axis=0)
            pictures.append(plot_triplanar(mean_image, heat, out / f"attention_{name}.png", predicted=name, brain=brain,
                                           title=f"{name} ({len(chosen)} scans): image-token attention from the genetic tokens, in the brain"))  # fmt: skip
    top = ranking.head(5)
    print("most-attended genetic columns: " + ", ".join(f"{r.column} ({r.attention:.3f})" for r in top.itertuples()) + f" (uniform {1 / len(columns):.3f})")
    passed = ranking.sort_values("value_norm_rank").head(5)
    print("most passed on (attention-weighted value norm): " + ", ".join(f"{r.column} ({r.value_norm_share:.3f})" for r in passed.itertuples()))
    return {"ranking": ranking.head(TOP_COLUMNS).to_dict("records"), "pictures": [str(p) for p in pictures], "grid": list(grid)}
