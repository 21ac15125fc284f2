"""The on-disk preprocessing cache: one ``.npy`` per scan plus a manifest and QC.

Layout of a cache folder::

    preprocess.json   the PreprocessConfig of the last run
    manifest.tsv      participant_id, session_id, diagnosis, [age, sex], source, source_hash, array,
                      mask (empty without skull stripping), warnings
    qc.tsv            one row per scan: status, warnings, QC values, seconds per step
    qc.html           self-contained QC page (thumbnails, sortable, failures first)
    failures.tsv      scans that could not be processed (only when some failed)
    arrays/<participant>_<session>.<key>.npy     model input (float16 by default)
    masks/<participant>_<session>.<key>.npy      its brain mask on the same grid (uint8 0/1; with skull stripping)
    stages/<participant>_<session>.<key>.npz     result of the slow steps (N4, skull strip ...)
    qc/<participant>_<session>.png               before/after tri-planar picture
    qc/<participant>_<session>.json              the scan's QC record (also for a failed scan)
    .lock                                        taken while a run rewrites the shared tables

Keys hash the input file's content and the settings each stage depends on: an existing file
is a finished result (all writes are atomic), and a changed setting recomputes only the
stages it affects. Arrays are memory-mapped at train time. ``source_hash`` is the content digest
of the input scan (:func:`alzmri.utils.hashing.content_digest`): two rows with one digest are one
image, whatever their ids. Manifests of caches made before masks and digests were recorded lack
those columns; :func:`read_cache` gives them empty values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from alzmri.preprocessing.config import PreprocessConfig, stored_config
from alzmri.utils.atomic import atomic_path, atomic_write_text, stale_temporaries
from alzmri.utils.errors import AlzmriError
from alzmri.utils.names import join_ids

CONFIG_FILE = "preprocess.json"
MANIFEST_FILE = "manifest.tsv"
FAILURES_FILE = "failures.tsv"
QC_TABLE = "qc.tsv"
QC_PAGE = "qc.html"
ARRAY_DIR = "arrays"
MASK_DIR = "masks"
STAGE_DIR = "stages"
FIGURE_DIR = "qc"
LOCK_FILE = ".lock"  # serialises the shared tables' rewrite between shards
_OWN = {CONFIG_FILE, MANIFEST_FILE, FAILURES_FILE, QC_TABLE, QC_PAGE, ARRAY_DIR, MASK_DIR, STAGE_DIR, FIGURE_DIR, LOCK_FILE}
# Manifest columns read as text (a hex digest such as '1234e567...' must not become a number).
_TEXT_COLUMNS = ("participant_id", "session_id", "diagnosis", "mask", "source_hash")


def qc_record_name(participant_id: str, session_id: str) -> str:
    """Relative path of a scan's QC record (JSON) in the cache."""
    return f"{figure_name(participant_id, session_id)[:-4]}.json"


def scan_name(participant_id: str, session_id: str) -> str:
    """File stem shared by a scan's cache files (ids made safe: :func:`alzmri.utils.names.safe_name`)."""
    return join_ids(participant_id, session_id, keep_empty=True)


def array_name(participant_id: str, session_id: str, key: str) -> str:
    """Relative path of a scan's cached array for cache key ``key``."""
    return f"{ARRAY_DIR}/{scan_name(participant_id, session_id)}.{key}.npy"


def mask_name(participant_id: str, session_id: str, key: str) -> str:
    """Relative path of a scan's cached brain mask (on the array's grid) for cache key ``key``."""
    return f"{MASK_DIR}/{scan_name(participant_id, session_id)}.{key}.npy"


def stage_name(participant_id: str, session_id: str, key: str) -> str:
    """Relative path of a scan's cached intermediate for cache key ``key``."""
    return f"{STAGE_DIR}/{scan_name(participant_id, session_id)}.{key}.npz"


def figure_name(participant_id: str, session_id: str) -> str:
    """Relative path of a scan's QC picture."""
    return f"{FIGURE_DIR}/{scan_name(participant_id, session_id)}.png"


def remove_other_keys(out_dir: Path, relative: str) -> None:
    """Delete this scan's files of the same kind made with other settings (our own outputs)."""
    path = out_dir / relative
    stem, key, suffix = path.name.rsplit(".", 2)
    for old in path.parent.glob(f"{stem}.*.{suffix}"):
        if old.name != path.name and old.name.count(".") == 2:
            old.unlink(missing_ok=True)


def claim_cache_dir(out_dir: Path) -> None:
    """Create ``out_dir`` or accept it as an existing cache; remove temporary files a killed run left.

    Temporary files of live processes (another shard writing into the same cache) are kept.

    Raises:
        AlzmriError: ``out_dir`` holds files that are not an alzmri preprocessing cache.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    foreign = [p.name for p in out_dir.iterdir() if p.name not in _OWN and not p.name.startswith(".tmp-")]
    if foreign:
        raise AlzmriError(f"{out_dir} is not empty and is not an alzmri preprocessing cache (found {foreign[0]}); choose another output folder")
    for folder in (out_dir, *(out_dir / name for name in (ARRAY_DIR, MASK_DIR, STAGE_DIR, FIGURE_DIR))):
        if folder.is_dir():
            for tmp in stale_temporaries(folder):
                tmp.unlink(missing_ok=True)


def write_config(out_dir: Path, config: PreprocessConfig) -> None:
    """Record the settings of the cache's current arrays."""
    atomic_write_text(out_dir / CONFIG_FILE, config.model_dump_json(indent=2) + "\n")


def save_array(path: Path, array: np.ndarray, dtype: str) -> None:
    """Write one cached array atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array.astype(dtype))


def save_mask(path: Path, mask: np.ndarray) -> None:
    """Write one cached brain mask atomically, as uint8 0/1 (one byte a voxel)."""
    save_array(path, np.asarray(mask, dtype=bool), "uint8")


def load_mask(path: str | Path) -> np.ndarray:
    """A cached brain mask as a boolean array."""
    return np.load(path) > 0


def read_cache(cache_dir: str | Path) -> tuple[pd.DataFrame, PreprocessConfig]:
    """The cache manifest and the config that made it.

    ``array`` and ``mask`` become absolute paths (``mask`` is empty for scans without a stored
    mask, and for every scan of a cache made before masks were stored); ``source_hash`` is text,
    empty where not recorded. A listed mask file is not required to exist: only explanations use
    masks, and they fall back to estimating the brain.
    """
    cache_dir = Path(cache_dir)
    manifest = cache_dir / MANIFEST_FILE
    cfg_path = cache_dir / CONFIG_FILE
    if (cache_dir / "slices.json").is_file():  # alzmri.data.slices.store.SLICE_CONFIG (a layer above this one)
        raise AlzmriError(f"{cache_dir} is a slice cache; this command works on volumes (a preprocessing cache from 'alzmri preprocess')")
    if not manifest.is_file() or not cfg_path.is_file():
        raise AlzmriError(f"{cache_dir} is not a preprocessing cache (run 'alzmri preprocess' first)")
    config = stored_config(cfg_path.read_text(), str(cfg_path))
    df = pd.read_csv(manifest, sep="\t", dtype=dict.fromkeys(_TEXT_COLUMNS, str))
    df["array"] = [str(cache_dir / a) for a in df["array"]]
    for column in ("mask", "source_hash"):
        df[column] = df[column].fillna("") if column in df.columns else ""
    df["mask"] = [str(cache_dir / m) if m else "" for m in df["mask"]]
    missing = [a for a in df["array"] if not Path(a).is_file()]
    if missing:
        raise AlzmriError(f"cache {cache_dir} lists {len(missing)} missing arrays, e.g. {missing[0]}; re-run preprocess")
    return df, config


def load_array(path: str | Path, mmap: bool = True) -> np.ndarray:
    """A cached array, memory-mapped by default."""
    return np.load(path, mmap_mode="r" if mmap else None)
