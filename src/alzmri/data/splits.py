"""Subject-level train/val/test splits and stratified group k-fold, with summaries and TSV I/O.

A subject's scans always stay together. A subject whose scans carry different diagnoses
(e.g. CN at baseline, MCI later) is placed by its most recent diagnosis: the diagnosis of
its last session in natural order (``ses-2`` before ``ses-10``).
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from alzmri.io.manifest import DIAGNOSES, write_manifest
from alzmri.utils.errors import AlzmriError

SPLITS = ("train", "val", "test")
# Fill order of the round robin: the small splits first, so they come closest to their targets.
_FILL_ORDER = ("test", "val", "train")


def subject_labels(scans: pd.DataFrame) -> pd.Series:
    """Each subject's most recent diagnosis (that of its last session, natural order).

    Args:
        scans: scan table with ``participant_id``, ``diagnosis`` and optionally ``session_id``.

    Returns:
        Diagnosis indexed by participant_id (sorted).
    """
    _check_scans(scans)
    sessions = scans["session_id"] if "session_id" in scans.columns else pd.Series("", index=scans.index)
    last: dict[str, tuple[list, str]] = {}
    for pid, sid, dx in zip(scans["participant_id"], sessions, scans["diagnosis"], strict=True):
        key = _natural_key(str(sid))
        if pid not in last or key >= last[pid][0]:
            last[pid] = (key, dx)
    return pd.Series({pid: last[pid][1] for pid in sorted(last)}, name="diagnosis", dtype=object)


def round_robin_split(
    scans: pd.DataFrame, ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, pd.DataFrame]:
    """Split subjects into train/val/test so each class's scan counts match ``ratios``.

    Per diagnosis class, subjects are sorted by scan count ascending (ties in a seeded random
    order) and dealt round-robin to test, val, train; a split is skipped once its target
    (ratio x the class's scans, rounded) is met, and subjects left over go to train.

    Args:
        scans: scan table with ``participant_id``, ``diagnosis`` (and ``session_id``).
        ratios: train, val, test fractions; each >= 0, summing to 1.
        seed: seed for the tie-breaking shuffle; same seed, same split.

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``: each its subjects' scans, sorted by ID.

    Raises:
        AlzmriError: bad ratios or an empty / malformed scan table.
    """
    fractions = _check_ratios(ratios)
    labels = subject_labels(scans)
    counts = scans.groupby("participant_id").size()
    rng = np.random.default_rng(seed)
    assignment: dict[str, str] = {}
    for dx in _ordered(labels.unique()):
        subjects = list(labels.index[labels == dx])
        subjects = [subjects[i] for i in rng.permutation(len(subjects))]
        subjects.sort(key=lambda s: counts[s])  # stable: the shuffle breaks ties
        total = int(sum(counts[s] for s in subjects))
        target = {name: math.floor(fractions[name] * total + 0.5) for name in ("val", "test")}
        filled = dict.fromkeys(SPLITS, 0)
        turn = 0
        for subject in subjects:
            order = _FILL_ORDER[turn:] + _FILL_ORDER[:turn]
            name = next(n for n in order if n == "train" or filled[n] < target[n])
            turn = (_FILL_ORDER.index(name) + 1) % len(_FILL_ORDER)
            assignment[subject] = name
            filled[name] += int(counts[subject])
    split_of = scans["participant_id"].map(assignment)
    return {name: _sorted(scans[split_of == name]) for name in SPLITS}


def stratified_group_kfold(scans: pd.DataFrame, n_folds: int = 5, seed: int = 0) -> list[dict[str, pd.DataFrame]]:
    """K subject-level folds stratified by diagnosis; each fold gives a train/val/test split.

    Uses ``StratifiedGroupKFold(shuffle=True, random_state=seed)`` on scans, grouped by
    participant_id, with each scan labelled by its subject's most recent diagnosis. Split
    k's test set is fold k, its val set fold (k + 1) mod K, its train set the other folds.

    Args:
        scans: scan table with ``participant_id``, ``diagnosis`` (and ``session_id``).
        n_folds: number of folds K, at least 3.
        seed: shuffling seed.

    Raises:
        AlzmriError: ``n_folds`` < 3, or a class has fewer subjects than folds.
    """
    if n_folds < 3:
        raise AlzmriError(f"k-fold needs at least 3 folds (train, val and test), got {n_folds}")
    labels = subject_labels(scans)
    per_class = labels.value_counts()
    if per_class.min() < n_folds:
        raise AlzmriError(
            f"cannot make {n_folds} folds: class {per_class.idxmin()} has only {per_class.min()} subjects"
        )
    scans = _sorted(scans)
    y = scans["participant_id"].map(labels).to_numpy()
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    tests = [idx for _, idx in splitter.split(np.zeros(len(scans)), y, groups=scans["participant_id"].to_numpy())]
    folds = []
    for k in range(n_folds):
        val_k = (k + 1) % n_folds
        train_idx = np.sort(np.concatenate([tests[j] for j in range(n_folds) if j not in (k, val_k)]))
        parts = {"train": train_idx, "val": tests[val_k], "test": tests[k]}
        folds.append({name: _sorted(scans.iloc[idx]) for name, idx in parts.items()})
    return folds


def split_summary(splits: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Scan and subject counts per split and diagnosis, plus a per-split ``all`` row.

    Args:
        splits: split name to scan table.

    Returns:
        Columns ``split``, ``diagnosis``, ``scans``, ``subjects``; every diagnosis seen in
        any split gets a row in every split (zero counts included).
    """
    present = set().union(*(set(df["diagnosis"]) for df in splits.values() if "diagnosis" in df.columns))
    rows = []
    for name, df in splits.items():
        for dx in _ordered(present):
            part = df[df["diagnosis"] == dx]
            rows.append((name, dx, len(part), part["participant_id"].nunique()))
        rows.append((name, "all", len(df), df["participant_id"].nunique()))
    return pd.DataFrame(rows, columns=["split", "diagnosis", "scans", "subjects"])


def format_summary(df: pd.DataFrame) -> str:
    """Render a ``split_summary`` (optionally with a ``fold`` column) one line per split.

    Example line: ``train: 96 scans, 48 subjects (CN 40/20, MCI 32/16, AD 24/12)``.

    Args:
        df: output of ``split_summary``, or the k-fold summary with a ``fold`` column.
    """
    lines = []
    group_cols = ["fold", "split"] if "fold" in df.columns else ["split"]
    for key, part in df.groupby(group_cols, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        label = f"fold {key[0]} {key[1]}" if len(key) == 2 else str(key[0])
        total = part[part["diagnosis"] == "all"].iloc[0]
        per_dx = ", ".join(
            f"{r.diagnosis} {r.scans}/{r.subjects}" for r in part[part["diagnosis"] != "all"].itertuples()
        )
        lines.append(f"{label}: {total['scans']} scans, {total['subjects']} subjects ({per_dx})")
    return "\n".join(lines)


def write_splits(splits: Mapping[str, pd.DataFrame], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``train.tsv``, ``val.tsv``, ``test.tsv`` and ``summary.tsv`` into ``out_dir``, atomically.

    Args:
        splits: the three splits, keyed by ``SPLITS``.
        out_dir: output folder (created if needed); returned as a Path.
    """
    out_dir = Path(out_dir)
    for name in SPLITS:
        write_manifest(splits[name], out_dir / f"{name}.tsv")
    write_manifest(split_summary({n: splits[n] for n in SPLITS}), out_dir / "summary.tsv")
    return out_dir


def write_kfold(folds: Sequence[Mapping[str, pd.DataFrame]], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``out_dir/fold-<k>/{train,val,test}.tsv`` per fold and ``out_dir/summary.tsv``.

    Fold folders left from an earlier run with more folds are removed (if they hold only
    split files), so a reader of ``fold-*`` never picks up a stale fold.

    Args:
        folds: output of ``stratified_group_kfold``.
        out_dir: output folder (created if needed); returned as a Path.
    """
    out_dir = Path(out_dir)
    summaries = []
    for k, fold in enumerate(folds):
        for name in SPLITS:
            write_manifest(fold[name], out_dir / f"fold-{k}" / f"{name}.tsv")
        summaries.append(split_summary({n: fold[n] for n in SPLITS}).assign(fold=k))
    summary = pd.concat(summaries, ignore_index=True)
    write_manifest(summary[["fold", "split", "diagnosis", "scans", "subjects"]], out_dir / "summary.tsv")
    for stale in out_dir.glob("fold-*"):
        number = stale.name.removeprefix("fold-")
        own = {f"{n}.tsv" for n in SPLITS}
        if number.isdigit() and int(number) >= len(folds) and {p.name for p in stale.iterdir()} <= own:
            shutil.rmtree(stale)
    return out_dir


def read_split_dir(split_dir: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """Read ``train.tsv``, ``val.tsv`` and ``test.tsv`` from a split folder.

    Args:
        split_dir: folder written by ``write_splits`` (or one ``fold-<k>`` folder).

    Returns:
        Split name to scan table; ID columns as strings, ``age`` numeric if present.

    Raises:
        AlzmriError: the folder or a split file is missing, unreadable or lacks participant_id.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise AlzmriError(f"split folder {split_dir} does not exist")
    out = {}
    for name in SPLITS:
        path = split_dir / f"{name}.tsv"
        if not path.is_file():
            raise AlzmriError(f"split folder {split_dir} has no {name}.tsv")
        try:
            df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise AlzmriError(f"cannot read split file {path}: {' '.join(str(exc).split())}") from None
        if "participant_id" not in df.columns:
            raise AlzmriError(f"split file {path} has no participant_id column")
        if "age" in df.columns:
            df["age"] = pd.to_numeric(df["age"], errors="coerce")
        out[name] = df
    return out


def _check_ratios(ratios: Sequence[float]) -> dict[str, float]:
    values = list(ratios)
    if len(values) != len(SPLITS):
        raise AlzmriError(f"split ratios need 3 values (train, val, test), got {values}")
    if any(not math.isfinite(r) or r < 0 for r in values) or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise AlzmriError(f"split ratios must be >= 0 and sum to 1, got {values}")
    return dict(zip(SPLITS, values, strict=True))


def _check_scans(scans: pd.DataFrame) -> None:
    missing = [c for c in ("participant_id", "diagnosis") if c not in scans.columns]
    if missing:
        raise AlzmriError(f"scan table lacks column(s) {', '.join(missing)}")
    if scans.empty:
        raise AlzmriError("scan table is empty: nothing to split")


def _natural_key(text: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def _ordered(diagnoses) -> list[str]:
    known = [d for d in DIAGNOSES if d in set(diagnoses)]
    return known + sorted(set(diagnoses) - set(DIAGNOSES))


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    by = [c for c in ("participant_id", "session_id") if c in df.columns]
    return df.sort_values(by, kind="stable").reset_index(drop=True)
