"""What a cross-attention fusion model attends to: its attention weights over a dataset, summarised.

``collect_attention`` runs the model (eval mode) and keeps, per scan and averaged over heads,

* ``genetic_to_image`` ``(N, G, cells)``: each genetic column's attention over the image cells
  (where in the image that column looks);
* ``image_to_genetic`` ``(N, cells, G)``: each image cell's attention over the genetic columns.

* ``image_to_genetic_norm`` ``(N, cells, G)``: the norm of what each genetic column passes to
  each image cell, ``‖a · W_o v‖`` (the attention weight times the column's transformed value;
  Kobayashi et al., EMNLP 2020, "Attention is not only a weight"). A weight says where a query
  looks, the norm how much it takes from there: a column with a small value vector passes little
  however much it is attended.

``genetic_ranking`` ranks the genetic columns by the attention the image tokens give them
(averaged over cells and over the scans of participants with genetics), overall and per class,
and by their share of the attention-weighted value norms.
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
    image_to_genetic_norm: np.ndarray


def value_contributions(attention: torch.nn.MultiheadAttention, keys: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Each key's part of the attention output: ``(N, Q, K, W)`` whose sum over keys plus ``out_proj.bias`` is the output.

    Args:
        attention: a ``batch_first`` ``nn.MultiheadAttention`` with keys and values of its own width.
        keys: ``(N, K, W)`` the keys (= values) it attended to.
        weights: ``(N, heads, Q, K)`` its per-head attention weights for that call.
    """
    if not attention._qkv_same_embed_dim or attention.bias_k is not None or attention.add_zero_attn:
        raise ValueError("value_contributions needs keys and values of the attention's own width, without added bias or zero keys")
    n, k, width = keys.shape
    heads = attention.num_heads
    w_v = attention.in_proj_weight[2 * width :]
    b_v = attention.in_proj_bias[2 * width :] if attention.in_proj_bias is not None else None
    values = torch.nn.functional.linear(keys, w_v, b_v).view(n, k, heads, width // heads)
    parts = torch.einsum("nhqk,nkhd->nqkhd", weights, values).reshape(n, weights.shape[2], k, width)
    return parts @ attention.out_proj.weight.T


def weighted_value_norms(attention: torch.nn.MultiheadAttention, keys: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(N, Q, K)`` norm of what each key passes to each query (see ``value_contributions``)."""
    return value_contributions(attention, keys, weights).norm(dim=-1)


@torch.no_grad()
def collect_attention(model: torch.nn.Module, dataset: Dataset, batch_size: int = 8) -> Attention:
    """Attention weights of ``model`` (a ``FusionXAttn``) over ``dataset``'s ``(image, label, genetics, present)`` items."""
    if not hasattr(model, "genetic_to_image"):
        raise ValueError(f"{type(model).__name__} has no cross-attention (only fusion_xattn does)")
    was = model.training
    model.eval()
    labels, present, g2i, i2g, norms = [], [], [], [], []
    for images, y, genetics, flags in DataLoader(dataset, batch_size=batch_size):
        model(images, genetics, flags)
        weights = model.last_attention["image_to_genetic"]
        labels.append(np.asarray(y))
        present.append(flags.numpy())
        g2i.append(model.last_attention["genetic_to_image"].mean(dim=1).numpy())
        i2g.append(weights.mean(dim=1).numpy())
        norms.append(weighted_value_norms(model.image_to_genetic.attention, model.genetic(genetics, flags), weights).numpy())
    model.train(was)
    return Attention(np.concatenate(labels), np.concatenate(present).astype(bool), np.concatenate(g2i), np.concatenate(i2g), np.concatenate(norms))


def add_ranks(table: pd.DataFrame) -> pd.DataFrame:
    """``rank`` by ``attention`` and ``value_norm_rank`` by ``value_norm_share`` (1 = highest; ties share the best rank, NaN last), in place."""
    for score, rank in (("attention", "rank"), ("value_norm_share", "value_norm_rank")):
        table[rank] = table[score].rank(ascending=False, method="min", na_option="bottom").astype(int)
    return table


def genetic_ranking(attention: Attention, columns: list[str], classes: list[str]) -> pd.DataFrame:
    """One row per genetic column: mean attention from the image tokens (overall and per class) and its rank (1 = most attended).

    ``value_norm_share``: each column's share of the attention-weighted value norms the image
    tokens receive (per scan, summed over cells and normalised to 1 over the columns; then the
    mean over scans), ranked in ``value_norm_rank``.
    Only scans of participants with genetics count (the others see the missing token in every slot).
    """
    keep = attention.present
    received = attention.image_to_genetic[keep].mean(axis=1)  # (N, G): attention each column gets, averaged over cells
    passed = attention.image_to_genetic_norm[keep].sum(axis=1)  # (N, G): what each column passes to the cells
    share = passed / np.maximum(passed.sum(axis=1, keepdims=True), 1e-12)
    labels = attention.labels[keep]
    table = pd.DataFrame({"column": columns, "attention": received.mean(axis=0) if len(received) else np.nan,
                          "value_norm_share": share.mean(axis=0) if len(share) else np.nan})  # fmt: skip
    for k, name in enumerate(classes):
        rows = received[labels == k]
        table[f"attention_{name}"] = rows.mean(axis=0) if len(rows) else np.nan
    add_ranks(table)
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
