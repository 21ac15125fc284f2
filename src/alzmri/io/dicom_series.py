"""DICOM series: grouping, checks, slice geometry and reading, shared by :mod:`alzmri.io.dicom`.

Headers are read with pydicom (no pixels) and grouped by SeriesInstanceUID; a series is then
checked (localizer, multi-frame, too few slices, inconsistent slices) and, when convertible,
its slices are sorted along the slice normal and its LPS geometry is taken from the headers.
Pixels are read with SimpleITK (GDCM). Nothing here writes a file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alzmri.utils.errors import AlzmriError

_LOCALIZER = re.compile(r"locali[sz]er|scout|survey", re.IGNORECASE)
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



def _check(s: _Series, min_slices: int) -> None:
    """Set ``status``/``reason`` for a series that will not be converted, else its slice order."""
    headers = [ds for _, ds in s.files]
    first = headers[0]
    image_type = first.get("ImageType") or []
    image_type = [str(v).upper() for v in ([image_type] if isinstance(image_type, str) else image_type)]
    if "LOCALIZER" in image_type or _LOCALIZER.search(str(first.get("SeriesDescription", ""))):
        s.status, s.reason = "skipped", "localizer/scout"
        return
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 or ds.get("SOPClassUID") == _ENHANCED_MR for ds in headers):
        s.status, s.reason = "failed", "multi-frame/enhanced DICOM is not supported"
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


def _check_all(series: list[_Series], min_slices: int) -> None:
    """Run ``_check`` on every series; a malformed header fails that series only."""
    for s in series:
        try:
            _check(s, min_slices)
        except (TypeError, ValueError, AttributeError) as exc:  # e.g. a tag with the wrong multiplicity
            s.status, s.reason = "failed", f"malformed header: {exc}"


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
