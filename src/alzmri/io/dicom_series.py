"""DICOM series: grouping, checks, slice geometry and reading, shared by :mod:`alzmri.io.dicom`.

Headers are read with pydicom (no pixels) and grouped by SeriesInstanceUID; a series is then
classified (:func:`alzmri.io.series_kind.classify_series`) and checked (not T1w, multi-frame,
unknown kind, too few slices, inconsistent slices, in that order) and, when convertible, its
slices are sorted along the slice normal and its LPS geometry is taken from the headers. Pixels
are read with SimpleITK (GDCM).

Library chatter: inside :func:`_quiet_dicom` Python warnings (pydicom's "Invalid value for VR..."),
the ``pydicom`` logger and ITK's output window (ITK/GDCM warnings such as "Non uniform sampling")
are collected instead of printed, then logged once each, with a count, to the ``alzmri.io.dicom``
logger (which has a NullHandler, so nothing reaches the terminal unless the application configures
logging). Nothing here writes a file.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alzmri.io.series_kind import classify_series
from alzmri.utils.errors import AlzmriError

LOG = logging.getLogger("alzmri.io.dicom")
LOG.addHandler(logging.NullHandler())  # never Python's last-resort stderr handler
_ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"
# Positions are decimal strings rounded by the scanner: allow 1 % of the gap, at least 0.05 mm.
_REL_TOL, _ABS_TOL = 0.01, 0.05


@dataclass
class _Series:
    uid: str
    files: list[tuple[Path, Any]] = field(default_factory=list)  # (path, header without pixels)
    participant: str = ""
    study_key: tuple[str, str] = ("", "")  # (StudyTime, StudyInstanceUID): orders same-day studies
    base_session: str = ""
    session: str = ""
    run: int = 0
    kind: str = ""  # from classify_series; only "T1w" is converted
    kind_reason: str = ""
    status: str = ""
    reason: str = ""
    sorted_files: list[Path] = field(default_factory=list)
    geometry: tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]] | None = None
    float_output: bool = False
    path: str = ""



def _read_headers(paths: Iterable[Path]) -> tuple[list[_Series], int]:
    """Group DICOM image files by SeriesInstanceUID; count the other files."""
    from pydicom import dcmread

    by_uid: dict[str, _Series] = {}
    ignored = 0
    for path in paths:
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except Exception:  # InvalidDicomError for non-DICOM; anything else means unreadable
            ignored += 1
            continue
        uid = str(ds.get("SeriesInstanceUID", "")).strip()
        # DICOMDIR index files, reports and presentation states carry no image: not a series.
        if not uid or "Rows" not in ds:
            ignored += 1
            continue
        by_uid.setdefault(uid, _Series(uid)).files.append((path, ds))
    return list(by_uid.values()), ignored


def _first(s: _Series, tag: str, default: Any = "") -> Any:
    value = s.files[0][1].get(tag, default)
    return default if value is None else value



def _check(s: _Series, min_slices: int, accept_unknown: bool = False) -> None:
    """Set ``kind``, and ``status``/``reason`` for a series that will not be converted, else its slice order.

    A series of a known kind other than T1w is skipped first (so a multi-frame field map is
    "skipped: fieldmap", not "failed"); then multi-frame files fail; then a series of unknown kind
    is skipped unless ``accept_unknown``; then short and inconsistent series.
    """
    headers = [ds for _, ds in s.files]
    s.kind, s.kind_reason = classify_series(headers)
    s.status, s.reason = "", ""
    if s.kind not in ("T1w", "unknown"):
        s.status, s.reason = "skipped", s.kind_reason
        return
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 or ds.get("SOPClassUID") == _ENHANCED_MR for ds in headers):
        s.status, s.reason = "failed", "multi-frame/enhanced DICOM is not supported"
        return
    if s.kind == "unknown" and not accept_unknown:
        s.status, s.reason = "skipped", s.kind_reason
        return
    if len(headers) < min_slices:
        s.status, s.reason = "skipped", f"too few slices ({len(headers)} < {min_slices})"
        return
    problem = _inconsistency(headers)
    if problem:
        s.status, s.reason = "failed", f"inconsistent series: {problem}"
        return
    order, geometry = _geometry(headers)
    if isinstance(order, str):
        s.status, s.reason = "failed", f"inconsistent series: {order}"
        return
    s.sorted_files = [s.files[i][0] for i in order]
    s.geometry = geometry
    # ITK picks the pixel type from the first slice; varying rescale needs float for all.
    rescale = {(float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)) for ds in headers}
    s.float_output = len(rescale) > 1


def _inconsistency(headers: list[Any]) -> str:
    """Why the slices cannot form one volume, or "" when the per-slice tags agree."""
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        missing = sum(tag not in ds for ds in headers)
        if missing:
            return f"{missing} of {len(headers)} files lack {tag}"
    if len({int(ds.get("SamplesPerPixel", 1)) for ds in headers} - {1}):
        return "not a greyscale image (SamplesPerPixel > 1)"
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in headers}
    if len(sizes) > 1:
        return "differing image sizes " + ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
    iops = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in headers])
    if iops.shape[1] != 6 or np.abs(iops - iops[0]).max() > 1e-4:
        return "differing ImageOrientationPatient"
    spacings = np.array([[float(v) for v in ds.PixelSpacing] for ds in headers])
    if spacings.shape[1] != 2 or np.abs(spacings - spacings[0]).max() > 1e-4 or (spacings[0] <= 0).any():
        return "differing or invalid PixelSpacing"
    return ""


def _geometry(headers: list[Any]) -> tuple[list[int] | str, Any]:
    """Slice order along the normal and (origin, spacing, direction) in LPS, or a reason."""
    iop = np.array([float(v) for v in headers[0].ImageOrientationPatient])
    row, col = iop[:3], iop[3:]  # direction of increasing column index, then of row index
    normal = np.cross(row, col)
    if abs(np.linalg.norm(normal) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        return "ImageOrientationPatient is not two orthonormal vectors", None
    positions = np.array([[float(v) for v in ds.ImagePositionPatient] for ds in headers])
    depth = positions @ normal
    order = [int(i) for i in np.argsort(depth, kind="stable")]
    gaps = np.diff(depth[order])
    median = float(np.median(gaps))
    tol = max(_REL_TOL * median, _ABS_TOL)
    duplicates = int((gaps < tol).sum())
    if duplicates:
        return f"{duplicates} slices share a position with another (multi-echo or repeated acquisition?)", None
    if np.abs(gaps - median).max() > tol:
        return f"non-uniform slice spacing ({gaps.min():.3g}–{gaps.max():.3g} mm; missing slices?)", None
    # Slices must stack along the normal; a sideways drift means gantry tilt (a sheared volume).
    drift = positions[order] - np.outer(depth[order] - depth[order[0]], normal)
    if np.abs(drift - drift[0]).max() > tol:
        return "slices are not stacked along the slice normal (gantry tilt?)", None
    pixel = [float(v) for v in headers[0].PixelSpacing]  # (between rows, between columns)
    origin = tuple(float(v) for v in positions[order[0]])
    spacing = (pixel[1], pixel[0], median)
    direction = tuple(float(v) for v in np.column_stack([row, col, normal]).ravel())  # row-major 3x3
    return order, (origin, spacing, direction)



def _read_volume(s: _Series) -> Any:
    """Read the sorted slices with SimpleITK and set the geometry checked from the headers."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(p) for p in s.sorted_files])
    if s.float_output:
        reader.SetOutputPixelType(sitk.sitkFloat32)
    image = reader.Execute()
    rows, cols = int(_first(s, "Rows")), int(_first(s, "Columns"))
    if image.GetSize() != (cols, rows, len(s.sorted_files)) or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"read a {image.GetSize()} image, expected {(cols, rows, len(s.sorted_files))}")
    # Set from the headers (already checked) rather than trust how ITK infers the slice axis.
    origin, spacing, direction = s.geometry  # type: ignore[misc]
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def _list_files(dicom_dir: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
    """The folder as a Path and every file under it, sorted; AlzmriError when it is no folder."""
    folder = Path(dicom_dir)
    if not folder.is_dir():
        raise AlzmriError(f"DICOM folder {folder} {'is not a folder' if folder.exists() else 'does not exist'}")
    return folder, sorted(p for p in folder.rglob("*") if p.is_file())


def _check_all(series: list[_Series], min_slices: int, messages: _Messages | None = None) -> None:
    """Run ``_check`` on every series; a malformed header fails that series only."""
    for s in series:
        if messages is not None:
            messages.context = _describe(s)
        _check_one(s, min_slices)


def _check_one(s: _Series, min_slices: int, accept_unknown: bool = False) -> None:
    try:
        _check(s, min_slices, accept_unknown)
    except (TypeError, ValueError, AttributeError) as exc:  # e.g. a tag with the wrong multiplicity
        s.status, s.reason = "failed", f"malformed header: {exc}"
        s.kind = s.kind or "unknown"


def _describe(s: _Series) -> str:
    """``series <SeriesNumber> '<SeriesDescription>'`` for messages."""
    return f"series {_first(s, 'SeriesNumber', '?')} '{_first(s, 'SeriesDescription')}'"


class _Messages:
    """Warnings collected while DICOM is read, counted per (context, source, text)."""

    def __init__(self) -> None:
        self.context = ""
        self.logged: Counter[tuple[str, str, str]] = Counter()  # pydicom's logger
        self.warned: Counter[tuple[str, str, str]] = Counter()  # Python warnings (pydicom warns what it logs)
        self.itk: Counter[tuple[str, str, str]] = Counter()

    def lines(self) -> list[str]:
        """One line per distinct message, in first-seen order: ``context: source: text (×n)``."""
        counts: dict[tuple[str, str, str], int] = {}
        for counter in (self.logged, self.warned, self.itk):
            for key, n in counter.items():
                counts[key] = max(counts.get(key, 0), n)  # a warn_and_log message counts once
        return [": ".join(p for p in key if p) + (f" (×{n})" if n > 1 else "") for key, n in counts.items()]


def _condense(text: str) -> str:
    """An ITK/pydicom message on one line, without source paths and object addresses."""
    text = re.sub(r"^\s*(?:WARNING|ERROR|Debug)?:?\s*In \S.*?, line \d+\s*", "", str(text))
    text = re.sub(r"\s*\(0x[0-9a-fA-F]+\)", "", text)
    return " ".join(text.split())


class _Collect(logging.Handler):
    def __init__(self, messages: _Messages) -> None:
        super().__init__(logging.WARNING)
        self.messages = messages

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.logged[(self.messages.context, "pydicom", _condense(record.getMessage()))] += 1


_ITK_LOCK = threading.Lock()
_QUIET_LOCK = threading.RLock()  # Python's warning filters are process-wide: one capture at a time


@contextmanager
def _quiet_dicom() -> Iterator[_Messages]:
    """Collect pydicom warnings and ITK/GDCM output instead of printing them; log them on exit.

    Each distinct message is logged once (with a count) as a WARNING of ``alzmri.io.dicom``;
    the yielded object's ``lines()`` gives the same lines, e.g. for ``conversion.log``. Python's
    warning filters are process-wide, so captures in several threads (the server's workers) take
    turns, and a warning another thread raises while a capture is open is counted into it rather
    than printed (preprocessing runs scans in worker processes, not threads).
    """
    with _QUIET_LOCK:
        with _captured() as messages:
            yield messages


@contextmanager
def _captured() -> Iterator[_Messages]:
    """The capture itself (see :func:`_quiet_dicom`, which serialises it)."""
    messages = _Messages()
    pydicom_logger = logging.getLogger("pydicom")
    collect = _Collect(messages)
    propagate = pydicom_logger.propagate
    pydicom_logger.addHandler(collect)
    pydicom_logger.propagate = False
    with _ITK_LOCK:
        itk_logger, previous = _capture_itk(messages)

    def show(message: Warning | str, category: type[Warning], filename: str, *args: Any, **kwargs: Any) -> None:
        source = "pydicom" if "pydicom" in str(filename) else category.__name__
        messages.warned[(messages.context, source, _condense(str(message)))] += 1

    try:
        with warnings.catch_warnings():  # restores the filters and showwarning on exit
            warnings.simplefilter("always")
            warnings.showwarning = show  # counted as they come, under the current context
            yield messages
    finally:
        with _ITK_LOCK:
            if previous is not None:
                previous.SetAsGlobalITKLogger()
        del itk_logger
        pydicom_logger.removeHandler(collect)
        pydicom_logger.propagate = propagate
        for line in messages.lines():
            LOG.warning(line)


def _capture_itk(messages: _Messages) -> tuple[Any, Any]:
    """Route ITK's output window (ITK and GDCM messages) into ``messages``; (logger, previous)."""
    try:
        import SimpleITK as sitk
    except ImportError:  # pragma: no cover - SimpleITK is a dependency
        return None, None

    class _ITKCollect(sitk.LoggerBase):  # type: ignore[misc,name-defined]
        def _add(self, text: str) -> None:
            text = _condense(text)
            if text:
                messages.itk[(messages.context, "ITK", text)] += 1

        def DisplayText(self, t: str) -> None:  # noqa: N802 - ITK's names
            self._add(t)

        def DisplayErrorText(self, t: str) -> None:  # noqa: N802
            self._add(t)

        def DisplayWarningText(self, t: str) -> None:  # noqa: N802
            self._add(t)

        def DisplayGenericOutputText(self, t: str) -> None:  # noqa: N802
            self._add(t)

        def DisplayDebugText(self, t: str) -> None:  # noqa: N802
            pass

    logger = _ITKCollect()
    return logger, logger.SetAsGlobalITKLogger()


def _to_nifti(image: Any) -> Any:
    """A SimpleITK image (LPS) as the in-memory ``nibabel.Nifti1Image`` ITK would write (RAS)."""
    import nibabel as nib
    import SimpleITK as sitk

    data = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))  # (z, y, x) → (x, y, z)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    affine = np.eye(4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine[:3, :3] = lps_to_ras @ direction @ np.diag(image.GetSpacing())
    affine[:3, 3] = lps_to_ras @ np.array(image.GetOrigin())
    nifti = nib.Nifti1Image(data, affine)
    nifti.set_qform(affine, code=1)  # scanner coordinates, as ITK's writer sets them
    nifti.set_sform(affine, code=1)
    nifti.header.set_xyzt_units("mm")
    return nifti
