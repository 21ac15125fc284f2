"""Scoring maps against where atrophy was planted (``alzmri synth`` ground truth).

``alzmri synth`` writes, per scan, ``derivatives/synth/<sub>/<ses>/anat/<sub>_<ses>_desc-atrophy_mask.nii.gz``:
the strength of the disease atrophy applied at each voxel (0–255, on the scan's grid). The
model sees the scan after preprocessing, on a grid whose voxel-to-scanner-world matrix the
cache records per scan (also after registration); the truth is resampled onto that grid
(nearest neighbour, :mod:`alzmri.data.synth.derivatives`) and the map is scored with

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

from typing import Any

import numpy as np

from alzmri.utils.errors import AlzmriError

DEFAULT_LEVEL = 0.1  # of full scale: voxels that got at least a tenth of the maximal atrophy


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
