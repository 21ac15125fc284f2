"""The on-disk preprocessing cache: one ``.npy`` per scan plus a manifest.

Layout of a cache folder::

    preprocess.json   the PreprocessConfig used (a cache never mixes configs)
    manifest.tsv      participant_id, session_id, diagnosis, [age, sex], source, array, QC columns
    failures.tsv      scans that could not be processed (only when some failed)
    arrays/<participant>_<session>.npy

Arrays are stored as float16 (or float32) and memory-mapped at train time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from alzmri.preprocessing.config import PreprocessConfig
from alzmri.utils.atomic import atomic_path, atomic_write_text
from alzmri.utils.errors import AlzmriError

CONFIG_FILE = "preprocess.json"
MANIFEST_FILE = "manifest.tsv"
FAILURES_FILE = "failures.tsv"
ARRAY_DIR = "arrays"


def array_name(participant_id: str, session_id: str) -> str:
    """Relative path of a scan's cached array."""
    return f"{ARRAY_DIR}/{participant_id}_{session_id}.npy"


def claim_cache_dir(out_dir: Path, config: PreprocessConfig) -> None:
    """Create ``out_dir`` as a cache for ``config``, or accept it if it already is one.

    Raises:
        AlzmriError: ``out_dir`` holds a cache made with another config, or unrelated files.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out_dir / CONFIG_FILE
    if cfg_path.exists():
        stored = PreprocessConfig.model_validate_json(cfg_path.read_text())
        if stored != config:
            raise AlzmriError(
                f"{out_dir} is a cache made with different preprocessing settings "
                f"({stored.model_dump_json()}); choose another output folder"
            )
        return
    if any(p.name not in (ARRAY_DIR,) for p in out_dir.iterdir()):
        raise AlzmriError(f"{out_dir} is not empty and is not an alzmri preprocessing cache; choose another output folder")
    atomic_write_text(cfg_path, config.model_dump_json(indent=2) + "\n")


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
    config = PreprocessConfig.model_validate_json(cfg_path.read_text())
    df = pd.read_csv(manifest, sep="\t", dtype={"participant_id": str, "session_id": str, "diagnosis": str})
    df["array"] = [str(cache_dir / a) for a in df["array"]]
    missing = [a for a in df["array"] if not Path(a).is_file()]
    if missing:
        raise AlzmriError(f"cache {cache_dir} lists {len(missing)} missing arrays, e.g. {missing[0]}; re-run preprocess")
    return df, config


def load_array(path: str | Path, mmap: bool = True) -> np.ndarray:
    """A cached array, memory-mapped by default."""
    return np.load(path, mmap_mode="r" if mmap else None)
