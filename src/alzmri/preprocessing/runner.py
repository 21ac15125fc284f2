"""Preprocess a table of scans into a cache: parallel, resumable, with per-scan QC.

Every scan is processed in a worker process; a finished array is never recomputed, so a
killed run continues where it stopped. Failing scans are listed in ``failures.tsv`` and
reported in one line; the others are cached.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from alzmri.io.manifest import write_manifest
from alzmri.preprocessing.cache import (
    FAILURES_FILE,
    MANIFEST_FILE,
    array_name,
    claim_cache_dir,
    save_array,
)
from alzmri.preprocessing.config import PreprocessConfig
from alzmri.utils.errors import AlzmriError

_META_COLUMNS = ("participant_id", "session_id", "diagnosis", "age", "sex")


def _process_one(source: str, target: str, config: PreprocessConfig) -> dict[str, Any]:
    # Runs in a worker: keep torch single-threaded there, the pool provides the parallelism.
    import torch

    torch.set_num_threads(1)
    from alzmri.preprocessing.pipeline import preprocess_image

    array, qc = preprocess_image(source, config)
    save_array(Path(target), array, config.dtype)
    return qc


def preprocess_scans(
    scans: pd.DataFrame,
    out_dir: str | Path,
    config: PreprocessConfig,
    workers: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Preprocess every scan of ``scans`` (a validated manifest) into ``out_dir``.

    Args:
        scans: table with participant_id, session_id, diagnosis, path (absolute).
        out_dir: cache folder (created; must be empty or a cache with the same config).
        config: preprocessing configuration.
        workers: worker processes (0 = one per CPU core).
        progress: show a progress bar.

    Returns:
        The cache manifest (also written to ``out_dir/manifest.tsv``).

    Raises:
        AlzmriError: when any scan failed (after caching all the others).
    """
    out_dir = Path(out_dir)
    claim_cache_dir(out_dir, config)
    workers = workers or os.cpu_count() or 1
    rows = scans.to_dict("records")
    qc: dict[int, dict[str, Any]] = {}
    failures: list[dict[str, str]] = []
    todo = []
    for i, row in enumerate(rows):
        target = out_dir / array_name(row["participant_id"], row["session_id"])
        if target.is_file():
            qc[i] = {"cached": True}
        else:
            todo.append((i, str(row["path"]), str(target)))
    bar = tqdm(total=len(rows), initial=len(rows) - len(todo), desc="preprocess", unit="scan", disable=not progress)
    with ProcessPoolExecutor(max_workers=min(workers, max(1, len(todo)))) as pool:
        futures = {pool.submit(_process_one, src, dst, config): i for i, src, dst in todo}
        for future in as_completed(futures):
            i = futures[future]
            try:
                qc[i] = future.result()
            except AlzmriError as exc:
                failures.append({"participant_id": rows[i]["participant_id"], "session_id": rows[i]["session_id"], "path": str(rows[i]["path"]), "error": str(exc)})
            except Exception as exc:  # a transform failing on odd data: report it, keep going
                failures.append({"participant_id": rows[i]["participant_id"], "session_id": rows[i]["session_id"], "path": str(rows[i]["path"]), "error": f"{type(exc).__name__}: {exc}"})
            bar.update(1)
    bar.close()

    manifest = _cache_manifest(rows, qc, out_dir)
    fail_path = out_dir / FAILURES_FILE
    if failures:
        write_manifest(pd.DataFrame(failures), fail_path)
    elif fail_path.exists():
        fail_path.unlink()  # our own file from an earlier run, now stale
    if failures:
        first = failures[0]
        raise AlzmriError(
            f"{len(failures)} of {len(rows)} scans failed to preprocess; first: {first['participant_id']} "
            f"{first['session_id']}: {first['error']} (all listed in {fail_path})"
        )
    return manifest


def _cache_manifest(rows: list[dict[str, Any]], qc: dict[int, dict[str, Any]], out_dir: Path) -> pd.DataFrame:
    """Write the manifest of every cached scan; QC values of earlier runs are kept."""
    path = out_dir / MANIFEST_FILE
    previous = pd.read_csv(path, sep="\t", dtype=str).set_index("array") if path.is_file() else None
    records = []
    for i, row in enumerate(rows):
        if i not in qc:
            continue
        rel = array_name(row["participant_id"], row["session_id"])
        record = {k: row[k] for k in _META_COLUMNS if k in row}
        record.update(source=str(row["path"]), array=rel)
        if qc[i].get("cached") and previous is not None and rel in previous.index:
            old = previous.loc[rel]
            record.update({k: old[k] for k in previous.columns if k not in record})
        else:
            record.update({k: v for k, v in qc[i].items() if k != "cached"})
        records.append(record)
    manifest = pd.DataFrame(records)
    write_manifest(manifest, path)
    return manifest
