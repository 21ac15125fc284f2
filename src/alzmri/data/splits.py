"""Subject-level train/val/test splits and stratified group k-fold, with summaries and TSV I/O.

A subject's scans always stay together. A subject whose scans carry different diagnoses
(e.g. CN at baseline, MCI later: disease progression is real) is placed by its most recent
diagnosis: the diagnosis of its last session in natural order (``ses-2`` before ``ses-10``);
:func:`diagnosis_change_warning` words the warning the ``split`` command prints about them.

Checks: a split whose ratio is > 0 but that would get no subject is an error
(:func:`round_robin_split`, with a suggestion of ratios that do fill every split), as is a
class with fewer subjects than folds (:func:`stratified_group_kfold`); a class missing from a
split is a warning (:func:`missing_class_warnings`), since the split is still a valid partition.
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

from alzmri.io.manifest import DIAGNOSES, check_unique_columns, write_manifest
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
    sequences = _diagnosis_sequences(scans)
    return pd.Series({pid: seq[-1] for pid, seq in sequences.items()}, name="diagnosis", dtype=object)


def diagnosis_changes(scans: pd.DataFrame) -> dict[str, list[str]]:
    """Subjects whose sessions carry more than one diagnosis, with the diagnoses in session order.

    Repeats are collapsed: sessions CN, CN, MCI, AD give ``["CN", "MCI", "AD"]``. The last
    entry is the diagnosis the subject is split by (see :func:`subject_labels`).

    Args:
        scans: scan table with ``participant_id``, ``diagnosis`` and optionally ``session_id``.

    Returns:
        participant_id (sorted) to its diagnoses; subjects with one diagnosis are left out.
    """
    changes = {}
    for pid, seq in _diagnosis_sequences(scans).items():
        collapsed = [dx for i, dx in enumerate(seq) if i == 0 or dx != seq[i - 1]]
        if len(collapsed) > 1:
            changes[pid] = collapsed
    return changes


def diagnosis_change_warning(scans: pd.DataFrame, limit: int = 5) -> str | None:
    """One line about subjects whose diagnosis changed between sessions, or None if none did.

    Example: ``2 subjects have different diagnoses in different sessions (sub-004: CN→AD,
    sub-009: CN→MCI→AD); each is split as one subject, stratified by its last diagnosis``.

    Args:
        scans: scan table with ``participant_id``, ``diagnosis`` and optionally ``session_id``.
        limit: how many subjects to name; the rest are counted.
    """
    changes = diagnosis_changes(scans)
    if not changes:
        return None
    named = [f"{pid}: {'→'.join(seq)}" for pid, seq in list(changes.items())[:limit]]
    if len(changes) > limit:
        named.append(f"and {len(changes) - limit} more")
    who = "1 subject has" if len(changes) == 1 else f"{len(changes)} subjects have"
    return (f"{who} different diagnoses in different sessions ({', '.join(named)}); "
            "each is split as one subject, stratified by its last diagnosis")


def round_robin_split(
    scans: pd.DataFrame, ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, pd.DataFrame]:
    """Split subjects into train/val/test so each class's scan counts match ``ratios``.

    Per diagnosis class, subjects are sorted by scan count ascending (ties in a seeded random
    order) and dealt round-robin to test, val, train; a split is skipped once its target
    (ratio x the class's scans, rounded) is met, and subjects left over go to train. When the
    train ratio is > 0, a class's last subject goes to train if train has none of the class
    yet, so a small class is never dealt entirely to val and test.

    Args:
        scans: scan table with ``participant_id``, ``diagnosis`` (and ``session_id``).
        ratios: train, val, test fractions; each >= 0, summing to 1.
        seed: seed for the tie-breaking shuffle; same seed, same split.

    Returns:
        ``{"train": ..., "val": ..., "test": ...}``: each its subjects' scans, sorted by ID.

    Raises:
        AlzmriError: bad ratios, an empty / malformed scan table, or too few subjects to give
            every split whose ratio is > 0 at least one subject (the message suggests ratios
            that would, where some exist).
    """
    fractions = _check_ratios(ratios)
    labels = subject_labels(scans)
    counts = scans.groupby("participant_id").size()
    assignment = _deal(labels, counts, fractions, seed)
    _check_filled(assignment, labels, counts, fractions, seed)
    split_of = scans["participant_id"].map(assignment)
    return {name: _sorted(scans[split_of == name]) for name in SPLITS}


def _deal(labels: pd.Series, counts: pd.Series, fractions: Mapping[str, float], seed: int) -> dict[str, str]:
    """The round robin of :func:`round_robin_split`: subject to split name."""
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
        for i, subject in enumerate(subjects):
            order = _FILL_ORDER[turn:] + _FILL_ORDER[:turn]
            name = next(n for n in order if n == "train" or filled[n] < target[n])
            if i == len(subjects) - 1 and fractions["train"] > 0 and filled["train"] == 0:
                name = "train"  # the class's last chance to be in train
            turn = (_FILL_ORDER.index(name) + 1) % len(_FILL_ORDER)
            assignment[subject] = name
            filled[name] += int(counts[subject])
    return assignment


def _check_filled(assignment: Mapping[str, str], labels: pd.Series, counts: pd.Series,
                  fractions: Mapping[str, float], seed: int) -> None:
    """Raise when a split whose ratio is > 0 got no subject, suggesting ratios that work."""
    empty = _empty_splits(assignment, fractions)
    if not empty:
        return
    n = len(labels)
    given = ",".join(f"{fractions[name]:g}" for name in SPLITS)
    who = "1 subject" if n == 1 else f"{n} subjects"
    suggestion = _suggest_ratios(labels, counts, fractions, seed, empty)
    wanted = [name for name in SPLITS if fractions[name] > 0]
    fix = f"give more subjects or --ratios {suggestion}" if suggestion else (
        f"give more subjects (subjects are dealt within a class, so a class needs {len(wanted)} or more "
        f"for {'/'.join(wanted)} to get one each)")
    raise AlzmriError(f"{who} cannot fill train/val/test at ratios {given}: "
                      f"{' and '.join(empty)} would be empty; {fix}")


def _empty_splits(assignment: Mapping[str, str], fractions: Mapping[str, float]) -> list[str]:
    """Splits whose ratio is > 0 but that got no subject."""
    used = set(assignment.values())
    return [name for name in SPLITS if fractions[name] > 0 and name not in used]


def _suggest_ratios(labels: pd.Series, counts: pd.Series, fractions: Mapping[str, float], seed: int,
                    empty: Sequence[str]) -> str | None:
    """Ratios (as ``--ratios`` text) that fill every split, or None.

    First the empty splits' ratios are raised in steps of 0.05, taken from train (which keeps
    at least half); failing that, an empty test split is set to 0 (a train/val split only).
    An empty val split is never dropped: training selects its model on val.
    """
    held_out = [{name: fractions[name] + (0.05 * step if name in empty else 0.0) for name in ("val", "test")}
                for step in range(1, 11)]
    if "val" not in empty:
        held_out.append({"val": fractions["val"], "test": 0.0})
    for parts in held_out:
        trial = {"val": round(parts["val"], 3), "test": round(parts["test"], 3)}
        trial["train"] = round(1 - trial["val"] - trial["test"], 3)
        if trial["train"] >= 0.5 and not _empty_splits(_deal(labels, counts, trial, seed), trial):
            return ",".join(f"{trial[name]:g}" for name in SPLITS)
    return None


def missing_class_warnings(splits: Mapping[str, pd.DataFrame]) -> list[str]:
    """One line per class that some non-empty split has no scans of.

    Classes are the scans' diagnoses (those training uses). An empty split (ratio 0) is not
    reported. Such a split is a valid partition, so this warns rather than raises;
    ``alzmri train`` refuses a train or val split that lacks a class it is asked to learn.

    Args:
        splits: name to scan table, e.g. ``{"train": ..., "val": ..., "test": ...}`` or, for
            k-fold, ``{"fold 0 train": ..., "fold 0 val": ..., ...}``.

    Returns:
        Messages (without a ``warning:`` prefix), in ``DIAGNOSES`` order.
    """
    present = [df for df in splits.values() if not df.empty]
    if not present:
        return []
    everything = pd.concat(present, ignore_index=True)
    messages = []
    for dx in _ordered(everything["diagnosis"].unique()):
        lacking = [name for name, df in splits.items() if not df.empty and not (df["diagnosis"] == dx).any()]
        if lacking:
            n = everything.loc[everything["diagnosis"] == dx, "participant_id"].nunique()
            subjects = "1 subject has" if n == 1 else f"{n} subjects have"
            messages.append(
                f"no {dx} scans in {', '.join(lacking)} (only {subjects} {dx} scans); add {dx} subjects, "
                f"or leave {dx} out with 'alzmri train --classes' (training refuses a train or val split without a class)"
            )
    return messages


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
        AlzmriError: ``n_folds`` < 3, or a class has fewer subjects than folds (so some fold's
            test set would lack it; fewer subjects than folds in all is a case of this).
    """
    if n_folds < 3:
        raise AlzmriError(f"k-fold needs at least 3 folds (train, val and test), got {n_folds}")
    labels = subject_labels(scans)
    _check_fold_classes(labels, n_folds)
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


def _check_fold_classes(labels: pd.Series, n_folds: int) -> None:
    """Raise when a class (by subject label) has fewer subjects than ``n_folds``."""
    per_class = labels.value_counts()
    dx, fewest = per_class.idxmin(), int(per_class.min())
    if fewest >= n_folds:
        return
    subjects = "1 subject" if fewest == 1 else f"{fewest} subjects"
    fix = f"use --folds {fewest} or fewer, or add {dx} subjects" if fewest >= 3 else (
        f"add {dx} subjects (k-fold needs at least 3 per class)")
    raise AlzmriError(
        f"cannot make {n_folds} folds of {len(labels)} subjects: class {dx} has only {subjects} "
        f"and every fold's test set needs one of each class; {fix}"
    )


def split_summary(splits: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Scan and subject counts per split and diagnosis, plus a per-split ``all`` row.

    Scans are counted by their own diagnosis, so a subject whose diagnosis changed between
    sessions counts under each of its diagnoses (per-class subject counts may then add up
    to more than the ``all`` row).

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


LEVEL_FILE = "split.json"  # {"level": "slice"} marks a slice-level split (made to demonstrate leakage)


def write_split_level(out_dir: str | os.PathLike[str], level: str) -> None:
    """Record how the split was made (``subject`` or ``slice``); a subject-level split needs no record."""
    import json

    from alzmri.utils.atomic import atomic_write_text

    path = Path(out_dir) / LEVEL_FILE
    if level == "subject":
        path.unlink(missing_ok=True)
    else:
        atomic_write_text(path, json.dumps({"level": level}) + "\n")


def split_level(split_dir: str | os.PathLike[str]) -> str:
    """``"slice"`` for a split made with ``--level slice``, else ``"subject"``."""
    import json

    path = Path(split_dir) / LEVEL_FILE
    try:
        return str(json.loads(path.read_text()).get("level", "subject")) if path.is_file() else "subject"
    except (ValueError, AttributeError):
        raise AlzmriError(f"{path} is not a split-level record; delete it or re-run 'alzmri split'") from None


def slice_level_split(slices: pd.DataFrame, ratios: Sequence[float], seed: int) -> dict[str, pd.DataFrame]:
    """Deal **slices**, not subjects, to train/val/test (stratified by class): the leaky split of many 2D papers.

    Only for demonstrating leakage: slices of one person land on both sides. Rows keep their
    true ``participant_id``, so every audit downstream sees the leak.
    """
    keyed = slices.assign(_subject=slices["participant_id"])
    keyed["participant_id"] = [f"{p}\x00{s}\x00{k}" for p, s, k in zip(slices["participant_id"], slices["session_id"], slices["slice_id"], strict=True)]
    parts = round_robin_split(keyed, ratios=ratios, seed=seed)
    return {name: _sorted(part.assign(participant_id=part["_subject"]).drop(columns="_subject")) for name, part in parts.items()}


def read_split_dir(split_dir: str | os.PathLike[str]) -> dict[str, pd.DataFrame]:
    """Read ``train.tsv``, ``val.tsv`` and ``test.tsv`` from a split folder.

    Args:
        split_dir: folder written by ``write_splits`` (or one ``fold-<k>`` folder).

    Returns:
        Split name to scan table; ID columns as strings, ``age`` numeric if present.

    Raises:
        AlzmriError: the folder or a split file is missing, unreadable, has a column twice
            (pandas would rename the second to ``<name>.1``) or lacks participant_id.
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
        check_unique_columns(_header(path), f"split file {path}")
        if "participant_id" not in df.columns:
            raise AlzmriError(f"split file {path} has no participant_id column")
        if "age" in df.columns:
            df["age"] = pd.to_numeric(df["age"], errors="coerce")
        out[name] = df
    return out


def _header(path: Path) -> list[str]:
    """The column names of a tab-separated file's first line, as pandas reads them."""
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        return [name.strip() for name in fh.readline().rstrip("\r\n").split("\t")]


def _check_ratios(ratios: Sequence[float]) -> dict[str, float]:
    values = list(ratios)
    if len(values) != len(SPLITS):
        raise AlzmriError(f"split ratios need 3 values (train, val, test), got {values}")
    if any(not math.isfinite(r) or r < 0 for r in values) or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
        raise AlzmriError(f"split ratios must be >= 0 and sum to 1, got {values}")
    return dict(zip(SPLITS, values, strict=True))


def _diagnosis_sequences(scans: pd.DataFrame) -> dict[str, list[str]]:
    """Per subject (sorted), its scans' diagnoses in natural session order (file order on ties)."""
    _check_scans(scans)
    sessions = scans["session_id"] if "session_id" in scans.columns else pd.Series("", index=scans.index)
    keyed: dict[str, list[tuple[list, str]]] = {}
    for pid, sid, dx in zip(scans["participant_id"], sessions, scans["diagnosis"], strict=True):
        keyed.setdefault(pid, []).append((_natural_key(str(sid)), dx))
    return {pid: [dx for _, dx in sorted(keyed[pid], key=lambda item: item[0])] for pid in sorted(keyed)}


def _check_scans(scans: pd.DataFrame) -> None:
    missing = [c for c in ("participant_id", "diagnosis") if c not in scans.columns]
    if missing:
        raise AlzmriError(f"scan table lacks column(s) {', '.join(missing)}")
    if scans.empty:
        raise AlzmriError("scan table is empty: nothing to split")


def _natural_key(text: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def _ordered(diagnoses) -> list[str]:
    """Diagnoses in clinical order (CN, MCI, AD; the OASIS stages by CDR), others after them by name."""
    from alzmri.data.slices.classes import ordered_classes

    try:
        return ordered_classes(sorted(set(diagnoses)))
    except AlzmriError:  # stage families mixed: their relative order is undefined
        known = [d for d in DIAGNOSES if d in set(diagnoses)]
        return known + sorted(set(diagnoses) - set(DIAGNOSES))


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    by = [c for c in ("participant_id", "session_id") if c in df.columns]
    return df.sort_values(by, kind="stable").reset_index(drop=True)
