"""The on-disk slice cache: one ``(C, H, W)`` ``.npy`` per slice, a manifest and the settings that made them.

Layout of a slice cache folder::

    slices.json     SliceSetConfig: where the slices came from, their size, channels, plane, classes
    manifest.tsv    one row per slice (columns: :data:`MANIFEST_COLUMNS`, then age/sex when known)
    arrays/<name>.<key>.npy   model input, float16, (channels, size, size)
    split/          train/val/test TSVs when the images came already split (train/ and test/ folders)

A row is keyed by ``participant_id``, ``session_id`` and ``slice_id`` (unique within the cache:
the plane and index for slices cut from volumes, the file's path for imported images).
``slice_index`` is the slice's number where it is known. ``subject_known`` is ``false`` for a
slice whose subject could not be read from its name: such a slice gets the pseudo-subject
``unknown:<its file>`` so that it is never grouped with another, and every later output says that
its "subject-level" results are slice-level. The manifest has the columns a preprocessing
cache's has (``array``, ``mask``, ``source_hash``), so splits, training and evaluation read both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from alzmri.utils.atomic import atomic_path, atomic_write_text, stale_temporaries
from alzmri.utils.errors import AlzmriError

SLICE_CONFIG = "slices.json"
MANIFEST_FILE = "manifest.tsv"
ARRAY_DIR = "arrays"
SPLIT_DIR = "split"
UNKNOWN_SUBJECT = "unknown:"
MANIFEST_COLUMNS = (
    "participant_id", "session_id", "slice_id", "slice_index", "diagnosis", "subject_known", "plane",
    "image_set", "given_split", "source", "source_hash", "array", "mask", "original_size", "warnings",
)  # fmt: skip
_TEXT = ("participant_id", "session_id", "slice_id", "slice_index", "diagnosis", "plane", "image_set", "given_split", "source_hash", "mask", "original_size", "warnings")
_OWN = {SLICE_CONFIG, MANIFEST_FILE, ARRAY_DIR, SPLIT_DIR}
Plane = Literal["axial", "coronal", "sagittal"]


class SliceSetConfig(BaseModel):
    """What the slices of a cache are: stored in ``slices.json`` and in every checkpoint trained on them.

    Attributes:
        origin: ``images`` (imported 2D files) or ``volumes`` (cut from a preprocessing cache).
        size: edge of the square slices (pixels).
        channels: 1 (2D) or 3 (2.5D: the slice and its two neighbours).
        plane: plane of the slices (imported images: as the user states, axial by default).
        classes: class names in clinical order (see :mod:`alzmri.data.slices.classes`).
        normalization: how intensities were scaled (imported images: z-score over the foreground,
            background 0; cut slices keep the volume's normalisation).
        preprocess: the preprocessing config of the volumes the slices were cut from.
        selection: how slices were chosen from each volume (``"central n=… step=…"``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["slices"] = "slices"
    origin: Literal["images", "volumes"]
    size: int
    channels: int
    plane: Plane = "axial"
    classes: list[str]
    normalization: str
    preprocess: dict[str, Any] | None = None
    selection: str = ""

    spatial_dims: ClassVar[int] = 2

    def signature(self) -> dict[str, Any]:
        """The settings a model's inputs depend on (classes left out: a test set may hold fewer)."""
        return self.model_dump(mode="json", exclude={"classes"})


def square_resized(stack: np.ndarray, size: int | None, order: int = 1) -> np.ndarray:
    """``(C, H, W)`` padded to a centred square with background (0) and resized to ``size``² (None: only padded).

    ``order`` 1 (images) resizes linearly and anti-aliased; 0 (labels) takes the nearest pixel.
    """
    from skimage.transform import resize

    channels, h, w = stack.shape
    edge = max(h, w)
    square = np.zeros((channels, edge, edge), dtype=np.float32)
    top, left = (edge - h) // 2, (edge - w) // 2
    square[:, top : top + h, left : left + w] = stack
    if size is None or edge == size:
        return square
    return resize(square, (channels, size, size), order=order, anti_aliasing=order > 0 and edge > size, preserve_range=True).astype(np.float32)


def is_slice_cache(path: str | Path) -> bool:
    """Whether ``path`` is a slice cache folder (has ``slices.json``)."""
    return (Path(path) / SLICE_CONFIG).is_file()


def claim_slice_dir(out_dir: Path) -> None:
    """Create ``out_dir`` or accept it as an existing slice cache; remove temporaries of killed runs.

    Raises:
        AlzmriError: ``out_dir`` holds files that are not a slice cache's.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    foreign = [p.name for p in out_dir.iterdir() if p.name not in _OWN and not p.name.startswith(".tmp-")]
    if foreign:
        raise AlzmriError(f"{out_dir} is not empty and is not an alzmri slice cache (found {foreign[0]}); choose another output folder")
    for folder in (out_dir, out_dir / ARRAY_DIR):
        if folder.is_dir():
            for tmp in stale_temporaries(folder):
                tmp.unlink(missing_ok=True)


def save_slice(path: Path, array: np.ndarray) -> None:
    """Write one ``(C, H, W)`` slice atomically as float16."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(array, dtype=np.float16))


def write_slice_cache(out_dir: Path, rows: list[dict[str, Any]], config: SliceSetConfig) -> pd.DataFrame:
    """Write the manifest (array paths relative to ``out_dir``) and ``slices.json``, both atomically."""
    table = pd.DataFrame(rows)
    for column in MANIFEST_COLUMNS:
        if column not in table.columns:
            table[column] = ""
    extra = [c for c in ("age", "sex") if c in table.columns]
    table = table[list(MANIFEST_COLUMNS) + extra]
    with atomic_path(out_dir / MANIFEST_FILE) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
    atomic_write_text(out_dir / SLICE_CONFIG, config.model_dump_json(indent=2) + "\n")
    return table


def read_slice_cache(cache_dir: str | Path) -> tuple[pd.DataFrame, SliceSetConfig]:
    """The slice manifest (``array`` absolute, ``subject_known`` boolean) and its config.

    Raises:
        AlzmriError: not a slice cache, unreadable settings, or listed arrays missing.
    """
    cache_dir = Path(cache_dir)
    cfg_path, manifest = cache_dir / SLICE_CONFIG, cache_dir / MANIFEST_FILE
    if not cfg_path.is_file() or not manifest.is_file():
        raise AlzmriError(f"{cache_dir} is not a slice cache (run 'alzmri import-slices' or 'alzmri slices' first)")
    try:
        config = SliceSetConfig.model_validate_json(cfg_path.read_text())
    except ValueError as exc:
        raise AlzmriError(f"{cfg_path} is not a slice cache's settings file: {str(exc).splitlines()[0]}") from None
    df = pd.read_csv(manifest, sep="\t", dtype=dict.fromkeys(_TEXT, str), keep_default_na=False)
    df["array"] = [str(cache_dir / a) for a in df["array"]]
    df["subject_known"] = df["subject_known"].astype(str).str.lower().isin(("true", "1"))
    if "age" in df.columns:
        df["age"] = pd.to_numeric(df["age"], errors="coerce")
    missing = [a for a in df["array"] if not Path(a).is_file()]
    if missing:
        raise AlzmriError(f"slice cache {cache_dir} lists {len(missing)} missing arrays, e.g. {missing[0]}; re-run the command that made it")
    return df, config
