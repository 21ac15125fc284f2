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

    In a slice cache, a split listing scans (participant_id, session_id) selects all their
    slices; one listing slices (with ``slice_id``, a slice-level split) selects those slices.

    Raises:
        AlzmriError: a scan of the split has no cached array.
    """
    columns = ["participant_id", "session_id"] + (["slice_id"] if "slice_id" in split.columns and "slice_id" in cache.columns else [])
    keyed = cache.set_index(columns)
    keys = list(zip(*(split[c].fillna("").astype(str) for c in columns), strict=True))
    missing = [k for k in keys if k not in keyed.index]
    if missing:
        raise AlzmriError(
            f"{len(missing)} {'slices' if len(columns) == 3 else 'scans'} of the {split_name} split are not in the cache, e.g. {' '.join(missing[0])}; "
            "use the cache made from the dataset the split was made from"
        )
    # A scan-level split of a slice cache selects every slice of each scan, in the split's order.
    return keyed.loc[keys].reset_index()


class CachedVolumeDataset(Dataset):
    """``(1, S, S, S)`` float32 tensors and integer labels (and ages) from cached arrays.

    Rows of a slice cache (they have a ``slice_id`` column) give their stored ``(C, H, W)``
    slices as they are.

    Args:
        scans: cache manifest rows (``array`` absolute, ``diagnosis``).
        classes: class names; a scan's label is ``classes.index(diagnosis)``.
        transform: optional callable on the ``(1, S, S, S)`` tensor (e.g. a TorchIO transform).
        seed: with an :class:`EpochSeededSampler`, the random transform of scan ``i`` in epoch
            ``e`` is drawn from a generator seeded by ``(seed, e, i)``: the same in a resumed run,
            in any batch order and with any number of loader workers.
        with_age: items are ``(volume, label, age)`` for models with an age input; every scan
            needs a finite ``age``.

    Raises:
        AlzmriError: a diagnosis outside ``classes``, or a missing age when ``with_age``.
    """

    def __init__(self, scans: pd.DataFrame, classes: Sequence[str], transform: Callable | None = None, seed: int = 0, with_age: bool = False) -> None:
        unknown = sorted(set(scans["diagnosis"]) - set(classes))
        if unknown:
            raise AlzmriError(f"scans with diagnoses {unknown} are not among the model's classes {list(classes)}")
        self.paths = list(scans["array"])
        self.add_channel = "slice_id" not in scans.columns  # volumes are stored without a channel axis
        self.labels = [list(classes).index(d) for d in scans["diagnosis"]]
        self.transform = transform
        self.seed = seed
        self.ages: list[float] | None = None
        if with_age:
            ages = pd.to_numeric(scans["age"], errors="coerce") if "age" in scans.columns else pd.Series(float("nan"), index=scans.index)
            missing = scans.loc[~np.isfinite(ages.to_numpy(dtype=float))]
            if len(missing):
                first = missing.iloc[0]
                raise AlzmriError(
                    f"the model uses age but {len(missing)} scans have none, e.g. {first['participant_id']} {first['session_id']}; "
                    "add an age column to the labels, or train without --age-encoding"
                )
            self.ages = [float(a) for a in ages]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int] | tuple[torch.Tensor, int, float]:
        index, epoch = key if isinstance(key, tuple) else (key, None)
        volume = torch.from_numpy(np.array(load_array(self.paths[index]), dtype=np.float32))  # a writable copy
        if self.add_channel:
            volume = volume[None]
        if self.transform is not None:
            if epoch is None:
                volume = self.transform(volume)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed((self.seed * 1_000_003 + epoch) * 100_003 + index)
                    volume = self.transform(volume)
        if self.ages is not None:
            return volume, self.labels[index], self.ages[index]
        return volume, self.labels[index]


class EpochSeededSampler(torch.utils.data.Sampler[tuple[int, int]]):
    """Shuffles with a generator seeded by ``seed + epoch`` and yields ``(index, epoch)`` keys.

    The order of epoch ``e`` depends only on ``(seed, e)``, so a run resumed from a checkpoint
    sees the same batches as an uninterrupted one; the epoch in each key lets
    :class:`CachedVolumeDataset` seed that scan's augmentation. Lightning calls
    :meth:`set_epoch` every epoch (like ``DistributedSampler``).

    With ``num_replicas > 1`` (DDP) process ``rank`` takes every ``num_replicas``-th scan of
    the shuffled order, padded by repeating its start so that every process gets the same
    number of scans (as ``DistributedSampler`` does).

    Args:
        length: dataset size.
        seed: base seed.
        num_replicas: number of training processes.
        rank: this process's rank.
    """

    def __init__(self, length: int, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside 0..{num_replicas - 1}")
        self.length = length
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.length, generator=generator).tolist()
        total = len(self) * self.num_replicas
        order = (order * (total // max(len(order), 1) + 1))[:total]
        return iter([(i, self.epoch) for i in order[self.rank :: self.num_replicas]])

    def __len__(self) -> int:
        return -(-self.length // self.num_replicas)
