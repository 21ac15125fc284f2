"""Reading NIfTI volumes with clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from alzmri.utils.errors import AlzmriError


def load_volume(path: str | Path) -> nib.Nifti1Image:
    """Load a 3D NIfTI volume, fully read and checked.

    A 4D file with a single volume is squeezed to 3D. The data are read here (not lazily)
    so a truncated or corrupt ``.nii.gz`` fails now, with the file named, instead of deep
    inside a transform.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.

    Raises:
        AlzmriError: missing file, unreadable/corrupt file, not 3D, or no finite voxels.
    """
    path = Path(path)
    if not path.is_file():
        raise AlzmriError(f"NIfTI file not found: {path}")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for corrupt files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AlzmriError(f"cannot read NIfTI file {path}: {reason}") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise AlzmriError(f"{path} is not a 3D volume (shape {tuple(data.shape)}); expected a 3D T1w image")
    if min(data.shape) < 2:
        raise AlzmriError(f"{path} is not a 3D volume (shape {tuple(data.shape)}): one axis has a single slice")
    finite = np.isfinite(data)
    if not finite.any():
        raise AlzmriError(f"{path} contains no finite voxel values")
    if not finite.all():
        data = np.where(finite, data, 0.0).astype(np.float32)
    if not np.isfinite(img.affine).all() or abs(np.linalg.det(img.affine[:3, :3])) < 1e-8:
        raise AlzmriError(f"{path} has an invalid (singular or non-finite) affine")
    return nib.Nifti1Image(data, img.affine, img.header)
