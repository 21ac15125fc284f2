"""A Dataset over the preprocessing cache: memory-mapped arrays, labels by class index."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from alzmri.preprocessing.cache import load_array
from alzmri.utils.errors import AlzmriError


def select_scans(cache: pd.DataFrame, split: pd.DataFrame, split_name: str) -> pd.DataFrame:
    """Rows of the cache manifest for the scans listed in one split, in the split's order.

    Raises:
        AlzmriError: a scan of the split has no cached array.
    """
    keyed = cache.set_index(["participant_id", "session_id"])
    keys = list(zip(split["participant_id"].astype(str), split["session_id"].astype(str), strict=True))
    missing = [k for k in keys if k not in keyed.index]
    if missing:
        raise AlzmriError(
            f"{len(missing)} scans of the {split_name} split are not in the cache, e.g. {missing[0][0]} {missing[0][1]}; "
            "preprocess the same dataset the split was made from"
        )
    return keyed.loc[keys].reset_index()


class CachedVolumeDataset(Dataset):
    """``(1, S, S, S)`` float32 tensors and integer labels from cached arrays.

    Args:
        scans: cache manifest rows (``array`` absolute, ``diagnosis``).
        classes: class names; a scan's label is ``classes.index(diagnosis)``.
        transform: optional callable on the ``(1, S, S, S)`` tensor (e.g. a TorchIO transform).
    """

    def __init__(self, scans: pd.DataFrame, classes: Sequence[str], transform: Callable | None = None) -> None:
        unknown = sorted(set(scans["diagnosis"]) - set(classes))
        if unknown:
            raise AlzmriError(f"scans with diagnoses {unknown} are not among the model's classes {list(classes)}")
        self.paths = list(scans["array"])
        self.labels = [list(classes).index(d) for d in scans["diagnosis"]]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        volume = torch.from_numpy(np.asarray(load_array(self.paths[index]), dtype=np.float32))[None]
        if self.transform is not None:
            volume = self.transform(volume)
        return volume, self.labels[index]
