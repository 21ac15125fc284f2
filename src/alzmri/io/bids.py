"""Read T1w scans from a BIDS folder, with diagnoses from a labels table, into manifest shape."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from alzmri.io.manifest import check_columns, check_filled, check_unique, read_manifest, read_table, validate_scans
from alzmri.io.volumes import T1W_SUFFIXES
from alzmri.utils.errors import AlzmriError

DEFAULT_SESSION = "ses-01"
# BIDS itself has NIfTI only; the other formats load_scan reads are accepted alike. A .hdr/.img
# pair is found once, by its .hdr; a MetaImage/NRRD data file (.raw) is not a scan of its own.
_PATTERNS = tuple(f"{level}/anat/*_T1w{suffix}" for level in ("sub-*/ses-*", "sub-*") for suffix in T1W_SUFFIXES)
_FORMATS = "|".join(suffix.lstrip(".") for suffix in T1W_SUFFIXES)


def read_bids(root: str | os.PathLike[str], labels: Path | None = None) -> pd.DataFrame:
    """Find the T1w scans of a BIDS folder and attach their diagnoses.

    Scans are ``sub-*/ses-*/anat/*_T1w.nii[.gz]``, or ``sub-*/anat/*_T1w.nii[.gz]`` (session
    ``ses-01``); besides NIfTI, any T1w format ``load_scan`` reads is found (``_T1w.mgz``,
    ``.mgh``, ``.hdr`` of a ``.hdr``/``.img`` pair, ``.mnc``, ``.nrrd``, ``.nhdr``, ``.mha``,
    ``.mhd``; see ``alzmri.io.volumes.T1W_SUFFIXES``). Diagnoses come from ``labels`` if
    given, else ``root/labels.tsv``, else the ``diagnosis`` column of ``root/participants.tsv``.
    A labels table with a ``session_id`` column labels scans; without one it labels subjects
    (all their sessions). IDs written without their ``sub-``/``ses-`` prefix are accepted.
    Every scan needs a label row and every label row a scan.

    Args:
        root: the BIDS dataset folder.
        labels: a TSV/CSV with ``participant_id``, [``session_id``,] ``diagnosis`` and
            optionally ``age``, ``sex``.

    Returns:
        The validated table of ``read_manifest`` (absolute ``path``), sorted by subject, session.

    Raises:
        AlzmriError: no scans; two T1w for one subject/session; a scan without a label row
            or a label row without a scan; any rule of ``validate_scans``.
    """
    root = Path(root)
    if not root.is_dir():
        raise AlzmriError(f"BIDS folder {root} {'is not a folder' if root.exists() else 'does not exist'}")
    scans = _find_t1w(root)
    labels_path = _labels_file(root, labels)
    table, where = read_table(labels_path, "labels file")
    table = table.drop(columns="path", errors="ignore")
    source = str(labels_path)
    keys = ["participant_id", "session_id"] if "session_id" in table.columns else ["participant_id"]
    check_columns(table, [*keys, "diagnosis"], source)
    table["participant_id"] = [_prefixed(v, "sub-") for v in table["participant_id"]]
    if "session_id" in table.columns:
        table["session_id"] = [_prefixed(v, "ses-") for v in table["session_id"]]
    check_filled(table, [*keys, "diagnosis"], where)
    check_unique(table, keys, where)
    table["_row"] = range(len(table))

    merged = scans.merge(table, on=keys, how="outer", indicator=True)
    unlabelled = merged[merged["_merge"] == "left_only"]
    if len(unlabelled):
        first = unlabelled.iloc[0]
        more = f" (and {len(unlabelled) - 1} more scans)" if len(unlabelled) > 1 else ""
        raise AlzmriError(
            f"scan {first['path']} ({first['participant_id']}/{first['session_id']}) "
            f"has no diagnosis row in {source}{more}"
        )
    orphans = merged[merged["_merge"] == "right_only"]
    if len(orphans):
        first = orphans.iloc[0]
        ident = "/".join(str(first[k]) for k in keys)
        raise AlzmriError(f"{where[int(first['_row'])]}, {ident}: no T1w scan for it under {root}")

    merged = merged.sort_values(["participant_id", "session_id"]).reset_index(drop=True)
    row_where = [where[int(r)] for r in merged["_row"]]
    return validate_scans(merged.drop(columns=["_row", "_merge"]), source, where=row_where)


def _find_t1w(root: Path) -> pd.DataFrame:
    found: dict[tuple[str, str], str] = {}
    files = sorted({f for pattern in _PATTERNS for f in root.glob(pattern) if f.is_file()})
    for f in files:
        level = f.parent.parent
        if level.name.startswith("ses-"):
            key = (level.parent.name, level.name)
        else:
            key = (level.name, DEFAULT_SESSION)
        path = os.path.abspath(f)
        if key in found:
            # Several T1w per session (acq-/run- entities): picking one silently would hide a choice.
            raise AlzmriError(
                f"more than one T1w for {key[0]}/{key[1]}: {found[key]} and {path}; "
                "keep one, or list the scans to use in a manifest"
            )
        found[key] = path
    if not found:
        raise AlzmriError(f"no T1w images (sub-*/[ses-*/]anat/*_T1w.{{{_FORMATS}}}) found under {root}")
    rows = [(pid, sid, path) for (pid, sid), path in found.items()]
    return pd.DataFrame(rows, columns=["participant_id", "session_id", "path"], dtype=str)


def _labels_file(root: Path, labels: Path | None) -> Path:
    if labels is not None:
        return Path(labels)
    for name in ("labels.tsv", "participants.tsv"):
        if (root / name).is_file():
            return root / name
    raise AlzmriError(
        f"no diagnoses for {root}: pass a labels file, or add labels.tsv "
        "(participant_id, session_id, diagnosis) or a diagnosis column in participants.tsv"
    )


def _prefixed(value: str, prefix: str) -> str:
    return value if not value or value.startswith(prefix) else prefix + value


def load_scans(source: str | os.PathLike[str], labels: Path | None = None, labeled: bool = True) -> pd.DataFrame:
    """Load scans from a BIDS folder or a ``.tsv``/``.csv`` manifest.

    Args:
        source: a BIDS dataset folder, or a manifest file.
        labels: labels table for a BIDS folder (see ``read_bids``); not allowed with a manifest.
        labeled: require a diagnosis per scan; when False a manifest may leave it empty and
            list DICOM series folders (e.g. the manifest written by ``alzmri convert``).

    Raises:
        AlzmriError: ``source`` is missing or neither a folder nor a .tsv/.csv file, or
            ``labels`` was given with a manifest, or the scans are invalid.
    """
    source = Path(source)
    if source.is_dir():
        return read_bids(source, labels)
    if not source.exists():
        raise AlzmriError(f"scan source {source} does not exist")
    if source.is_file() and source.suffix.lower() in (".tsv", ".csv"):
        if labels is not None:
            raise AlzmriError(f"a labels file only applies to a BIDS folder; {source} is a manifest with diagnoses")
        return read_manifest(source, labeled=labeled)
    raise AlzmriError(f"scan source {source} is neither a BIDS folder nor a .tsv/.csv manifest")
