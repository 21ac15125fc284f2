"""Reading and validating predictions tables, from alzmri or from another tool.

A predictions table has one row per scan:

``participant_id``
    required.
``session_id``
    optional; filled with ``""`` when absent (one scan per subject).
``diagnosis``
    the true label, required; must be one of the classes.
``prob_<class>``
    at least two; the classes are the ``<class>`` parts, in column order. Each row's
    probabilities must lie in [0, 1] and sum to 1 (within ``SUM_TOLERANCE``).
``predicted``
    optional; the arg-max of the probabilities when absent.
``split``
    optional (train/val/test...); passed through untouched, as are any other columns.

Every check raises :class:`~alzmri.utils.errors.AlzmriError` with a one-line message naming
the file (or ``where``), the problem and the first offending row. Rows are counted from 1,
the header not included.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pandas as pd

from alzmri.utils.errors import AlzmriError

PROB_PREFIX = "prob_"
# Probabilities written with 6 decimals (predictions_table) are off by at most
# n_classes * 5e-7, far inside this tolerance.
SUM_TOLERANCE = 1e-3
# Spellings of an empty cell.
_MISSING = {"", "n/a", "na", "nan", "none", "null"}


def read_predictions(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, list[str]]:
    """Read and validate a predictions table (``.tsv`` tab-separated, ``.csv`` comma-separated).

    Column names are stripped and lower-cased, except the class part of ``prob_<class>``
    columns, which keeps its case (``Prob_AD`` -> ``prob_AD``).

    Returns:
        The normalised table (see :func:`validate_predictions`) and the classes.

    Raises:
        AlzmriError: the file is missing, not a TSV/CSV, unreadable, or fails validation.
    """
    path = Path(path)
    if not path.exists():
        raise AlzmriError(f"predictions file {path} does not exist")
    if not path.is_file():
        raise AlzmriError(f"predictions file {path} is not a file")
    suffix = path.suffix.lower()
    if suffix not in (".tsv", ".csv"):
        raise AlzmriError(f"predictions file {path} is not a TSV or CSV (its name must end in .tsv or .csv)")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            lines = [row for row in reader if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise AlzmriError(f"cannot read predictions file {path}: {exc}") from None
    if not lines:
        raise AlzmriError(f"predictions file {path} is empty")
    header = [_column_name(cell) for cell in lines[0]]
    if len(header) < 2:
        sep = "tab" if suffix == ".tsv" else "comma"
        raise AlzmriError(f"predictions file {path} has a single column: is it really {sep}-separated?")
    rows = []
    for i, row in enumerate(lines[1:], start=1):
        if len(row) > len(header):
            raise AlzmriError(f"predictions file {path} row {i}: {len(row)} cells but the header has {len(header)}")
        rows.append([cell.strip() for cell in row] + [""] * (len(header) - len(row)))
    if not rows:
        raise AlzmriError(f"predictions file {path} has no rows (only a header)")
    _check_unique_columns(header, str(path))
    table = pd.DataFrame(rows, columns=header, dtype=str)
    classes = validate_predictions(table, where=str(path))
    return table, classes


def validate_predictions(table: pd.DataFrame, where: str = "predictions") -> list[str]:
    """Check a predictions table and normalise it **in place**; return its classes.

    Normalisation: ``participant_id``, ``session_id``, ``diagnosis`` and ``predicted`` become
    stripped strings, ``prob_*`` columns floats; a missing ``session_id`` column is added as
    ``""`` and a missing ``predicted`` column as the arg-max of the probabilities. A ``split``
    column and any other column are left alone.

    Args:
        table: the table (e.g. from :func:`read_predictions` or ``predictions_table``).
        where: the file or description used in error messages.

    Returns:
        The classes, from the ``prob_<class>`` columns in column order.

    Raises:
        AlzmriError: one line naming ``where``, the problem and the first offending row.
    """
    if table.empty:
        raise AlzmriError(f"predictions {where} has no rows")
    columns = [str(c) for c in table.columns]
    _check_unique_columns(columns, where)
    classes = [c[len(PROB_PREFIX):] for c in columns if c.startswith(PROB_PREFIX)]
    missing = [c for c in ("participant_id", "diagnosis") if c not in columns]
    if len(classes) < 2:
        missing.append(f"at least two prob_<class> columns (found {len(classes)})")
    if missing:
        raise AlzmriError(f"predictions {where} lacks required columns: {', '.join(missing)} (has: {', '.join(columns)})")
    if "" in classes:
        raise AlzmriError(f"predictions {where}: a column is named just 'prob_' (expected prob_<class>)")

    for col in ("participant_id", "diagnosis"):
        table[col] = _strings(table[col])
        bad = _first(table[col].str.lower().isin(_MISSING))
        if bad is not None:
            raise AlzmriError(f"predictions {where} row {bad + 1}: empty {col}")
    table["session_id"] = _strings(table["session_id"]) if "session_id" in columns else ""
    table.loc[table["session_id"].str.lower().isin(_MISSING), "session_id"] = ""

    for c in classes:
        col = f"{PROB_PREFIX}{c}"
        raw = table[col]
        values = pd.to_numeric(raw, errors="coerce").astype(float)
        bad = _first(values.isna().to_numpy())
        if bad is not None:
            cell = str(raw.iloc[bad]).strip()
            what = "empty" if cell.lower() in _MISSING else f"not a number ({cell!r})"
            raise AlzmriError(f"predictions {where} row {bad + 1} ({_subject(table, bad)}): {col} is {what}")
        bad = _first(~((values >= 0) & (values <= 1)).to_numpy())
        if bad is not None:
            raise AlzmriError(
                f"predictions {where} row {bad + 1} ({_subject(table, bad)}): "
                f"{col} = {values.iloc[bad]:g} is outside [0, 1]"
            )
        table[col] = values
    probs = table[[f"{PROB_PREFIX}{c}" for c in classes]].to_numpy(dtype=float)
    sums = probs.sum(axis=1)
    bad = _first(np.abs(sums - 1.0) > SUM_TOLERANCE)
    if bad is not None:
        raise AlzmriError(
            f"predictions {where} row {bad + 1} ({_subject(table, bad)}): probabilities sum to "
            f"{sums[bad]:.6g}, not 1 (tolerance {SUM_TOLERANCE:g}); {_count(np.abs(sums - 1.0) > SUM_TOLERANCE)}"
        )

    known = table["diagnosis"].isin(classes).to_numpy()
    bad = _first(~known)
    if bad is not None:
        raise AlzmriError(
            f"predictions {where} row {bad + 1} ({_subject(table, bad)}): diagnosis "
            f"{table['diagnosis'].iloc[bad]!r} is not one of the classes {', '.join(classes)}; {_count(~known)}"
        )
    present = table["diagnosis"].unique()
    if len(present) < 2:
        raise AlzmriError(
            f"predictions {where}: every true label is {present[0]!r}; metrics need at least two true classes"
        )

    if "predicted" in columns:
        table["predicted"] = _strings(table["predicted"])
        bad = _first(~table["predicted"].isin(classes).to_numpy())
        if bad is not None:
            raise AlzmriError(
                f"predictions {where} row {bad + 1} ({_subject(table, bad)}): predicted "
                f"{table['predicted'].iloc[bad]!r} is not one of the classes {', '.join(classes)}"
            )
    else:
        table["predicted"] = [classes[i] for i in probs.argmax(axis=1)]

    keys = ["participant_id", "session_id"] + (["slice_id"] if "slice_id" in columns else [])  # slice rows: one per slice
    dup = table.duplicated(keys, keep=False).to_numpy()
    bad = _first(dup)
    if bad is not None:
        pid, sid = table["participant_id"].iloc[bad], table["session_id"].iloc[bad]
        rows = np.flatnonzero(
            ((table["participant_id"] == pid) & (table["session_id"] == sid)).to_numpy()
        ) + 1
        raise AlzmriError(
            f"predictions {where}: participant_id {pid!r} session_id {sid!r} appears more than once "
            f"(rows {', '.join(map(str, rows))})"
        )
    return classes


def _column_name(cell: str) -> str:
    """Strip and lower-case a header cell; keep the case of the class in ``prob_<class>``."""
    name = cell.strip()
    if name.lower().startswith(PROB_PREFIX):
        return PROB_PREFIX + name[len(PROB_PREFIX):].strip()
    return name.lower()


def _check_unique_columns(columns: list[str], where: str) -> None:
    seen: set[str] = set()
    for c in columns:
        if c in seen:
            raise AlzmriError(f"predictions {where}: column {c!r} appears more than once in the header")
        seen.add(c)


def _strings(column: pd.Series) -> pd.Series:
    """Stripped strings, with missing values as ``""``."""
    return column.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v).strip())


def _first(mask: np.ndarray | pd.Series) -> int | None:
    """Position of the first True, or None."""
    hits = np.flatnonzero(np.asarray(mask, dtype=bool))
    return int(hits[0]) if len(hits) else None


def _count(mask: np.ndarray) -> str:
    n = int(np.count_nonzero(mask))
    return f"{n} row{'s' if n != 1 else ''} like this"


def _subject(table: pd.DataFrame, i: int) -> str:
    pid = table["participant_id"].iloc[i]
    sid = table["session_id"].iloc[i] if "session_id" in table else ""
    return f"{pid} {sid}".strip()
