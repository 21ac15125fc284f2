"""DICOM series → BIDS-like NIfTI: ``alzmri convert``.

Every file under the input folder is read (headers only, with pydicom) and grouped by
SeriesInstanceUID, across sub-folders. Each series is classified from its tags by
:func:`alzmri.io.series_kind.classify_series` (T1w, fieldmap, localizer, derived, T2w, FLAIR,
dwi, bold, PD, other, unknown; the rules are documented there). Only ``T1w`` series are
converted; every other series is ``skipped`` with its kind and the tags that decided it (e.g.
"fieldmap: SequenceName fm2d2r, ImageType ORIGINAL\\PRIMARY\\P\\ND; not a T1w"), and a series whose
tags are too sparse to tell (kind ``unknown``) is skipped too. Each series is either converted or
reported with a reason in ``conversion.tsv``; one bad series never stops the others.

Output, under ``out_dir``::

    sub-<P>/ses-<S>/anat/sub-<P>_ses-<S>_run-<NN>_T1w.nii.gz   (+ a .json sidecar, same stem)
    conversion.tsv   every series: participant_id, session_id, series_uid, series_description,
                     n_files, kind, status (converted/skipped/failed), reason (for a converted
                     series the T1w evidence, or "already converted"), path
    manifest.tsv     converted series, one per (participant, session), for ``alzmri preprocess``
    conversion.log   pydicom and ITK/GDCM warnings of this run, one line per distinct message
                     (empty when there were none); they are also logged to ``alzmri.io.dicom``
                     and never printed

Labels: ``P`` is PatientID reduced to letters and digits (``anon<hash of StudyInstanceUID>``
when empty); ``S`` is the StudyDate (``01`` when missing), with ``b``, ``c``... appended to
further studies of the same participant that would get the same label. ``NN`` numbers the
convertible T1w series of a session in SeriesNumber order.

Manifest rule: ``validate_scans`` refuses a repeated (participant, session), so when a session
holds several converted series only the one with the most slices (then the lowest run) is
listed in ``manifest.tsv``; ``conversion.tsv`` lists them all. DICOM has no diagnosis, so the
manifest's ``diagnosis`` column is written empty: fill it in (CN, MCI or AD) before using it.
``age`` and ``sex`` come from PatientAge and PatientSex when present.

Re-running with the same ``out_dir`` keeps NIfTI files that already exist (resumable); the
input folder is only ever read.

``read_dicom_series`` applies the same checks and returns the largest convertible T1w series as an
in-memory NIfTI image, writing nothing (a folder whose only candidate is one series of unknown
kind is read too, with a warning). Grouping, checks, geometry and reading live in
:mod:`alzmri.io.dicom_series`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from alzmri.io.dicom_series import (
    _check_all,
    _check_one,
    _describe,
    _first,
    _list_files,
    _quiet_dicom,
    _read_headers,
    _read_volume,
    _Series,
    _to_nifti,
)
from alzmri.io.manifest import write_manifest
from alzmri.utils.atomic import atomic_path, atomic_write_text
from alzmri.utils.errors import AlzmriError, first_line

TABLE_COLUMNS = ("participant_id", "session_id", "series_uid", "series_description", "n_files", "kind", "status", "reason", "path")
SIDECAR_TAGS = (
    "PatientID", "PatientSex", "PatientAge", "StudyDate", "StudyInstanceUID", "SeriesInstanceUID",
    "SeriesNumber", "SeriesDescription", "Modality", "Manufacturer", "ManufacturerModelName",
    "MagneticFieldStrength", "RepetitionTime", "EchoTime", "InversionTime", "FlipAngle",
    "SliceThickness", "PixelSpacing",
)

if TYPE_CHECKING:
    import nibabel as nib


def convert_dicom_dir(dicom_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], min_slices: int = 10, progress: bool = True) -> pd.DataFrame:
    """Convert every usable DICOM series under ``dicom_dir`` to NIfTI in ``out_dir``.

    See the module docstring for the output layout, labels and the manifest rule.

    Args:
        dicom_dir: folder searched recursively; any file names; non-DICOM files are ignored.
        out_dir: output folder (created; must not be inside ``dicom_dir``).
        min_slices: T1w series with fewer slices are skipped.
        progress: show tqdm progress bars.

    Returns:
        The conversion table (``TABLE_COLUMNS``), one row per series; ``attrs`` holds
        ``n_files`` (files found), ``ignored_files`` (not DICOM, unreadable, or without an
        image, e.g. DICOMDIR), ``manifest`` (the manifest's path) and ``warnings`` (the number of
        distinct library warnings written to ``conversion.log``).

    Raises:
        AlzmriError: ``dicom_dir`` is missing, ``out_dir`` is inside it, or no series could be
            converted (``conversion.tsv`` is still written when series were found).
    """
    from tqdm.auto import tqdm

    dicom_dir, paths = _list_files(dicom_dir)
    out_dir = Path(out_dir)
    src, dst = dicom_dir.resolve(), out_dir.resolve()
    if dst == src or src in dst.parents:
        raise AlzmriError(f"output folder {out_dir} is inside the DICOM folder {dicom_dir}, which is never modified")

    log_ready = False
    try:
        with _quiet_dicom() as messages:
            messages.context = "reading headers"
            series, ignored = _read_headers(tqdm(paths, desc="reading DICOM headers", unit="file", disable=not progress))
            if not series:
                raise AlzmriError(f"no DICOM image series found under {dicom_dir} ({len(paths)} files, none a DICOM image)")

            for s in series:
                _label(s)
            _check_all(series, min_slices, messages)
            _assign_sessions(series)
            _assign_runs(series)
            series.sort(key=lambda s: (s.participant, s.session, _series_number(s)))
            out_dir.mkdir(parents=True, exist_ok=True)
            log_ready = True
            for s in tqdm(series, desc="converting series", unit="series", disable=not progress):
                if s.status == "":
                    messages.context = _describe(s)
                    _convert(s, out_dir, dicom_dir)
            messages.context = ""

            table = pd.DataFrame(
                [
                    (f"sub-{s.participant}", f"ses-{s.session}", s.uid, _first(s, "SeriesDescription"), len(s.files), s.kind, s.status, s.reason, s.path)
                    for s in series
                ],
                columns=list(TABLE_COLUMNS),
            )
            write_manifest(table, out_dir / "conversion.tsv")
            converted = [s for s in series if s.status == "converted"]
            if not converted:
                counts = table["status"].value_counts().to_dict()
                kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(table["kind"].value_counts().items(), key=lambda c: (-c[1], c[0])))
                raise AlzmriError(
                    f"no series converted from {dicom_dir}: {counts.get('skipped', 0)} skipped, "
                    f"{counts.get('failed', 0)} failed; kinds: {kinds} (see {out_dir / 'conversion.tsv'})"
                )
            manifest = write_manifest(_manifest(converted), out_dir / "manifest.tsv")
    finally:
        if log_ready:  # the messages are complete once the block has exited
            atomic_write_text(out_dir / "conversion.log", "".join(line + "\n" for line in messages.lines()))
    table.attrs.update(n_files=len(paths), ignored_files=ignored, manifest=str(manifest), warnings=len(messages.lines()))
    return table


def read_dicom_series(folder: str | os.PathLike[str], min_slices: int = 10) -> tuple[nib.Nifti1Image, dict[str, Any]]:
    """Read the largest convertible T1w DICOM series under ``folder`` into memory; write nothing.

    The series checks are those of :func:`convert_dicom_dir` (series that are not T1w, e.g.
    localizers and field maps, and series with fewer than ``min_slices`` slices are skipped,
    inconsistent ones fail); of the convertible T1w series the one with the most slices is read
    (then the lowest SeriesNumber). When there is none but exactly one series of kind
    ``unknown`` (no sequence tags to tell what it is), that series is read if it passes the
    other checks, with a warning saying so: a folder handed over as "the scan" that holds one
    untagged series is most likely that scan, while a field map or localizer is never read.
    pydicom and ITK/GDCM warnings are logged to ``alzmri.io.dicom``, never printed.

    Args:
        folder: folder searched recursively; non-DICOM files are ignored.
        min_slices: series with fewer slices are skipped.

    Returns:
        The image, with the geometry ``convert_dicom_dir`` would write (RAS affine), and
        ``{"SeriesInstanceUID", "SeriesDescription", "n_slices", "warning"}``; ``warning`` is
        "" unless other convertible T1w series were present and ignored, or the series read is
        of unknown kind.

    Raises:
        AlzmriError: ``folder`` is missing or holds no convertible, readable T1w series (one
            line, with the number of series skipped per kind).
    """
    folder, paths = _list_files(folder)
    with _quiet_dicom() as messages:
        messages.context = "reading headers"
        series, ignored = _read_headers(paths)
        _check_all(series, min_slices, messages)
        candidates = sorted((s for s in series if s.status == "" and s.kind == "T1w"), key=lambda s: (-len(s.sorted_files), _series_number(s)))
        untagged = ""
        if not candidates:
            unknown = [s for s in series if s.kind == "unknown" and s.status == "skipped"]
            if len(unknown) == 1:
                _check_one(unknown[0], min_slices, accept_unknown=True)
                candidates = [s for s in unknown if s.status == ""]
                untagged = unknown[0].kind_reason
        for s in candidates:
            messages.context = _describe(s)
            try:
                image = _to_nifti(_read_volume(s))
            except Exception as exc:  # unreadable pixels: try the next series, as convert would go on
                msg = first_line(exc)
                s.status, s.reason = "failed", f"cannot read: {msg}"
                continue
            others = [o for o in candidates if o is not s and o.status == ""]
            name = f"{_first(s, 'SeriesDescription') or s.uid} ({len(s.sorted_files)} slices)"
            warning = ""
            if others:
                listed = ", ".join(f"{_first(o, 'SeriesDescription') or o.uid} ({len(o.sorted_files)} slices)" for o in others)
                warning = f"{len(others)} other convertible series ignored: {listed}; using the largest, {name}"
            elif untagged:
                warning = f"read {name} as T1w although its tags do not say what it is ({untagged})"
            meta = {"SeriesInstanceUID": s.uid, "SeriesDescription": str(_first(s, "SeriesDescription")), "n_slices": len(s.sorted_files), "warning": warning}
            return image, meta
    counts: dict[str, int] = defaultdict(int)
    for s in series:
        if s.status == "skipped" and s.reason.startswith("too few"):
            counts["too short skipped"] += 1
        elif s.status == "skipped":
            counts[f"{'unknown-kind' if s.kind == 'unknown' else s.kind} skipped"] += 1
        else:
            counts["failed"] += 1
    parts = [f"{len(paths)} file{'' if len(paths) == 1 else 's'}"] + ([f"{ignored} not a DICOM image"] if ignored else []) + [f"{n} {what}" for what, n in sorted(counts.items(), key=lambda c: (-c[1], c[0]))]
    raise AlzmriError(f"no convertible DICOM image series in {folder} ({', '.join(parts)})")


def _label(s: _Series) -> None:
    """Participant label, study ordering key and base session label from the first file."""
    study_uid = str(_first(s, "StudyInstanceUID")).strip()
    s.participant = re.sub(r"[^A-Za-z0-9]", "", str(_first(s, "PatientID")))
    if not s.participant:
        s.participant = "anon" + hashlib.sha1(study_uid.encode()).hexdigest()[:8]
    date = re.sub(r"[^0-9]", "", str(_first(s, "StudyDate")))
    s.base_session = date or "01"
    s.study_key = (str(_first(s, "StudyTime")), study_uid)


def _assign_sessions(series: list[_Series]) -> None:
    """Session labels: the base label, plus b, c, ... for later studies that share it.

    Studies with a series to convert come first, so a same-day study holding only a
    localizer does not push the real scan to ``...b``.
    """
    useful = {s.study_key for s in series if s.status == ""}
    studies: dict[tuple[str, str], set[tuple[bool, str, str]]] = defaultdict(set)
    for s in series:
        studies[(s.participant, s.base_session)].add((s.study_key not in useful, *s.study_key))
    for s in series:
        key = (s.study_key not in useful, *s.study_key)
        index = sorted(studies[(s.participant, s.base_session)]).index(key)
        suffix = "" if index == 0 else chr(ord("a") + index) if index < 26 else f"x{index}"
        s.session = s.base_session + suffix


def _series_number(s: _Series) -> tuple[int, str]:
    try:
        return int(_first(s, "SeriesNumber", 0) or 0), s.uid
    except (TypeError, ValueError):
        return 0, s.uid


def _assign_runs(series: list[_Series]) -> None:
    """Run numbers within a session, in SeriesNumber order, over the T1w series to convert."""
    by_session: dict[tuple[str, str], list[_Series]] = defaultdict(list)
    for s in series:
        if s.status == "":
            by_session[(s.participant, s.session)].append(s)
    for group in by_session.values():
        for run, s in enumerate(sorted(group, key=_series_number), start=1):
            s.run = run


def _convert(s: _Series, out_dir: Path, dicom_dir: Path) -> None:
    """Write the sidecar, then the NIfTI (whose presence marks the series as done)."""
    rel = Path(f"sub-{s.participant}", f"ses-{s.session}", "anat", f"sub-{s.participant}_ses-{s.session}_run-{s.run:02d}_T1w.nii.gz")
    target = out_dir / rel
    sidecar = target.with_name(target.name[: -len(".nii.gz")] + ".json")
    if target.exists():
        try:
            previous = json.loads(sidecar.read_text()).get("SeriesInstanceUID")
        except (OSError, ValueError):
            previous = None
        if previous != s.uid:
            s.status, s.reason = "failed", f"{rel} already exists and is not from this series (sidecar {sidecar.name})"
        else:
            s.status, s.reason, s.path = "converted", "already converted", rel.as_posix()
        return
    try:
        image = _read_volume(s)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(sidecar, json.dumps(_sidecar(s, dicom_dir), indent=2) + "\n")
        import SimpleITK as sitk

        with atomic_path(target) as tmp:  # keeps the .nii.gz suffix, which picks the writer
            sitk.WriteImage(image, str(tmp))
    except Exception as exc:  # one unreadable series must not stop the others
        msg = first_line(exc)
        s.status, s.reason = "failed", f"cannot read or write: {msg}"
        return
    s.status, s.reason, s.path = "converted", s.kind_reason, rel.as_posix()


def _jsonable(value: Any) -> Any:
    """pydicom values (DSfloat, IS, MultiValue, PersonName...) as plain JSON types."""
    if isinstance(value, str | bytes):
        return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float | Decimal):
        return float(value) if math.isfinite(float(value)) else str(value)
    if isinstance(value, Iterable):  # MultiValue, lists
        return [_jsonable(v) for v in value]
    return str(value)


def _sidecar(s: _Series, dicom_dir: Path) -> dict[str, Any]:
    first = s.files[0][1]
    meta = {tag: _jsonable(first.get(tag)) for tag in SIDECAR_TAGS if first.get(tag) not in (None, "")}
    meta["SeriesKind"], meta["SeriesKindReason"] = s.kind, s.kind_reason
    meta["NumberOfSlices"] = len(s.sorted_files)
    meta["SliceSpacing"] = round(s.geometry[1][2], 6) if s.geometry else None
    meta["SourceFolders"] = sorted({p.parent.relative_to(dicom_dir).as_posix() for p, _ in s.files})
    return meta


def _age(value: Any) -> float | str:
    """PatientAge ("072Y", "006M", "010W", "003D") in years, or "" when absent or malformed."""
    match = re.fullmatch(r"\s*(\d+)\s*([DWMY]?)\s*", str(value or ""))
    if not match:
        return ""
    per_year = {"D": 365.25, "W": 52.1775, "M": 12.0, "Y": 1.0, "": 1.0}[match.group(2)]
    return round(int(match.group(1)) / per_year, 2)


def _manifest(converted: list[_Series]) -> pd.DataFrame:
    """One row per (participant, session): the series with the most slices, then lowest run."""
    best: dict[tuple[str, str], _Series] = {}
    for s in sorted(converted, key=lambda s: (-len(s.sorted_files or s.files), s.run)):
        best.setdefault((s.participant, s.session), s)
    rows = []
    for (participant, session), s in sorted(best.items()):
        sex = str(_first(s, "PatientSex")).strip().upper()
        rows.append({
            "participant_id": f"sub-{participant}",
            "session_id": f"ses-{session}",
            "diagnosis": "",  # not in DICOM: the user fills it in
            "path": s.path,  # relative to the manifest's folder, as read_manifest resolves it
            "age": _age(_first(s, "PatientAge")),
            "sex": sex if sex in ("M", "F") else "",
        })
    return pd.DataFrame(rows, columns=["participant_id", "session_id", "diagnosis", "path", "age", "sex"])
