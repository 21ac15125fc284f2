"""Reading the ground truth ``alzmri synth`` writes under ``derivatives/synth`` onto a model grid.

Per scan ``<sub>/<ses>/anat/<sub>_<ses>_<desc>.nii.gz``, on the scan's own grid:

* ``desc-atrophy_mask``: the strength of the disease atrophy applied at each voxel (0–255);
* ``desc-aparcaseg_dseg``: the Desikan-Killiany labels carried through the scan's transform
  chain (its true anatomy);
* ``desc-change_mask`` (longitudinal cohorts, every visit but the first): where disease
  atrophy advanced since the subject's previous visit (same scale).

They are brought onto a model grid through the grid's voxel-to-scanner-world matrix (the
preprocessing records it per scan as ``scanner_affine``, also after registration).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from alzmri.io.grids import resample_between
from alzmri.utils.errors import AlzmriError

_WHAT = {"desc-atrophy_mask": "planted-atrophy mask", "desc-aparcaseg_dseg": "atlas labels", "desc-change_mask": "true change mask"}


def derivative_path(root: Path, participant_id: str, session_id: str, desc: str) -> Path:
    """Where ``alzmri synth`` put one of a scan's truth files under its ``derivatives/synth`` folder (an error if missing)."""
    path = Path(root) / participant_id / session_id / "anat" / f"{participant_id}_{session_id}_{desc}.nii.gz"
    if not path.is_file():
        hint = {"desc-aparcaseg_dseg": "; cohorts made before alzmri synth wrote them get them by re-running the same 'alzmri synth' command "
                                       "into the same folder (it adds missing files only)",
                "desc-change_mask": "; change masks exist for every visit but the first of an 'alzmri synth --longitudinal' cohort"}.get(desc, "")  # fmt: skip
        raise AlzmriError(f"no {_WHAT[desc]} for {participant_id} {session_id} at {path}; --truth takes the derivatives/synth folder of an 'alzmri synth' cohort{hint}")
    return path


def truth_path(root: Path, participant_id: str, session_id: str) -> Path:
    """A scan's planted-atrophy mask."""
    return derivative_path(root, participant_id, session_id, "desc-atrophy_mask")


def labels_path(root: Path, participant_id: str, session_id: str) -> Path:
    """A scan's atlas labels (its true anatomy)."""
    return derivative_path(root, participant_id, session_id, "desc-aparcaseg_dseg")


def change_path(root: Path, participant_id: str, session_id: str) -> Path:
    """A longitudinal visit's true change mask (since the previous visit)."""
    return derivative_path(root, participant_id, session_id, "desc-change_mask")


def labels_on_grid(path: Path, shape: tuple[int, ...], grid_affine: np.ndarray) -> np.ndarray:
    """A scan's atlas labels sampled (nearest neighbour) at each voxel of a grid, as int32."""
    image = nib.load(str(path))
    return np.rint(resample_between(np.asarray(image.dataobj, dtype=np.float32), image.affine, shape, grid_affine, order=0)).astype(np.int32)


def strength_on_grid(path: Path, shape: tuple[int, ...], grid_affine: np.ndarray) -> np.ndarray:
    """A truth mask's strength (0–1) sampled (nearest neighbour) at each voxel of a grid.

    Args:
        path: the mask NIfTI (any orientation; its affine maps it to world mm).
        shape: the grid's shape (the model input).
        grid_affine: the grid's voxel-to-scanner-world matrix (``scanner_affine`` of the preprocessing record).
    """
    image = nib.load(str(path))
    return resample_between(np.asarray(image.dataobj, dtype=np.float32), image.affine, shape, grid_affine, order=0) / np.float32(255.0)
