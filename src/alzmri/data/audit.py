"""Leakage audit: no subject (and no scan file) may appear in more than one split."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from alzmri.data.splits import SPLITS, read_split_dir, split_level
from alzmri.utils.errors import AlzmriError


@dataclass(frozen=True)
class Leak:
    """A subject, or a scan file, found in two or more splits.

    Attributes:
        participant_id: the leaking subject; for a scan leak, the comma-joined subjects
            the file is listed under.
        splits: the splits it is in, in train/val/test order (prefixed ``fold-<k>/`` in a
            k-fold audit).
        path: the scan file, for a scan listed under different subjects in different
            splits; None for a subject leak.
    """

    participant_id: str
    splits: tuple[str, ...]
    path: str | None = None

    def describe(self) -> str:
        """One phrase for error messages, e.g. ``subject sub-003 is in train and test``."""
        where = _and(self.splits)
        if self.path is None:
            return f"subject {self.participant_id} is in {where}"
        return f"scan {self.path} (subjects {self.participant_id}) is in {where}"


def find_leaks(splits: Mapping[str, pd.DataFrame]) -> list[Leak]:
    """Every subject in two or more splits, and every scan file in two or more splits.

    A scan file listed under one subject in several splits is reported once, as that
    subject's leak; a file listed under different subjects (a copied or mislabelled scan)
    is reported as a scan leak.

    Args:
        splits: split name to scan table (needs ``participant_id``; ``path`` is optional).

    Returns:
        Subject leaks sorted by participant_id, then scan leaks sorted by path.
    """
    names = _ordered(splits)
    subject_splits: dict[str, list[str]] = {}
    path_rows: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        df = splits[name]
        for pid in dict.fromkeys(df["participant_id"].astype(str)):
            subject_splits.setdefault(pid, []).append(name)
        if "path" in df.columns:
            for pid, path in zip(df["participant_id"].astype(str), df["path"].astype(str), strict=True):
                if path and path.lower() != "nan":
                    path_rows.setdefault(os.path.normpath(path), []).append((name, pid))
    leaks = [Leak(pid, tuple(s)) for pid, s in sorted(subject_splits.items()) if len(s) > 1]
    for path, rows in sorted(path_rows.items()):
        in_splits = tuple(n for n in names if any(r[0] == n for r in rows))
        subjects = sorted({pid for _, pid in rows})
        if len(in_splits) > 1 and len(subjects) > 1:
            leaks.append(Leak(",".join(subjects), in_splits, path))
    return leaks


def audit_split_dir(split_dir: str | os.PathLike[str]) -> list[Leak]:
    """Audit a split folder, or a k-fold folder (each ``fold-<k>`` audited separately).

    Args:
        split_dir: a folder with train/val/test TSVs, or with ``fold-<k>`` subfolders.

    Returns:
        All leaks; in a k-fold folder their split names are prefixed ``fold-<k>/``.

    Raises:
        AlzmriError: the folder or a split file is missing or unreadable.
    """
    split_dir = Path(split_dir)
    folds = sorted(
        (p for p in split_dir.glob("fold-*") if p.is_dir() and re.fullmatch(r"fold-\d+", p.name)),
        key=lambda p: int(p.name.removeprefix("fold-")),
    )
    if not folds:
        return find_leaks(read_split_dir(split_dir))
    leaks = []
    for fold in folds:
        splits = read_split_dir(fold)
        leaks += find_leaks({f"{fold.name}/{name}": df for name, df in splits.items()})
    return leaks


def leak_message(leaks: Sequence[Leak], where: str) -> str:
    """The one-line error for ``leaks``, naming every one.

    Args:
        leaks: leaks found (non-empty).
        where: the split being audited, e.g. its folder.
    """
    return f"leaky split in {where}: " + "; ".join(leak.describe() for leak in leaks)


def assert_no_leakage(splits: Mapping[str, pd.DataFrame], where: str) -> None:
    """Raise if any subject or scan file is in more than one split.

    Args:
        splits: split name to scan table.
        where: what is being checked, named in the error (e.g. the split folder).

    Raises:
        AlzmriError: ``leaky split in <where>: subject sub-003 is in train and test; ...``
    """
    leaks = find_leaks(splits)
    if leaks:
        raise AlzmriError(leak_message(leaks, where))


def check_split(splits: Mapping[str, pd.DataFrame], split_dir: str | os.PathLike[str]) -> str:
    """Refuse a leaky split, except one made with ``--level slice`` on purpose; returns the split's level.

    A slice-level split is let through with a warning on one line: it exists to show what such a
    split does to the numbers, and every report made from it carries the red banner.
    """
    level = split_level(split_dir)
    if level == "slice":
        leaks = find_leaks(splits)
        print(f"warning: {split_dir} is a slice-level split ({len(leaks)} subjects in more than one split): results from it are not valid, "
              "by design (--level slice demonstrates leakage)")  # fmt: skip
        return level
    assert_no_leakage(splits, where=str(split_dir))
    return level


def _ordered(splits: Mapping[str, pd.DataFrame]) -> list[str]:
    def key(name: str) -> tuple[str, int, str]:
        prefix, _, base = name.rpartition("/")
        return (prefix, SPLITS.index(base) if base in SPLITS else len(SPLITS), base)

    return sorted(splits, key=key)


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
