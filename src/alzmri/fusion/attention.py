"""What a cross-attention fusion model attends to: its attention weights over a dataset, summarised.

``collect_attention`` runs the model (eval mode) and keeps, per scan and averaged over heads,

* ``genetic_to_image`` ``(N, G, cells)``: each genetic column's attention over the image cells
  (where in the image that column looks);
* ``image_to_genetic`` ``(N, cells, G)``: each image cell's attention over the genetic columns.

``genetic_ranking`` ranks the genetic columns by the attention the image tokens give them
(averaged over cells and over the scans of participants with genetics), overall and per class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset


@dataclass(frozen=True)
class Attention:
    """Head-averaged attention weights of every scan of a dataset (see the module docstring)."""

    labels: np.ndarray
    present: np.ndarray
    genetic_to_image: np.ndarray
    image_to_genetic: np.ndarray


@torch.no_grad()
def collect_attention(model: torch.nn.Module, dataset: Dataset, batch_size: int = 8) -> Attention:
    """Attention weights of ``model`` (a ``FusionXAttn``) over ``dataset``'s ``(image, label, genetics, present)`` items."""
    if not hasattr(model, "genetic_to_image"):
        raise ValueError(f"{type(model).__name__} has no cross-attention (only fusion_xattn does)")
    was = model.training
    model.eval()
    labels, present, g2i, i2g = [], [], [], []
    for images, y, genetics, flags in DataLoader(dataset, batch_size=batch_size):
        model(images, genetics, flags)
        labels.append(np.asarray(y))
        present.append(flags.numpy())
        g2i.append(model.last_attention["genetic_to_image"].mean(dim=1).numpy())
        i2g.append(model.last_attention["image_to_genetic"].mean(dim=1).numpy())
    model.train(was)
    return Attention(np.concatenate(labels), np.concatenate(present).astype(bool), np.concatenate(g2i), np.concatenate(i2g))


def genetic_ranking(attention: Attention, columns: list[str], classes: list[str]) -> pd.DataFrame:
    """One row per genetic column: mean attention from the image tokens (overall and per class) and its rank (1 = most attended).

    Only scans of participants with genetics count (the others see the missing token in every slot).
    """
    keep = attention.present
    received = attention.image_to_genetic[keep].mean(axis=1)  # (N, G): attention each column gets, averaged over cells
    labels = attention.labels[keep]
    table = pd.DataFrame({"column": columns, "attention": received.mean(axis=0) if len(received) else np.nan})
    for k, name in enumerate(classes):
        rows = received[labels == k]
        table[f"attention_{name}"] = rows.mean(axis=0) if len(rows) else np.nan
    table["rank"] = table["attention"].rank(ascending=False, method="min", na_option="bottom").astype(int)
    table["uniform"] = 1.0 / len(columns)  # what attention spread evenly over the columns would give
    return table.sort_values("rank").reset_index(drop=True)


def image_attention_by_class(attention: Attention, classes: list[str]) -> dict[str, Any]:
    """Per class: ``(G, cells)`` mean attention of each genetic column over the image cells, for the heatmap and overlay."""
    keep = attention.present
    out = {}
    for k, name in enumerate(classes):
        rows = attention.genetic_to_image[keep & (attention.labels == k)]
        if len(rows):
            out[name] = rows.mean(axis=0)
    return out
