"""What a progression run learns from: images by stage, in [-1, 1], with brain masks, and their pairings.

* **Stages** are class names in disease order (``NonDemented → VeryMildDemented → ...`` or
  ``CN → MCI → AD``); transition ``k`` goes from stage ``k`` to stage ``k + 1``.
* **Paired** (longitudinal data): the same subject's image (same ``slice_id``) at the last
  session of stage ``k`` and the first later session of stage ``k + 1``.
* **Unpaired**: all images of stage ``k`` and all of stage ``k + 1`` (the seed's case).
* **Intensities**: generators work in [-1, 1] (``tanh``); an image ``x`` enters as
  ``clip(x / scale, -1, 1)``, ``scale`` being the 99.9th percentile of ``|x|`` over the training
  images' brains, stored in the run so that generated images map back to the cache's scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from alzmri.data.slices.classes import ordered_classes
from alzmri.generate.roi import brain_roi
from alzmri.preprocessing.cache import load_array
from alzmri.utils.errors import AlzmriError


@dataclass
class StageImages:
    """Images of one split, in memory.

    Attributes:
        rows: manifest rows (``participant_id``, ``session_id``, ``slice_id``, ``diagnosis``, ``array``).
        images: ``(N, C, *S)`` float32 in [-1, 1].
        masks: ``(N, 1, *S)`` float32 brain masks (0/1).
    """

    rows: pd.DataFrame
    images: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def read_array(path: str, spatial_dims: int) -> np.ndarray:
    """A cached model input as float32 ``(C, *S)``: a volume gets its channel axis, a slice has one."""
    array = np.asarray(load_array(path), dtype=np.float32)
    return array[None] if array.ndim == spatial_dims else array


def intensity_scale(arrays: list[np.ndarray]) -> float:
    """The 99.9th percentile of ``|x|`` over the non-zero voxels of ``arrays`` (1 when there are none)."""
    values = np.concatenate([np.abs(a[a != 0]).ravel() for a in arrays]) if arrays else np.zeros(0)
    return float(np.percentile(values, 99.9)) if values.size else 1.0


def to_unit(array: np.ndarray, scale: float) -> np.ndarray:
    """An image on the cache's scale → [-1, 1]."""
    return np.clip(array / np.float32(scale), -1.0, 1.0).astype(np.float32)


def from_unit(array: np.ndarray, scale: float) -> np.ndarray:
    """An image in [-1, 1] → the cache's scale."""
    return (np.asarray(array, dtype=np.float32) * np.float32(scale)).astype(np.float32)


def load_stage_images(rows: pd.DataFrame, spatial_dims: int, scale: float | None = None) -> tuple[StageImages, float]:
    """Read the rows' arrays (slices: ``spatial_dims`` 2, volumes: 3); returns the images and the scale used (computed from them when None)."""
    rows = rows.reset_index(drop=True).copy()
    if "slice_id" not in rows.columns:
        rows["slice_id"] = ""
    raw = [read_array(path, spatial_dims) for path in rows["array"]]
    if raw and len({a.shape for a in raw}) > 1:
        raise AlzmriError(f"the cache's images differ in shape ({', '.join(sorted({'x'.join(map(str, a.shape)) for a in raw}))}); re-make it with one --size")
    if scale is None:
        scale = intensity_scale(raw)
    masks = np.stack([brain_roi(a)[None] for a in raw]).astype(np.float32) if raw else np.zeros((0, 1))
    images = np.stack([to_unit(a, scale) for a in raw]) if raw else np.zeros((0, 1))
    return StageImages(rows, images, masks), scale


def resolve_stages(requested: list[str] | None, classes: list[str]) -> list[str]:
    """The run's stages: as requested (matched to the data's spelling, case-insensitively), else the classes in clinical order.

    Raises:
        AlzmriError: a requested stage the data does not have, or fewer than two stages.
    """
    if requested is None:
        stages = ordered_classes(classes)
    else:
        spelling = {c.lower(): c for c in classes}
        unknown = [s for s in requested if s.lower() not in spelling]
        if unknown:
            raise AlzmriError(f"stage {unknown[0]!r} is not a class of the cache (its classes: {', '.join(classes)})")
        stages = [spelling[s.lower()] for s in requested]
    if len(stages) < 2:
        raise AlzmriError(f"progression needs at least two stages; the data has {', '.join(stages) or 'none'}")
    return stages


def _natural(text: str) -> tuple:
    import re

    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text.lower()))


def visits_in_order(rows: pd.DataFrame) -> list[pd.DataFrame]:
    """Each subject's images of one slice, in visit order: by age when the manifest gives it, else by session id
    (natural order, case-insensitive, so ``ses-2`` comes before ``ses-10``; ``ses-bl`` is a name like any other: give ages)."""
    table = rows.assign(_row=np.arange(len(rows)), slice_id=rows["slice_id"].fillna("") if "slice_id" in rows else "")
    age = pd.to_numeric(table["age"], errors="coerce") if "age" in table.columns else pd.Series(np.nan, index=table.index)
    out = []
    for _, visits in table.assign(_age=age).groupby(["participant_id", "slice_id"], sort=True, dropna=False):
        use_age = visits["_age"].notna().all() and visits["_age"].nunique() == len(visits)
        keys = [(float(a) if use_age else 0.0, _natural(str(sid))) for a, sid in zip(visits["_age"], visits["session_id"], strict=True)]
        out.append(visits.iloc[sorted(range(len(visits)), key=keys.__getitem__)])
    return out


def transition_pairs(rows: pd.DataFrame, stages: list[str]) -> list[np.ndarray]:
    """Per transition, ``(P, 2)`` row indices (input, true next stage) of the same subject and slice.

    For each subject and slice the visits are taken in order (:func:`visits_in_order`); the pair of
    transition ``k`` is its last visit at stage ``k`` that is followed by a visit at stage ``k + 1``,
    and the first such visit.
    """
    rank = {s: i for i, s in enumerate(stages)}
    pairs: list[list[tuple[int, int]]] = [[] for _ in range(len(stages) - 1)]
    for ordered in visits_in_order(rows):
        ordered = ordered[ordered["diagnosis"].isin(rank)]
        ranks, index = ordered["diagnosis"].map(rank).astype(int).tolist(), ordered["_row"].tolist()
        for k in range(len(stages) - 1):
            later = [j for j, r in enumerate(ranks) if r == k + 1]
            before = [j for j, r in enumerate(ranks) if r == k and later and j < later[-1]]
            if before:
                first_after = next(j for j in later if j > before[-1])
                pairs[k].append((index[before[-1]], index[first_after]))
    return [np.array(p, dtype=int).reshape(-1, 2) for p in pairs]


def chain_starts(rows: pd.DataFrame, stages: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Where chains start and what they are compared with.

    Per subject and slice, the chain starts at its last visit of the first stage; the truth at step
    ``s`` is the first visit at stage ``s`` after the start and after step ``s − 1``'s truth (visit
    order as in pairing), -1 where there is none.

    Returns:
        ``(start rows (M,), truth rows (M, len(stages)))``; column 0 is the start itself.
    """
    starts, truths = [], []
    for visits in visits_in_order(rows):
        diagnoses, index = visits["diagnosis"].tolist(), visits["_row"].tolist()
        at_first = [j for j, d in enumerate(diagnoses) if d == stages[0]]
        if not at_first:
            continue
        begin = after = at_first[-1]
        row = [index[begin]]
        for stage in stages[1:]:  # each step's truth comes after the previous step's (a history that goes back and forth)
            found = next((j for j in range(after + 1, len(diagnoses)) if diagnoses[j] == stage), None)
            row.append(-1 if found is None else index[found])
            after = after if found is None else found
        starts.append(index[begin])
        truths.append(row)
    return np.array(starts, dtype=int), np.array(truths, dtype=int).reshape(-1, len(stages))


def stage_members(rows: pd.DataFrame, stages: list[str]) -> list[np.ndarray]:
    """Row indices of each stage."""
    return [np.flatnonzero(rows["diagnosis"].to_numpy() == s) for s in stages]


def choose_pairing(requested: str, pairs: list[np.ndarray], stages: list[str]) -> str:
    """``paired`` or ``unpaired`` for the run.

    Raises:
        AlzmriError: ``paired`` asked for but some transition has no same-subject pair.
    """
    empty = [f"{stages[k]} → {stages[k + 1]}" for k, p in enumerate(pairs) if len(p) < 2]  # batch norm needs two
    if requested == "paired" and empty:
        raise AlzmriError(f"--pairing paired needs the same subject at adjacent stages; the training split has fewer than two such pairs for {', '.join(empty)} (use --pairing unpaired)")
    if requested == "auto":
        return "unpaired" if empty else "paired"
    return requested


def mean_changes(images: StageImages, stages: list[str], pairs: list[np.ndarray] | None) -> np.ndarray:
    """Per transition, the average change (``(T, C, *S)``, in [-1, 1] units): over the pairs when paired, else mean of stage k+1 − mean of stage k."""
    out = []
    members = stage_members(images.rows, stages)
    for k in range(len(stages) - 1):
        if pairs is not None and len(pairs[k]):
            diff = images.images[pairs[k][:, 1]] - images.images[pairs[k][:, 0]]
            out.append(diff.mean(axis=0))
        elif len(members[k]) and len(members[k + 1]):
            out.append(images.images[members[k + 1]].mean(axis=0) - images.images[members[k]].mean(axis=0))
        else:
            out.append(np.zeros(images.images.shape[1:], dtype=np.float32))
    return np.stack(out).astype(np.float32)
