"""The on-disk preprocessing cache: one ``.npy`` per scan plus a manifest and QC.

Layout of a cache folder::

    preprocess.json   the PreprocessConfig of the last run
    manifest.tsv      participant_id, session_id, diagnosis, [age, sex], source, array, key
    qc.tsv            one row per scan: status, warnings, QC values, seconds per step
    qc.html           self-contained QC page (thumbnails, sortable, failures first)
    failures.tsv      scans that could not be processed (only when some failed)
    arrays/<participant>_<session>.<key>.npy     model input (float16 by default)
    stages/<participant>_<session>.<key>.npz     result of the slow steps (N4, skull strip ...)
    qc/<participant>_<session>.png               before/after tri-planar picture
    qc/<participant>_<session>.json              the scan's QC record (also for a failed scan)
    .lock                                        taken while a run rewrites the shared tables

Keys hash the input file's content and the settings each stage depends on: an existing file
is a finished result (all writes are atomic), and a changed setting recomputes only the
stages it affects. Arrays are memory-mapped at train time.
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
STAGE_DIR = "stages"
FIGURE_DIR = "qc"
LOCK_FILE = ".lock"  # serialises the shared tables' rewrite between shards
_OWN = {CONFIG_FILE, MANIFEST_FILE, FAILURES_FILE, QC_TABLE, QC_PAGE, ARRAY_DIR, STAGE_DIR, FIGURE_DIR, LOCK_FILE}


def qc_record_name(participant_id: str, session_id: str) -> str:
    """Relative path of a scan's QC record (JSON) in the cache."""
    return f"{figure_name(participant_id, session_id)[:-4]}.json"


def scan_name(participant_id: str, session_id: str) -> str:
    """File stem shared by a scan's cache files (ids made safe: :func:`alzmri.utils.names.safe_name`)."""
    return join_ids(participant_id, session_id, keep_empty=True)


def array_name(participant_id: str, session_id: str, key: str) -> str:
    """Relative path of a scan's cached array for cache key ``key``."""
    return f"{ARRAY_DIR}/{scan_name(participant_id, session_id)}.{key}.npy"


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
    for folder in (out_dir, out_dir / ARRAY_DIR, out_dir / STAGE_DIR, out_dir / FIGURE_DIR):
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


def read_cache(cache_dir: str | Path) -> tuple[pd.DataFrame, PreprocessConfig]:
    """The cache manifest (with absolute ``array`` paths) and the config that made it."""
    cache_dir = Path(cache_dir)
    manifest = cache_dir / MANIFEST_FILE
    cfg_path = cache_dir / CONFIG_FILE
    if not manifest.is_file() or not cfg_path.is_file():
        raise AlzmriError(f"{cache_dir} is not a preprocessing cache (run 'alzmri preprocess' first)")
    config = stored_config(cfg_path.read_text(), str(cfg_path))
    df = pd.read_csv(manifest, sep="\t", dtype={"participant_id": str, "session_id": str, "diagnosis": str})
    df["array"] = [str(cache_dir / a) for a in df["array"]]
    missing = [a for a in df["array"] if not Path(a).is_file()]
    if missing:
        raise AlzmriError(f"cache {cache_dir} lists {len(missing)} missing arrays, e.g. {missing[0]}; re-run preprocess")
    return df, config


def load_array(path: str | Path, mmap: bool = True) -> np.ndarray:
    """A cached array, memory-mapped by default."""
    return np.load(path, mmap_mode="r" if mmap else None)
