"""Reading scans with clear errors for bad files: NIfTI here, and ``load_scan`` for every format.

``load_scan`` is the one entry point of the preprocessing. It dispatches on the (case-insensitive)
file name: NIfTI files are read here, Analyze/NIfTI pairs, MGH/MGZ, MINC, NRRD and MetaImage by
:mod:`alzmri.io.volumes`, a ``.zip`` of one DICOM series by :mod:`alzmri.io.dicom_zip`, and a
folder as a DICOM series by :func:`alzmri.io.dicom.read_dicom_series`.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from alzmri.io.volumes import SUPPORTED, checked_image, read_volume, scan_format
from alzmri.utils.errors import AlzmriError, first_line


def load_volume(path: str | os.PathLike[str], first_volume: bool = False) -> nib.Nifti1Image:
    """Load a 3D NIfTI volume, fully read and checked.

    A 4D file with a single volume is squeezed to 3D. The data are read here (not lazily)
    so a truncated or corrupt ``.nii.gz`` fails now, with the file named, instead of deep
    inside a transform. NIfTI-2 files are returned as NIfTI-1 images.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        first_volume: accept a 4D file and return its first volume (the caller warns).

    Raises:
        AlzmriError: missing file, unreadable/corrupt file, not 3D, NaN or infinite voxels.
    """
    path = Path(path)
    if not path.is_file():
        raise AlzmriError(f"NIfTI file not found: {path}")
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise ValueError(f"not a NIfTI image ({type(img).__name__})")
        # Scaled (scl_slope) and large values come out right: the scaling is done in float32.
        data = np.asanyarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for corrupt files
        reason = first_line(exc)
        raise AlzmriError(f"cannot read NIfTI file {path}: {reason}") from None
    return checked_image(path, data, img.affine, img.header, first_volume=first_volume)


def load_scan(path: str | os.PathLike[str], max_unpacked_bytes: int | None = None) -> tuple[nib.Nifti1Image, list[str]]:
    """Load a scan for preprocessing, in any supported format.

    Formats: NIfTI-1/2 (``.nii``, ``.nii.gz``), Analyze 7.5 or NIfTI pairs (``.hdr``/``.img``,
    either named), FreeSurfer ``.mgz``/``.mgh``, MINC ``.mnc``, NRRD ``.nrrd``/``.nhdr``,
    MetaImage ``.mha``/``.mhd``, a ``.zip`` holding one DICOM series, or a folder holding a
    DICOM series. A 4D NIfTI (or NIfTI/Analyze pair) is accepted: its first volume is used,
    with a warning; other 4D formats are refused. ``max_unpacked_bytes`` caps what a DICOM
    zip may unpack to (default :data:`alzmri.io.dicom_zip.MAX_UNPACKED_BYTES`).

    Returns:
        ``(image, warnings)``: a float32 3D ``Nifti1Image`` with a RAS (world mm) affine.

    Raises:
        AlzmriError: one line naming the file: unknown suffix, missing or corrupt file, a
            failed check (3D, finite voxels, usable affine), or no usable DICOM series.
    """
    path = Path(path)
    if path.is_dir():
        from alzmri.io.dicom import read_dicom_series

        img, meta = read_dicom_series(path)
        return _checked_dicom(path, img), [meta["warning"]] if meta.get("warning") else []
    kind = scan_format(path)
    if kind is None:
        if not path.exists():
            raise AlzmriError(f"scan not found: {path}")
        raise AlzmriError(f"cannot read {path}: unknown scan format {_suffix(path)!r}; supported: {SUPPORTED}")
    if kind == "dicom-zip":
        from alzmri.io.dicom_zip import read_dicom_zip

        img, meta = read_dicom_zip(path, max_unpacked_bytes=max_unpacked_bytes)
        return _checked_dicom(path, img), [meta["warning"]] if meta.get("warning") else []
    if kind != "nifti":
        return read_volume(path, kind)
    img = load_volume(path, first_volume=True)
    warnings = []
    raw_shape = nib.load(str(path)).shape
    if len(raw_shape) == 4 and raw_shape[3] > 1:
        warnings.append(f"4D input with {raw_shape[3]} volumes: used the first")
    return img, warnings


def _checked_dicom(path: Path, img: nib.Nifti1Image) -> nib.Nifti1Image:
    """A DICOM series' image (integer voxels, as the scanner stored them) as checked float32."""
    return checked_image(path, np.asanyarray(img.dataobj), img.affine, img.header)


def _suffix(path: Path) -> str:
    return "".join(path.suffixes[-2:]) if path.suffix.lower() == ".gz" else path.suffix or "(none)"
