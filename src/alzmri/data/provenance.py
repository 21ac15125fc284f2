"""What a model was trained on, stored in its checkpoint, and which scored scans it has seen.

A re-made split, or a second cache of the same cohort, can put a model's training subjects in
a "test" set that the split's own leakage audit passes. The checkpoint therefore carries the
ids and content hashes of its train and val scans (plain lists, no pickled objects), and every
command that scores scans asks :func:`find_seen` first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from alzmri.utils.hashing import content_digest

PARTS = ("train", "val")
_HASHES = ("image_hash", "source_hash")


def image_hashes(scans: pd.DataFrame) -> list[str]:
    """Content hash of each scan's cached array (the ``array`` column)."""
    return [content_digest(path) for path in scans["array"]]


def training_record(train: pd.DataFrame, val: pd.DataFrame, cache: str | Path) -> dict[str, Any]:
    """The checkpoint's record of its data: per part, ids, cached-image and source-file hashes.

    ``source_hash`` (the hash of the raw input file, from the cache manifest) is left empty
    for caches made before it was recorded.
    """
    record: dict[str, Any] = {"cache": str(Path(cache).resolve())}
    for name, part in (("train", train), ("val", val)):
        sources = part["source_hash"].fillna("").astype(str).tolist() if "source_hash" in part else [""] * len(part)
        record[name] = {
            "participant_id": part["participant_id"].astype(str).tolist(),
            "session_id": part["session_id"].fillna("").astype(str).tolist(),
            "image_hash": image_hashes(part),
            "source_hash": sources,
        }
    return record


def find_seen(record: dict[str, Any] | None, scans: pd.DataFrame, cache: str | Path | None = None, same_dataset: bool = False) -> pd.DataFrame:
    """The scored scans the model saw in training or validation, and how they were recognised.

    A scan is seen when its cached image or its source file has the content hash of a train or
    val scan (whatever its id), or when its subject is a train or val subject *of the same
    dataset*: the same cache folder, or a dataset sharing at least one image with the training
    data (ids like ``sub-001`` recur across unrelated cohorts, so an id alone proves nothing).

    Args:
        record: the checkpoint's ``training_data`` (None for checkpoints made before it existed).
        scans: the scored rows: ``participant_id``, optional ``session_id``, ``image_hash``,
            ``source_hash``.
        cache: the cache the scans come from, if any.
        same_dataset: the caller knows the scans come from the training cohort (ids alone count).

    Returns:
        One row per seen scan: ``position`` (its row number in ``scans``), ``participant_id``,
        ``session_id``, ``seen_in`` (``train`` or ``val``) and ``seen_by`` (``image``,
        ``source file`` or ``subject``); empty if none.
    """
    columns = ["position", "participant_id", "session_id", "seen_in", "seen_by"]
    if not record or scans.empty:
        return pd.DataFrame(columns=columns)
    known: dict[str, dict[str, str]] = {key: {} for key in (*_HASHES, "participant_id")}
    for part in PARTS:  # train wins over val when a subject is in both (a leaky training split)
        for key in known:
            for value in record.get(part, {}).get(key, []):
                if value:
                    known[key].setdefault(value, part)
    hashes = {key: scans[key].fillna("").astype(str) if key in scans else pd.Series("", index=scans.index) for key in _HASHES}
    by_hash = [hashes[key].map(known[key]) for key in _HASHES]
    same_dataset = same_dataset or bool(cache is not None and str(Path(cache).resolve()) == record.get("cache")) or any(h.notna().any() for h in by_hash)
    subjects = scans["participant_id"].astype(str).tolist()
    sessions = scans["session_id"].fillna("").astype(str).tolist() if "session_id" in scans else [""] * len(scans)
    rows = []
    for i, (pid, ses) in enumerate(zip(subjects, sessions, strict=True)):
        found = [(h.iloc[i], label) for h, label in zip(by_hash, ("image", "source file"), strict=True) if isinstance(h.iloc[i], str)]
        if not found and same_dataset and pid in known["participant_id"]:
            found = [(known["participant_id"][pid], "subject")]
        if found:
            rows.append({"position": i, "participant_id": pid, "session_id": ses, "seen_in": found[0][0], "seen_by": found[0][1]})
    return pd.DataFrame(rows, columns=columns)


def describe_seen(seen: pd.DataFrame, limit: int = 5) -> str:
    """One phrase naming the seen subjects, e.g. ``3 subjects the model trained on (sub-001, ...)``."""
    subjects = list(dict.fromkeys(seen["participant_id"]))
    parts = sorted(set(seen["seen_in"]), key=PARTS.index)
    shown = ", ".join(subjects[:limit]) + (", ..." if len(subjects) > limit else "")
    where = {("train",): "trained on", ("val",): "was validated on"}.get(tuple(parts), "trained or was validated on")
    return f"{len(seen)} scans of {len(subjects)} subjects the model {where} ({shown})"
