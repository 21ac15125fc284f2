"""Reading NIfTI volumes with clear errors for bad files."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from alzmri.utils.errors import AlzmriError


def load_volume(path: str | os.PathLike[str], first_volume: bool = False) -> nib.Nifti1Image:
    """Load a 3D NIfTI volume, fully read and checked.

    A 4D file with a single volume is squeezed to 3D. The data are read here (not lazily)
    so a truncated or corrupt ``.nii.gz`` fails now, with the file named, instead of deep
    inside a transform.

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
        data = np.asanyarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for corrupt files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AlzmriError(f"cannot read NIfTI file {path}: {reason}") from None
    if data.ndim == 4 and (data.shape[3] == 1 or first_volume):
        data = data[..., 0]
    if data.ndim != 3:
        raise AlzmriError(f"{path} is not a 3D volume (shape {tuple(data.shape)}); expected a 3D T1w image")
    if min(data.shape) < 2:
        raise AlzmriError(f"{path} is not a 3D volume (shape {tuple(data.shape)}): one axis has a single slice")
    bad = int((~np.isfinite(data)).sum())
    if bad:
        raise AlzmriError(f"{path} has {bad} NaN or infinite voxels; fix or mask them before preprocessing")
    if not np.isfinite(img.affine).all() or abs(np.linalg.det(img.affine[:3, :3])) < 1e-8:
        raise AlzmriError(f"{path} has an invalid (singular or non-finite) affine")
    return nib.Nifti1Image(data, img.affine, img.header)


def load_scan(path: str | os.PathLike[str]) -> tuple[nib.Nifti1Image, list[str]]:
    """Load a scan for preprocessing: a NIfTI file or a folder holding one DICOM series.

    A 4D NIfTI is accepted: its first volume is used, with a warning.

    Returns:
        ``(image, warnings)``.

    Raises:
        AlzmriError: as :func:`load_volume`, or a folder without a usable DICOM series.
    """
    path = Path(path)
    if path.is_dir():
        from alzmri.io.dicom import read_dicom_series

        img, meta = read_dicom_series(path)
        return img, [meta["warning"]] if meta.get("warning") else []
    img = load_volume(path, first_volume=True)
    warnings = []
    raw_shape = nib.load(str(path)).shape
    if len(raw_shape) == 4 and raw_shape[3] > 1:
        warnings.append(f"4D input with {raw_shape[3]} volumes: used the first")
    return img, warnings
