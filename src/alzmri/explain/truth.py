"""Scoring maps against where atrophy was planted (``alzmri synth`` ground truth).

``alzmri synth`` writes, per scan, ``derivatives/synth/<sub>/<ses>/anat/<sub>_<ses>_desc-atrophy_mask.nii.gz``:
the strength of the disease atrophy applied at each voxel (0–255, on the scan's grid). The
model sees the scan after preprocessing, on a grid whose voxel-to-world matrix the cache
records per scan; the truth is resampled onto that grid (nearest neighbour) and the map is
scored with

* **energy inside**: share of the positive attribution inside the brain that falls where
  atrophy was planted (strength ≥ ``level`` of full scale);
* **volume share**: share of brain voxels that are planted;
* **enrichment** = energy inside / volume share (1 = no better than spreading the attribution
  evenly over the brain);
* **pointing game**: whether the map's maximum lies in a planted voxel (Zhang et al. 2018).

``alzmri synth`` also writes ``<sub>_<ses>_desc-aparcaseg_dseg.nii.gz``: the Desikan-Killiany
labels carried through the scan's own transform chain, i.e. the scan's true anatomy. With it,
region attribution (:mod:`alzmri.explain.regions`) works on scans that were never registered,
and without registration error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from alzmri.explain.spaces import resample_between
from alzmri.utils.errors import AlzmriError

DEFAULT_LEVEL = 0.1  # of full scale: voxels that got at least a tenth of the maximal atrophy


def _derivative(root: Path, participant_id: str, session_id: str, suffix: str) -> Path:
    return Path(root) / participant_id / session_id / "anat" / f"{participant_id}_{session_id}_{suffix}.nii.gz"


def truth_path(root: Path, participant_id: str, session_id: str) -> Path:
    """Where ``alzmri synth`` put a scan's atrophy mask under its ``derivatives/synth`` folder."""
    path = _derivative(root, participant_id, session_id, "desc-atrophy_mask")
    if not path.is_file():
        raise AlzmriError(f"no planted-atrophy mask for {participant_id} {session_id} at {path}; --truth takes the derivatives/synth folder of an 'alzmri synth' cohort")
    return path


def labels_path(root: Path, participant_id: str, session_id: str) -> Path:
    """Where ``alzmri synth`` put a scan's atlas labels (its true anatomy) under ``derivatives/synth``."""
    path = _derivative(root, participant_id, session_id, "desc-aparcaseg_dseg")
    if not path.is_file():
        raise AlzmriError(f"no atlas labels for {participant_id} {session_id} at {path}; cohorts made before alzmri synth wrote them "
                          "get them by re-running the same 'alzmri synth' command into the same folder (it adds missing files only)")
    return path


def labels_on_grid(path: Path, shape: tuple[int, ...], grid_affine: np.ndarray) -> np.ndarray:
    """A scan's atlas labels sampled (nearest neighbour) at each voxel of a grid, as int32."""
    image = nib.load(str(path))
    return np.rint(resample_between(np.asarray(image.dataobj, dtype=np.float32), image.affine, shape, grid_affine, order=0)).astype(np.int32)


def truth_on_grid(path: Path, shape: tuple[int, ...], grid_affine: np.ndarray) -> np.ndarray:
    """The truth mask's strength (0–1) sampled at each voxel of a grid (nearest neighbour).

    Args:
        path: the mask NIfTI (any orientation; its affine maps it to world mm).
        shape: the grid's shape (the model input).
        grid_affine: the grid's voxel-to-world matrix (from the preprocessing record).
    """
    image = nib.load(str(path))
    return resample_between(np.asarray(image.dataobj, dtype=np.float32), image.affine, shape, grid_affine, order=0) / np.float32(255.0)


def score_map(attribution: np.ndarray, truth: np.ndarray, brain: np.ndarray, level: float = DEFAULT_LEVEL) -> dict[str, Any]:
    """Energy inside the planted region, its volume share, enrichment and the pointing game.

    Args:
        attribution: the map (its positive part is used).
        truth: planted strength on the same grid (0–1).
        brain: brain mask on the same grid (where attribution counts).
        level: strength at or above which a voxel counts as planted.
    """
    if attribution.shape != truth.shape or truth.shape != brain.shape:
        raise AlzmriError(f"map {attribution.shape}, truth {truth.shape} and brain {brain.shape} differ in shape")
    positive = np.clip(attribution, 0, None) * brain
    planted = (truth >= level) & brain
    total = float(positive.sum())
    volume_share = float(planted.sum() / max(brain.sum(), 1))
    energy = float(positive[planted].sum() / total) if total > 0 else float("nan")
    peak = np.unravel_index(int(np.argmax(positive)), positive.shape)
    return {
        "energy_inside": energy,
        "volume_share": volume_share,
        "enrichment": energy / volume_share if volume_share > 0 and np.isfinite(energy) else float("nan"),
        "pointing_game": bool(planted[peak]) if total > 0 else False,
        "planted_voxels": int(planted.sum()),
    }
