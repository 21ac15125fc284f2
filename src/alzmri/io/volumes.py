"""Scan file formats: which format a file name is, the shared checks, and the non-NIfTI readers.

Every reader returns what :func:`alzmri.io.nifti.load_scan` returns for a NIfTI file: a float32
3D ``nibabel.Nifti1Image`` whose affine maps voxels to RAS world millimetres, with the same
checks (3D, finite voxels, a usable affine). Formats, by case-insensitive suffix:

- Analyze 7.5 and NIfTI pairs (``.hdr`` + ``.img``, or ``.hdr.gz`` + ``.img.gz``; either half
  may be named), read by nibabel, with an SPM ``.mat`` next to them when present. Like NIfTI,
  a 4D pair gives its first volume, with a warning.
- FreeSurfer ``.mgz``/``.mgh`` (nibabel; the vox2ras affine is RAS).
- MINC (``.mnc``): MINC1 (netCDF) by nibabel; MINC2 (HDF5) by SimpleITK's MINC IO, which hands
  over MINC's world coordinates (RAS) unchanged rather than as LPS.
- NRRD (``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) by SimpleITK, whose LPS
  geometry is turned into a RAS affine.

A MGH, MINC, NRRD or MetaImage file with several frames is refused (a 3D T1w is expected).
NIfTI files (:mod:`alzmri.io.nifti`) and DICOM zips (:mod:`alzmri.io.dicom_zip`) have their
own modules. Nothing here writes a file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from alzmri.utils.errors import AlzmriError
from alzmri.utils.scan_files import analyze_pair

# Longest suffixes first, so ".nii.gz" is not taken for ".gz".
_SUFFIXES = (
    (".nii.gz", "nifti"), (".nii", "nifti"),
    (".hdr.gz", "analyze"), (".img.gz", "analyze"), (".hdr", "analyze"), (".img", "analyze"),
    (".mgz", "mgh"), (".mgh", "mgh"),
    (".mnc", "minc"),
    (".nrrd", "nrrd"), (".nhdr", "nrrd"),
    (".mha", "metaimage"), (".mhd", "metaimage"),
    (".zip", "dicom-zip"),
)
LABELS = {
    "nifti": "NIfTI", "analyze": "Analyze/NIfTI pair", "mgh": "MGH/MGZ", "minc": "MINC",
    "nrrd": "NRRD", "metaimage": "MetaImage", "dicom-zip": "DICOM zip",
}
SUPPORTED = (
    "NIfTI-1/2 (.nii, .nii.gz), Analyze 7.5 or NIfTI pair (.hdr + .img, .hdr.gz + .img.gz), "
    "FreeSurfer (.mgz, .mgh), MINC1/MINC2 (.mnc), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd + data file), "
    "a .zip holding one DICOM series, or a folder holding one DICOM series"
)
# T1w files a BIDS folder may hold, one suffix per scan (a pair is found by its .hdr).
T1W_SUFFIXES = (".nii.gz", ".nii", ".hdr", ".hdr.gz", ".mgz", ".mgh", ".mnc", ".nrrd", ".nhdr", ".mha", ".mhd")
_SITK_IO = {"nrrd": "NrrdImageIO", "metaimage": "MetaImageIO", "minc": "MINCImageIO"}
_ITK_PREFIX = re.compile(r"^(?:s?itk::ERROR|ITK ERROR):\s*(?:\w+\(0x[0-9a-fA-F]+\):\s*)?")


def scan_format(path: str | os.PathLike[str]) -> str | None:
    """The format a scan file's name says (a key of ``LABELS``), or None for an unknown suffix."""
    name = Path(path).name.lower()
    return next((kind for suffix, kind in _SUFFIXES if name.endswith(suffix) and len(name) > len(suffix)), None)


def scan_stem(path: str | os.PathLike[str]) -> str:
    """A scan file's name without its format suffix (``sub-01_T1w.nii.gz`` → ``sub-01_T1w``)."""
    name = Path(path).name
    suffix = next((sfx for sfx, _ in _SUFFIXES if name.lower().endswith(sfx) and len(name) > len(sfx)), "")
    return name[: len(name) - len(suffix)] if suffix else name


def checked_image(
    path: Path, data: np.ndarray, affine: np.ndarray, header: Any = None, first_volume: bool = False
) -> nib.Nifti1Image:
    """The checked float32 3D NIfTI-1 image of ``data`` (read from ``path``) and its RAS ``affine``.

    A 4D array with a single volume is squeezed to 3D, and with ``first_volume`` any 4D array
    gives its first volume. ``header``: a NIfTI-1 header to keep (its qform/sform codes and
    units); a NIfTI-2 header is translated; otherwise the affine is recorded as scanner
    coordinates in mm.

    Raises:
        AlzmriError: not 3D, a single slice along an axis, NaN or infinite voxels, or a
            singular or non-finite affine.
    """
    if data.ndim == 4 and (data.shape[3] == 1 or first_volume):
        data = data[..., 0]
    if data.ndim != 3:
        raise AlzmriError(f"{path} is not a 3D volume (shape {tuple(data.shape)}); expected a 3D T1w image")
    if min(data.shape) < 2:
        raise AlzmriError(f"{path} is not a 3D volume (shape {tuple(data.shape)}): one axis has a single slice")
    data = np.ascontiguousarray(data, dtype=np.float32)
    bad = int((~np.isfinite(data)).sum())
    if bad:
        raise AlzmriError(f"{path} has {bad} NaN or infinite voxels; fix or mask them before preprocessing")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-8:
        raise AlzmriError(f"{path} has an invalid (singular or non-finite) affine")
    if type(header) in (nib.Nifti1Header, nib.nifti1.Nifti1PairHeader):
        img = nib.Nifti1Image(data, affine, header)
    else:
        img = nib.Nifti1Image(data, affine)
        if isinstance(header, nib.Nifti2Header):
            for get, put in ((header.get_qform, img.set_qform), (header.get_sform, img.set_sform)):
                matrix, code = get(coded=True)
                put(matrix if matrix is not None else affine, code=int(code))
            img.header.set_xyzt_units(*header.get_xyzt_units())
        else:
            img.set_qform(affine, code=1)  # scanner coordinates, as for DICOM
            img.set_sform(affine, code=1)
            img.header.set_xyzt_units("mm")
    img.set_data_dtype(np.float32)  # the header describes the float32 voxels, not the file's
    return img


def read_volume(path: str | os.PathLike[str], kind: str | None = None) -> tuple[nib.Nifti1Image, list[str]]:
    """Read an Analyze/NIfTI pair, MGH/MGZ, MINC, NRRD or MetaImage file.

    Args:
        path: the scan file (for a pair, either half).
        kind: its format (a key of ``LABELS``); by default from the suffix.

    Returns:
        ``(image, warnings)``: the checked float32 3D image with its RAS affine.

    Raises:
        AlzmriError: one line naming the file: missing file or companion, unreadable or
            corrupt file, several frames, or a failed check of :func:`checked_image`.
    """
    path = Path(path)
    kind = kind or scan_format(path)
    readers = {"analyze": _read_pair, "mgh": _read_mgh, "minc": _read_minc, "nrrd": _read_sitk, "metaimage": _read_sitk}
    if kind not in readers:
        raise AlzmriError(f"cannot read {path}: unknown scan format; supported: {SUPPORTED}")
    label = LABELS[kind]
    if not path.is_file():
        raise AlzmriError(f"{label} file {'not found' if not path.exists() else 'is not a file'}: {path}")
    try:
        data, affine, header, warnings = readers[kind](path, kind)
    except AlzmriError:
        raise
    except Exception as exc:  # nibabel and ITK raise many types for corrupt files
        raise AlzmriError(f"cannot read {label} file {path}: {_reason(exc)}") from None
    return checked_image(path, data, affine, header, first_volume=True), warnings


def _read_pair(path: Path, kind: str) -> tuple[np.ndarray, np.ndarray, Any, list[str]]:
    pair = analyze_pair(path)
    assert pair is not None
    header, image = pair
    if not header.is_file():
        raise AlzmriError(f"Analyze/NIfTI image {path} has no header: {header.name} is missing next to it (an .img needs its .hdr)")
    if not image.is_file():
        raise AlzmriError(f"Analyze/NIfTI header {path} has no image data: {image.name} is missing next to it (a .hdr needs its .img)")
    img = nib.load(str(header))
    if not isinstance(img, nib.AnalyzeImage):
        raise ValueError(f"not an Analyze or NIfTI pair ({type(img).__name__})")
    data = np.asanyarray(img.dataobj, dtype=np.float32)
    warnings = [f"4D input with {data.shape[3]} volumes: used the first"] if data.ndim == 4 and data.shape[3] > 1 else []
    return data, img.affine, img.header if isinstance(img, nib.Nifti1Pair) else None, warnings


def _read_mgh(path: Path, kind: str) -> tuple[np.ndarray, np.ndarray, Any, list[str]]:
    img = nib.MGHImage.from_filename(str(path))
    _single_frame(path, img.shape, "MGH/MGZ")
    return np.asanyarray(img.dataobj, dtype=np.float32), img.affine, None, []


def _read_minc(path: Path, kind: str) -> tuple[np.ndarray, np.ndarray, Any, list[str]]:
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic.startswith(b"\x89HDF"):
        # MINC2. ITK keeps MINC's world coordinates (RAS) where its other IOs give LPS.
        return _read_sitk(path, kind, ras=True)
    if not magic.startswith((b"CDF\x01", b"CDF\x02")):
        raise ValueError("neither MINC1 (netCDF) nor MINC2 (HDF5)")
    img = nib.Minc1Image.from_filename(str(path))
    if len(img.shape) != 3:
        raise AlzmriError(f"{path} is not a 3D volume (shape {tuple(img.shape)}); expected a 3D T1w image")
    return np.asanyarray(img.dataobj, dtype=np.float32), img.affine, None, []


def _read_sitk(path: Path, kind: str, ras: bool = False) -> tuple[np.ndarray, np.ndarray, Any, list[str]]:
    """Read with SimpleITK; its geometry is LPS, except MINC's (``ras``)."""
    import SimpleITK as sitk

    from alzmri.io.dicom_series import _to_nifti

    reader = sitk.ImageFileReader()
    reader.SetImageIO(_SITK_IO[kind])  # only this format's reader, whatever the content
    reader.SetFileName(str(path))
    image = reader.Execute()
    label = LABELS[kind]
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1:
        raise AlzmriError(f"{path} has {components} values per voxel (a vector, RGB or multi-frame {label} image); expected a 3D T1w image")
    if image.GetDimension() == 4:
        _single_frame(path, image.GetSize(), label)
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise AlzmriError(f"{path} is not a 3D volume (size {image.GetSize()}); expected a 3D T1w image")
    if "complex" in image.GetPixelIDTypeAsString():
        raise AlzmriError(f"{path} has complex voxels; expected a magnitude 3D T1w image")
    nifti = _to_nifti(image)  # LPS → RAS
    affine = nifti.affine
    if ras:
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine  # undo the flip: these were RAS already
    return np.asanyarray(nifti.dataobj).astype(np.float32), affine, None, []


def _single_frame(path: Path, shape: tuple[int, ...], label: str) -> None:
    if len(shape) == 4 and shape[3] > 1:
        raise AlzmriError(f"{label} file {path} has {shape[3]} frames; expected a 3D T1w image (one frame)")


def _reason(exc: Exception) -> str:
    """One line saying why a file could not be read (ITK's messages span lines and name source files)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [_ITK_PREFIX.sub("", line) for line in lines if not line.startswith("Exception thrown in SimpleITK")]
    lines = [line for line in lines if line and line != "Reason: Success"]
    nrrd = [line for line in lines if line.startswith("[nrrd]")]
    if nrrd:
        return re.sub(r"^\[nrrd\]\s*\w+:\s*", "", nrrd[-1])
    return lines[0] if lines else type(exc).__name__
