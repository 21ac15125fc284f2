"""Near-duplicate audit of slice splits: which test slices probably come from a person seen in training.

When slices carry no subject id, a split cannot be checked by id. Neighbouring slices of one brain
look alike far more than slices of two people do, so every test slice is compared with every
training slice and its best match is kept:

* images are reduced to ``size``² (area averaging), zero-mean and unit-norm, so a dot product is
  the normalised cross-correlation (NCC) of the two images;
* a test slice is compared at every shift of up to ``shift`` pixels (of the reduced image, so a
  re-centred or slightly moved slice of the same brain still matches) and the best NCC over
  shifts and training slices is its score; all of it is matrix products, in chunks;
* a score above the threshold flags the pair as "probably the same person".

The threshold is calibrated on slices whose subjects are known (:func:`calibrate`): for each
slice, its best match among other people's slices (the null: what the audit's maximum over a
training set of strangers reaches) against the NCC of the same person's neighbouring slices. The
default is the null's 99th percentile, so about 1 % of test slices of new people are flagged by
chance; the calibration reports how many true neighbours it catches at that threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from alzmri.utils.errors import AlzmriError

SIZE = 32
SHIFT = 1
IDENTICAL = 0.999  # NCC of two copies of one image (float16 storage and resizing leave it just below 1)
MAX_CALIBRATION = 4000  # calibration slices (whole subjects, drawn with a fixed seed): its matrices are n²


def embed(paths: Sequence[str | Path], size: int = SIZE) -> np.ndarray:
    """``(n, size, size)`` float32 images: each slice's middle channel reduced to ``size``² by area averaging.
    """
    images = []
    for path in paths:
        array = np.asarray(np.load(path), dtype=np.float32)
        array = array[array.shape[0] // 2] if array.ndim == 3 else array
        images.append(array)
    stack = torch.from_numpy(np.stack(images))[:, None]
    return torch.nn.functional.interpolate(stack, size=(size, size), mode="area")[:, 0].numpy()


def _unit(flat: np.ndarray) -> np.ndarray:
    centred = flat - flat.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(centred, axis=1, keepdims=True)
    return centred / np.where(norm > 1e-8, norm, 1.0)


def best_matches(query: np.ndarray, reference: np.ndarray, shift: int = SHIFT, chunk: int = 512,
                 exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """For each query image, the best NCC with any reference image over shifts of up to ``shift`` pixels, and its index.

    Args:
        query: ``(n, s, s)`` reduced images.
        reference: ``(m, s, s)`` reduced images.
        shift: largest shift (pixels of the reduced image) tried in each direction.
        chunk: query images per matrix product.
        exclude: optional ``(n, m)`` boolean mask of pairs not to consider (e.g. the same person).
    """
    s = query.shape[1]
    ref = torch.from_numpy(_unit(reference.reshape(len(reference), -1)))
    padded = torch.nn.functional.pad(torch.from_numpy(query), (shift, shift, shift, shift))
    best = np.full(len(query), -np.inf, dtype=np.float32)
    index = np.zeros(len(query), dtype=np.int64)
    for start in range(0, len(query), chunk):
        part = padded[start : start + chunk]
        scores = None
        for dy in range(2 * shift + 1):
            for dx in range(2 * shift + 1):
                moved = part[:, dy : dy + s, dx : dx + s].reshape(len(part), -1).numpy()
                ncc = torch.from_numpy(_unit(moved)) @ ref.T
                scores = ncc if scores is None else torch.maximum(scores, ncc)
        if exclude is not None:
            scores = scores.masked_fill(torch.from_numpy(exclude[start : start + chunk]), -np.inf)
        value, where = scores.max(dim=1)
        best[start : start + chunk] = value.numpy()
        index[start : start + chunk] = where.numpy()
    return best, index


@dataclass(frozen=True)
class Calibration:
    """Where same-person neighbours and strangers' best matches lie, and the threshold chosen between them."""

    threshold: float
    null_quantile: float
    same_person: list[float]
    strangers_best: list[float]
    n_subjects: int
    source: str

    def summary(self) -> dict[str, Any]:
        same = np.asarray(self.same_person)
        null = np.asarray(self.strangers_best)
        return {
            "threshold": round(self.threshold, 4),
            "rule": f"{self.null_quantile:.0%} quantile of each slice's best match among other people's slices",
            "source": self.source,
            "subjects": self.n_subjects,
            "same_person_pairs": int(len(same)),
            "same_person_flagged": float((same > self.threshold).mean()) if len(same) else None,
            "same_person_median": float(np.median(same)) if len(same) else None,
            "strangers_flagged": float((null > self.threshold).mean()) if len(null) else None,
            "strangers_median": float(np.median(null)) if len(null) else None,
        }


def pair_scores(images: np.ndarray, pairs: np.ndarray, shift: int = SHIFT) -> np.ndarray:
    """The best NCC over shifts of up to ``shift`` pixels of each pair ``(i, j)`` of images (as the audit scores a match)."""
    s = images.shape[1]
    reference = _unit(images[pairs[:, 1]].reshape(len(pairs), -1))
    padded = np.pad(images[pairs[:, 0]], ((0, 0), (shift, shift), (shift, shift)))
    best = np.full(len(pairs), -np.inf, dtype=np.float32)
    for dy in range(2 * shift + 1):
        for dx in range(2 * shift + 1):
            moved = _unit(padded[:, dy : dy + s, dx : dx + s].reshape(len(pairs), -1))
            best = np.maximum(best, (moved * reference).sum(axis=1))
    return best


def calibrate(slices: pd.DataFrame, max_gap: int = 3, quantile: float = 0.99, size: int = SIZE, shift: int = SHIFT, source: str = "") -> Calibration:
    """Calibrate the threshold on slices with known subjects and slice numbers.

    Same person: pairs of slices of one subject and session whose ``slice_index`` differs by 1 to
    ``max_gap``, scored as the audit scores a match (best over shifts). At most
    :data:`MAX_CALIBRATION` slices are used (whole subjects, seeded), as the null needs n² memory. Null: each slice's best match (over shifts) among all slices of *other* subjects,
    leaving out identical images (NCC ≥ 0.999): one image under two subject ids is a leak in the
    calibration data, not a stranger, and would drag the threshold up to 1.

    Raises:
        AlzmriError: fewer than 3 known subjects, or no neighbouring pairs.
    """
    known = slices[slices["subject_known"].astype(bool)].reset_index(drop=True)
    if len(known) > MAX_CALIBRATION:  # whole subjects, in a seeded order, until the cap
        order = np.random.default_rng(0).permutation(known["participant_id"].unique())
        counts = known.groupby("participant_id").size().reindex(order)
        keep = set(counts.index[counts.cumsum() <= MAX_CALIBRATION])
        known = known[known["participant_id"].isin(keep)].reset_index(drop=True)
    if known["participant_id"].nunique() < 3:
        raise AlzmriError(f"calibrating the audit needs slices of at least 3 known subjects; {source or 'the data'} has {known['participant_id'].nunique()}")
    images = embed(known["array"], size)
    flat = _unit(images.reshape(len(images), -1))
    subjects = known["participant_id"].to_numpy()
    same_subject = subjects[:, None] == subjects[None, :]
    # One image filed under two subject ids is a leak in the calibration data, not a stranger: left out of the null.
    identical = (flat @ flat.T) >= IDENTICAL
    null, _ = best_matches(images, images, shift, exclude=same_subject | identical)
    index = pd.to_numeric(known["slice_index"], errors="coerce").to_numpy()
    sessions = known["session_id"].astype(str).to_numpy()
    gap = np.abs(index[:, None] - index[None, :])
    pairs = np.argwhere(np.triu(same_subject & (sessions[:, None] == sessions[None, :]) & (gap >= 1) & (gap <= max_gap), 1))
    if not len(pairs):
        raise AlzmriError(f"no slices of one subject lie 1-{max_gap} slices apart in {source or 'the data'}: cannot calibrate the audit")
    same = pair_scores(images, pairs, shift)
    threshold = float(np.quantile(null, quantile))
    return Calibration(threshold, quantile, same.astype(float).tolist(), null.astype(float).tolist(), int(known["participant_id"].nunique()), source)


def audit(train: pd.DataFrame, test: pd.DataFrame, threshold: float, size: int = SIZE, shift: int = SHIFT) -> pd.DataFrame:
    """Per test slice: its best training match, the NCC, and whether it is flagged (NCC > threshold)."""
    score, index = best_matches(embed(test["array"], size), embed(train["array"], size), shift)
    out = test[[c for c in ("participant_id", "session_id", "slice_id", "diagnosis") if c in test.columns]].reset_index(drop=True).copy()
    out["match_participant_id"] = train["participant_id"].to_numpy()[index]
    out["match_slice_id"] = train["slice_id"].to_numpy()[index] if "slice_id" in train.columns else ""
    out["match_diagnosis"] = train["diagnosis"].to_numpy()[index]
    out["ncc"] = np.round(score, 4)
    out["flagged"] = score > threshold
    return out
