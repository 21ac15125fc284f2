"""Scan manifests: a TSV/CSV table with one row per scan, and the validation rules shared with BIDS.

Columns: ``participant_id``, ``session_id``, ``diagnosis`` (CN, MCI or AD), ``path`` (a scan
file in any format ``alzmri.io.nifti.load_scan`` reads, e.g. NIfTI, a ``.hdr`` or ``.img`` of an
Analyze pair, MGZ, MINC, NRRD, MetaImage, a ``.zip`` of one DICOM series; relative to the
manifest's folder or absolute), and optionally ``age`` and ``sex``. The format is checked when
the scan is read, not here.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from alzmri.utils.atomic import atomic_path
from alzmri.utils.errors import AlzmriError

DIAGNOSES = ("CN", "MCI", "AD")
# The four OASIS stages by Clinical Dementia Rating (0, 0.5, 1, 2), accepted as diagnoses too and
# kept in this spelling (e.g. ``Very_Mild_Demented`` reads as ``VeryMildDemented``).
STAGES = ("NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented")
_STAGE_KEYS = {re.sub(r"[^a-z]", "", s.lower()): s for s in STAGES}
REQUIRED_COLUMNS = ("participant_id", "session_id", "diagnosis", "path")
OPTIONAL_COLUMNS = ("age", "sex")
COLUMNS = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
# BIDS participants.tsv files usually spell sex out; accepting it avoids a pointless edit.
_SEXES = {"M": "M", "F": "F", "MALE": "M", "FEMALE": "F"}
# Spellings of "missing" in the optional columns ("n/a" is the BIDS convention).
_MISSING = {"", "n/a", "na", "nan", "none"}


def read_table(path: str | os.PathLike[str], what: str = "manifest") -> tuple[pd.DataFrame, list[str]]:
    """Read a TSV/CSV table with every cell as a stripped string and lower-case column names.

    The separator comes from the suffix (``.tsv`` tab, ``.csv`` comma), else it is sniffed.
    Blank lines are skipped; short rows are padded with empty cells.

    Args:
        path: the table file.
        what: what the file is, for error messages ("manifest", "labels file", ...).

    Returns:
        The table (default index) and, per row, where it is: ``"<path> row <i> (line <n>)"``.

    Raises:
        AlzmriError: the file is missing, unreadable, empty, has no data rows, a column
            name appears twice in the header (case-insensitively), or a row has more cells
            than the header.
    """
    path = Path(path)
    if not path.exists():
        raise AlzmriError(f"{what} {path} does not exist")
    if not path.is_file():
        raise AlzmriError(f"{what} {path} is not a file")
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, delimiter=_separator(path))
            lines = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise AlzmriError(f"cannot read {what} {path}: {exc}") from None
    if not lines:
        raise AlzmriError(f"{what} {path} is empty")
    header = [cell.strip().lower() for cell in lines[0][1]]
    check_unique_columns(header, f"{what} {path}")
    rows, where = [], []
    for i, (line, row) in enumerate(lines[1:], start=1):
        if len(row) > len(header):
            # pandas would silently turn the first column into an index here and shift every value.
            raise AlzmriError(
                f"{path} row {i} (line {line}): {len(row)} cells but the header has {len(header)}"
            )
        rows.append([cell.strip() for cell in row] + [""] * (len(header) - len(row)))
        where.append(f"{path} row {i} (line {line})")
    if not rows:
        raise AlzmriError(f"{what} {path} has no rows (only a header)")
    return pd.DataFrame(rows, columns=header, dtype=str), where


def _separator(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".tsv":
        return "\t"
    if suffix == ".csv":
        return ","
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        head = fh.readline()
    try:
        return csv.Sniffer().sniff(head, delimiters="\t,;").delimiter
    except csv.Error:
        return "\t"


def read_manifest(path: str | os.PathLike[str], labeled: bool = True) -> pd.DataFrame:
    """Read and validate a scan manifest.

    Args:
        path: a ``.tsv`` or ``.csv`` file (other suffixes: the separator is sniffed).
        labeled: require a diagnosis for every scan (see ``validate_scans``).

    Returns:
        One row per scan in file order: the columns of ``COLUMNS`` first (``age`` float,
        ``sex`` "M"/"F"/"", ``path`` absolute), then any extra columns of the file.

    Raises:
        AlzmriError: naming the file and row for any rule broken (see ``validate_scans``).
    """
    path = Path(path)
    df, where = read_table(path, "manifest")
    if "path" in df.columns:
        base = Path(os.path.abspath(path.parent))
        df["path"] = [_resolve(base, p) for p in df["path"]]
    return validate_scans(df, str(path), where=where, labeled=labeled)


def _resolve(base: Path, value: str) -> str:
    if not value:
        return value
    return os.path.abspath(base / Path(value).expanduser())


def validate_scans(df: pd.DataFrame, source: str, *, where: Sequence[str] | None = None, labeled: bool = True) -> pd.DataFrame:
    """Check a scan table and return a normalised copy; the rules shared by manifests and BIDS.

    Rules: no column twice; required columns present; no empty required cells; diagnosis in
    ``DIAGNOSES`` (any case, normalised to upper case) or one of the OASIS ``STAGES`` (any
    spelling, normalised to theirs); (participant_id, session_id) unique,
    with a message of its own when the two rows give different diagnoses; no scan file listed
    in two rows (compared after resolving symbolic links); ``path`` an existing file; ``age``
    numeric or empty; ``sex`` M/F (any case) or empty.

    Args:
        df: the scan table (cells are compared as stripped strings); ``path`` already absolute.
        source: the file or folder the table came from, named in errors.
        where: per row, where it came from (e.g. ``"labels.tsv row 3 (line 4)"``); by
            default ``"<source> row <i> (line <i + 1>)"``, i.e. a table with one header line.
        labeled: when False (scans to preprocess or predict), ``diagnosis`` may be missing or
            empty and ``path`` may also be a folder holding one DICOM series.

    Raises:
        AlzmriError: on the first broken rule, naming the row, subject and session.
    """
    df = df.reset_index(drop=True)
    if where is None:
        where = [f"{source} row {i} (line {i + 1})" for i in range(1, len(df) + 1)]
    if df.empty:
        raise AlzmriError(f"{source} has no scans")
    check_unique_columns([str(c) for c in df.columns], source)
    df = df.copy()
    if not labeled and "diagnosis" not in df.columns:
        df["diagnosis"] = ""
    check_columns(df, REQUIRED_COLUMNS, source)
    # Tables built in code may hold numbers or NaN; the rules below work on stripped strings.
    for col in [c for c in COLUMNS if c in df.columns]:
        df[col] = ["" if pd.isna(v) else str(v).strip() for v in df[col]]
    check_filled(df, [c for c in REQUIRED_COLUMNS if labeled or c != "diagnosis"], where)
    check_unique(df, ("participant_id", "session_id"), where)
    check_unique_files(df, where)
    df["diagnosis"] = _diagnoses(df, where, allow_empty=not labeled)
    df["age"] = _ages(df, where) if "age" in df.columns else float("nan")
    df["sex"] = _sexes(df, where) if "sex" in df.columns else ""
    for i, p in enumerate(df["path"]):
        if not (Path(p).is_file() or (not labeled and Path(p).is_dir())):
            problem = "is not a file" if Path(p).exists() else "does not exist"
            raise AlzmriError(f"{where[i]}, {_ident(df, i)}: scan {p} {problem}")
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[list(COLUMNS) + extra]


def check_columns(df: pd.DataFrame, required: Sequence[str], source: str) -> None:
    """Raise naming every column of ``required`` that ``df`` lacks.

    Args:
        df: the table.
        required: column names it must have.
        source: the file, named in the error.
    """
    missing = [c for c in required if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns)) or "none"
        raise AlzmriError(
            f"{source} is missing required column(s) {', '.join(missing)} (found: {found})"
        )


def check_filled(df: pd.DataFrame, columns: Sequence[str], where: Sequence[str]) -> None:
    """Raise at the first row with an empty cell in one of ``columns``.

    Args:
        df: the table, cells as stripped strings, default integer index.
        columns: columns that must not be empty.
        where: per row, where it came from.
    """
    for i in range(len(df)):
        for col in columns:
            if df.at[i, col] == "":
                raise AlzmriError(f"{where[i]}, {_ident(df, i)}: empty {col}")


def check_unique_columns(columns: Sequence[str], source: str) -> None:
    """Raise naming the first column name that appears more than once.

    A repeated column is ambiguous (which ``diagnosis`` is meant?), so it is refused rather
    than resolved; empty names (e.g. from a trailing separator) are not compared.

    Args:
        columns: the column names, as they will be looked up (e.g. lower-cased).
        source: what the table is, named in the error (e.g. ``"manifest m.tsv"``).
    """
    positions: dict[str, list[int]] = {}
    for number, name in enumerate(columns, start=1):
        if name:
            positions.setdefault(name, []).append(number)
    for name, numbers in positions.items():
        if len(numbers) > 1:
            times = "twice" if len(numbers) == 2 else f"{len(numbers)} times"
            listed = ", ".join(map(str, numbers[:-1])) + f" and {numbers[-1]}"
            raise AlzmriError(f"{source} has the column {name!r} {times} (columns {listed}); keep one")


def check_unique(df: pd.DataFrame, keys: Sequence[str], where: Sequence[str]) -> None:
    """Raise naming both rows of the first repeated ``keys`` combination.

    When both rows give a diagnosis and the two differ, the error says so: one scan (or, for
    a table keyed by subject only, one subject) cannot be both.

    Args:
        df: the table, cells as stripped strings, default integer index.
        keys: columns that together must be unique.
        where: per row, where it came from.
    """
    first: dict[tuple[str, ...], int] = {}
    for i, key in enumerate(df[list(keys)].itertuples(index=False, name=None)):
        if key in first:
            raise AlzmriError(_repeated_key(df, keys, key, first[key], i, where))
        first[key] = i


def _repeated_key(df: pd.DataFrame, keys: Sequence[str], key: tuple[str, ...], i: int, j: int, where: Sequence[str]) -> str:
    """The message for rows ``i`` and ``j`` sharing ``key``."""
    ident = "/".join(map(str, key))
    dx = [str(df.at[k, "diagnosis"]).strip() for k in (i, j)] if "diagnosis" in df.columns else ["", ""]
    if not (dx[0] and dx[1]) or dx[0].upper() == dx[1].upper():
        return f"{ident} is listed twice: {where[i]} and {where[j]}"
    fix = "fix the wrong row" if "session_id" in keys else "add a session_id column if the diagnosis changed between sessions"
    return f"{ident} has two different diagnoses, {dx[0]} ({where[i]}) and {dx[1]} ({where[j]}); {fix}"


def check_unique_files(df: pd.DataFrame, where: Sequence[str]) -> None:
    """Raise naming the file and both rows when one scan file is listed twice.

    The same image under two subjects (or two sessions) would put one scan into two places,
    possibly two splits. Paths are compared after resolving symbolic links.

    Args:
        df: the table with an absolute ``path`` column, default integer index.
        where: per row, where it came from.
    """
    first: dict[str, int] = {}
    for i, path in enumerate(df["path"]):
        if not path:
            continue
        real = os.path.realpath(path)
        if real in first:
            j = first[real]
            raise AlzmriError(
                f"scan {path} is listed twice: {where[j]} ({_ident(df, j)}) and {where[i]} ({_ident(df, i)}); "
                "every row needs its own scan file"
            )
        first[real] = i


def _ident(df: pd.DataFrame, i: int) -> str:
    parts = [str(df.at[i, c]) or "?" for c in ("participant_id", "session_id") if c in df.columns]
    return "/".join(parts) or "?"


def _diagnoses(df: pd.DataFrame, where: Sequence[str], allow_empty: bool = False) -> list[str]:
    out = []
    for i, value in enumerate(df["diagnosis"]):
        stage = _STAGE_KEYS.get(re.sub(r"[^a-z]", "", value.lower()))
        if stage is not None:
            out.append(stage)
            continue
        if value.upper() not in DIAGNOSES and not (allow_empty and not value):
            raise AlzmriError(
                f"{where[i]}, {_ident(df, i)}: unknown diagnosis {value!r} (allowed: {', '.join(DIAGNOSES)}, or the OASIS stages {', '.join(STAGES)})"
            )
        out.append(value.upper())
    return out


def _ages(df: pd.DataFrame, where: Sequence[str]) -> list[float]:
    out = []
    for i, value in enumerate(df["age"]):
        if value.lower() in _MISSING:
            out.append(float("nan"))
            continue
        try:
            age = float(value)
        except ValueError:
            age = float("nan")
        if not math.isfinite(age):
            raise AlzmriError(f"{where[i]}, {_ident(df, i)}: age {value!r} is not a number")
        out.append(age)
    return out


def _sexes(df: pd.DataFrame, where: Sequence[str]) -> list[str]:
    out = []
    for i, value in enumerate(df["sex"]):
        if value.lower() in _MISSING:
            out.append("")
        elif value.upper() in _SEXES:
            out.append(_SEXES[value.upper()])
        else:
            raise AlzmriError(f"{where[i]}, {_ident(df, i)}: sex {value!r} is not M, F or empty")
    return out


def write_manifest(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a scan table as a tab-separated file without index, atomically.

    Args:
        df: the scan table (any columns; missing values are written as empty cells).
        path: the output file.

    Returns:
        ``path`` as a Path.
    """
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)
    return Path(path)
