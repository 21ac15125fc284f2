"""Label checks before training: every class in train and val, and one label per scan.

Two ways a training run can go quietly wrong: a class with no validation scans (the model is
then selected on the other classes only), and a split file whose diagnoses differ from those
of the cache manifest (training reads the cache's labels, so the split's stratification and
the labels used disagree). Both are refused here with one line naming what to do.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from alzmri.io.manifest import DIAGNOSES
from alzmri.utils.errors import AlzmriError

_KEYS = ("participant_id", "session_id")


def check_training_splits(train: pd.DataFrame, val: pd.DataFrame, classes: Sequence[str], where: str | None = None) -> list[str]:
    """Refuse a train or val split that lacks one of ``classes``; warn about scans left out.

    Args:
        train: the train split's scans (a ``diagnosis`` column), before filtering to ``classes``.
        val: the val split's scans, likewise.
        classes: the classes the model will learn.
        where: the split folder, named in messages (``"the val split of <where>"``).

    Returns:
        Warning messages (without a ``warning:`` prefix): one per split holding scans of a
        class outside ``classes``, which training leaves out. Empty when there are none.

    Raises:
        AlzmriError: a class of ``classes`` has no scans in train (checked first) or in val.
    """
    for name, part, consequence in (("train", train, "a model cannot learn it"),
                                    ("val", val, "a model cannot be selected on it")):
        present = {dx.upper() for dx in _diagnoses(part)}
        missing = [c for c in classes if c.strip().upper() not in present]
        if missing:
            raise AlzmriError(
                f"{_split(name, where)} has no scans of class{'es' if len(missing) > 1 else ''} {', '.join(missing)}; "
                f"{consequence} — re-split with more subjects or fewer classes"
            )
    return [message for name, part in (("train", train), ("val", val)) if (message := _left_out(name, part, classes, where))]


def compare_labels(split: pd.DataFrame, cache: pd.DataFrame, split_name: str = "train") -> None:
    """Refuse a split whose diagnoses differ from the cache manifest's for the same scans.

    Scans are matched on (participant_id, session_id); diagnoses are compared as stripped,
    upper-case strings, a missing one as empty. Scans of the split that the cache lacks are
    not compared (``select_scans`` refuses those). A split without a ``diagnosis`` column has
    nothing to compare.

    Args:
        split: the rows of one split file (``participant_id``, ``session_id``, ``diagnosis``).
        cache: the cache manifest rows (``participant_id``, ``session_id``, ``diagnosis``).
        split_name: the split's name, for the message.

    Raises:
        AlzmriError: naming how many scans differ and the first of them (split file order).
    """
    if "diagnosis" not in split.columns or split.empty:
        return
    cached = dict(zip(_keys(cache), _diagnoses(cache), strict=True))
    differ = [(key, dx, cached[key]) for key, dx in zip(_keys(split), _diagnoses(split), strict=True)
              if key in cached and cached[key].upper() != dx.upper()]
    if differ:
        (pid, sid), ours, theirs = differ[0]
        scans = "1 scan" if len(differ) == 1 else f"{len(differ)} scans"
        raise AlzmriError(
            f"{scans} of the {split_name} split {'has' if len(differ) == 1 else 'have'} another diagnosis in the cache "
            f"manifest, e.g. {pid}/{sid}: {ours or 'none'} in the split, {theirs or 'none'} in the cache; split and cache "
            "were made from different labels: re-run 'alzmri preprocess' (cached arrays are reused) or 'alzmri split' "
            "with the same labels"
        )


def _left_out(name: str, part: pd.DataFrame, classes: Sequence[str], where: str | None) -> str | None:
    """The warning for ``part``'s scans of classes outside ``classes``, or None."""
    counts = pd.Series(_diagnoses(part), dtype=object).value_counts()
    wanted = {c.strip().upper() for c in classes}
    other = [dx for dx in (*DIAGNOSES, *sorted(set(counts.index) - set(DIAGNOSES))) if dx in counts.index and dx.upper() not in wanted]
    if not other:
        return None
    listed = ", ".join(f"{int(counts[dx])} {dx or 'unlabelled'}" for dx in other)
    return f"{_split(name, where)} has scans outside the classes {', '.join(classes)} ({listed}); training leaves them out"


def _split(name: str, where: str | None) -> str:
    return f"the {name} split" + (f" of {where}" if where else "")


def _diagnoses(df: pd.DataFrame) -> list[str]:
    """The ``diagnosis`` column as stripped strings, a missing value as ``""`` (compared case-insensitively)."""
    if "diagnosis" not in df.columns:
        return [""] * len(df)
    return ["" if pd.isna(v) else str(v).strip() for v in df["diagnosis"]]


def _keys(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(participant_id, session_id) per row, as stripped strings (a missing session as ``""``)."""
    columns = [df[c] if c in df.columns else pd.Series("", index=df.index) for c in _KEYS]
    return [tuple("" if pd.isna(v) else str(v).strip() for v in pair) for pair in zip(*columns, strict=True)]
