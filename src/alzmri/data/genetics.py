"""Genetics for a model: aligned with the images by ``participant_id`` only, encoded from the training subjects only.

**Alignment** (:func:`align`): each image row gets the genetics of its own participant or none;
the counts of matched and unmatched participants on both sides are reported. Nothing is ever
paired by position (the seed's error: truncating both tables to the shorter one paired one
person's genes with another person's scan).

**Encoding** (:class:`GeneticEncoder`): scikit-learn fits, on the training subjects' rows only,
a median imputer and a standard scaler for the numeric columns (APOE ε4 counts, dosages) and a
most-frequent imputer and one-hot encoder for categorical ones (categories unseen in training
encode as all zeros). The fitted values are kept as plain numbers and lists (a checkpoint stores
them as JSON, no pickle) and applied with NumPy; a test checks the result against scikit-learn's
own transform. ``groups`` names the features of each source column: one genetic token per
column for the fusion models.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from alzmri.io.genetics import GeneticTable
from alzmri.utils.errors import AlzmriError


@dataclass(frozen=True)
class Alignment:
    """Which image participants have genetics.

    Attributes:
        matched: participants on both sides (sorted).
        imaging_only: participants with images but no genetic row.
        genetics_only: participants with a genetic row but no images.
    """

    matched: list[str]
    imaging_only: list[str]
    genetics_only: list[str]

    def summary(self) -> str:
        """One line of counts."""
        return (f"genetics aligned by participant_id: {len(self.matched)} matched, {len(self.imaging_only)} with images only, "
                f"{len(self.genetics_only)} with genetics only")  # fmt: skip

    def table(self) -> pd.DataFrame:
        """One row per participant of either side: ``participant_id``, ``images``, ``genetics``."""
        ids = sorted(set(self.matched) | set(self.imaging_only) | set(self.genetics_only))
        images, genetics = set(self.matched) | set(self.imaging_only), set(self.matched) | set(self.genetics_only)
        return pd.DataFrame({"participant_id": ids, "images": [i in images for i in ids], "genetics": [i in genetics for i in ids]})


def align(image_participants: pd.Series | list[str], genetics: GeneticTable) -> Alignment:
    """Match the image rows' participants with the genetic table's (an error when none match)."""
    images = {str(p) for p in image_participants}
    rows = {str(p) for p in genetics.values.index}
    alignment = Alignment(sorted(images & rows), sorted(images - rows), sorted(rows - images))
    if not alignment.matched:
        example = f" (e.g. images {sorted(images)[0]!r}, genetics {sorted(rows)[0]!r})" if images and rows else ""
        raise AlzmriError(f"no participant of the images is in the genetic table {genetics.source}{example}: they are paired by participant_id only")
    return alignment


@dataclass(frozen=True)
class GeneticEncoder:
    """Fitted encoding of a genetic table (plain data; see the module docstring).

    Attributes:
        numeric: numeric columns (ε4 counts, dosages), in order.
        median: their training medians (imputation).
        mean: their training means after imputation.
        scale: their training standard deviations (1 where constant).
        categorical: categorical columns, in order.
        fill: their most frequent training value (imputation).
        categories: their training categories, sorted.
        kinds: every column's kind.
    """

    numeric: list[str]
    median: list[float]
    mean: list[float]
    scale: list[float]
    categorical: list[str]
    fill: list[str]
    categories: list[list[str]]
    kinds: dict[str, str]

    @classmethod
    def fit(cls, genetics: GeneticTable, train_participants: list[str]) -> GeneticEncoder:
        """Fit on the rows of ``train_participants`` only (the others may not even exist yet)."""
        from sklearn.impute import SimpleImputer
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        train = genetics.values.loc[genetics.values.index.isin([str(p) for p in train_participants])]
        if train.empty:
            raise AlzmriError("no training participant has genetics: the encoders are fitted on training subjects only")
        numeric = [c for c, k in genetics.kinds.items() if k != "categorical"]
        categorical = [c for c, k in genetics.kinds.items() if k == "categorical"]
        for column in numeric + categorical:
            if train[column].isna().all():
                raise AlzmriError(f"genetic column {column} has no value among the training participants; drop it")
        median, mean, scale = [], [], []
        if numeric:
            imputer = SimpleImputer(strategy="median").fit(train[numeric].to_numpy(dtype=float))
            scaler = StandardScaler().fit(imputer.transform(train[numeric].to_numpy(dtype=float)))
            median, mean, scale = imputer.statistics_.tolist(), scaler.mean_.tolist(), scaler.scale_.tolist()
        fill, categories = [], []
        if categorical:
            values = train[categorical].astype(object).where(train[categorical].notna(), np.nan).to_numpy()
            imputer = SimpleImputer(strategy="most_frequent").fit(values)
            encoder = OneHotEncoder(handle_unknown="ignore").fit(imputer.transform(values))
            fill, categories = [str(v) for v in imputer.statistics_], [[str(v) for v in c] for c in encoder.categories_]
        return cls(numeric, median, mean, scale, categorical, fill, categories, dict(genetics.kinds))

    @property
    def groups(self) -> dict[str, list[int]]:
        """Feature indices of each source column (numeric: one; categorical: its one-hot block)."""
        out = {c: [i] for i, c in enumerate(self.numeric)}
        start = len(self.numeric)
        for column, cats in zip(self.categorical, self.categories, strict=True):
            out[column] = list(range(start, start + len(cats)))
            start += len(cats)
        return out

    @property
    def feature_names(self) -> list[str]:
        """One name per feature: the numeric columns, then ``column=category``."""
        return self.numeric + [f"{c}={v}" for c, cats in zip(self.categorical, self.categories, strict=True) for v in cats]

    def transform(self, genetics: GeneticTable, participants: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(features (N, F) float32, present (N,) bool)`` for each participant (absent: zeros, present False)."""
        missing = [c for c in self.kinds if c not in genetics.values.columns]
        if missing:
            raise AlzmriError(f"genetic table {genetics.source} lacks column {missing[0]} that the model was trained with")
        ids = [str(p) for p in participants]
        present = np.array([p in genetics.values.index for p in ids], dtype=bool)
        features = np.zeros((len(ids), len(self.feature_names)), dtype=np.float32)
        if not present.any():
            return features, present
        rows = genetics.values.loc[[p for p, ok in zip(ids, present, strict=True) if ok]]
        parts = []
        if self.numeric:
            values = rows[self.numeric].to_numpy(dtype=float)
            values = np.where(np.isnan(values), np.asarray(self.median), values)
            parts.append((values - np.asarray(self.mean)) / np.asarray(self.scale))
        for column, value, cats in zip(self.categorical, self.fill, self.categories, strict=True):
            cells = rows[column].where(rows[column].notna(), value).astype(str).to_numpy()
            parts.append((cells[:, None] == np.asarray(cats)[None, :]).astype(float))
        features[present] = np.concatenate(parts, axis=1).astype(np.float32)
        return features, present

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneticEncoder:
        """Rebuild from :meth:`to_dict`."""
        return cls(**data)


def shuffled(genetics: GeneticTable, seed: int) -> GeneticTable:
    """The table with its rows permuted across participants (seeded): the shuffled-genetics control.

    Every participant keeps a genetic row, but another participant's (the same permutation
    whatever the row order of the file, so training and evaluation shuffle alike).
    """
    values = genetics.values.sort_index()
    order = np.random.default_rng(seed).permutation(len(values))
    moved = values.iloc[order].set_axis(values.index)
    return GeneticTable(moved, dict(genetics.kinds), f"{genetics.source} (rows shuffled across participants, seed {seed})")


def keep_with_genetics(scans: pd.DataFrame, genetics: GeneticTable, name: str) -> pd.DataFrame:
    """The scans of participants with a genetic row (``--missing-genetics drop``); a note of what was dropped."""
    keep = scans["participant_id"].astype(str).isin(genetics.values.index)
    if not keep.all():
        dropped = scans.loc[~keep, "participant_id"].nunique()
        print(f"{name}: dropped {int((~keep).sum())} scans of {dropped} participants without genetics (--missing-genetics drop)")
    if not keep.any():
        raise AlzmriError(f"no participant of the {name} scans has genetics in {genetics.source}; use --missing-genetics mask to keep them")
    return scans[keep].reset_index(drop=True)


class WithGenetics(Dataset):
    """A dataset's items with each scan's encoded genetics and presence flag appended.

    ``(*item, features (F,) float32, present bool)``: the fusion models'
    ``forward(images, genetics, present)`` takes them after the image.
    """

    def __init__(self, images: Dataset, features: np.ndarray, present: np.ndarray) -> None:
        if len(images) != len(features):
            raise ValueError(f"{len(images)} images but {len(features)} genetic rows")
        self.images = images
        self.features = torch.from_numpy(np.asarray(features, dtype=np.float32))
        self.present = torch.from_numpy(np.asarray(present, dtype=bool))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: Any) -> tuple[Any, ...]:
        index = key[0] if isinstance(key, tuple) else key
        return (*self.images[key], self.features[index], self.present[index])
