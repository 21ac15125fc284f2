"""Preprocess a table of scans into a cache: parallel, resumable, content-addressed, with QC.

Each scan runs in a worker process. A scan whose array for the current input content and
settings exists is skipped; one whose slow stage (N4, skull stripping ...) is cached for
those settings reruns only the fast steps. Every file is written atomically, so a killed run
leaves no partial output and the next run continues. A failing scan is reported and skipped;
the others go on. At the end: ``manifest.tsv``, ``qc.tsv``, ``qc.html``, ``failures.tsv``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from alzmri.io.manifest import write_manifest
from alzmri.preprocessing.cache import (
    FAILURES_FILE,
    MANIFEST_FILE,
    QC_PAGE,
    QC_TABLE,
    array_name,
    claim_cache_dir,
    figure_name,
    remove_other_keys,
    qc_record_name,
    save_array,
    stage_name,
    write_config,
)
from alzmri.preprocessing.config import PreprocessConfig
from alzmri.utils.atomic import atomic_path, atomic_write_text
from alzmri.utils.errors import AlzmriError

_META_COLUMNS = ("participant_id", "session_id", "diagnosis", "age", "sex")


def _qc_json(out_dir: Path, pid: str, ses: str) -> Path:
    return out_dir / qc_record_name(pid, ses)


def _init_worker() -> None:
    # Ctrl-C goes to the whole process group: the parent handles it, workers just stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(1)  # the pool provides the parallelism
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def process_scan(source: str, pid: str, ses: str, out_dir: Path, config: PreprocessConfig) -> dict[str, Any]:
    """Bring one scan's cache entry up to date (runs in a worker).

    Returns:
        The scan's QC record, with ``status`` ``done`` or ``cached`` and its ``array`` path.
    """
    from alzmri.preprocessing.pipeline import OUTPUT_AFFINE, Intermediate, run_prefix, run_suffix, split_steps, step_keys
    from alzmri.preprocessing.qc_figure import save_qc_figure
    from alzmri.utils.hashing import content_digest

    start = time.perf_counter()
    prefix_key, key = step_keys(content_digest(source), config)
    rel = array_name(pid, ses, key)
    qc_path = _qc_json(out_dir, pid, ses)
    if (out_dir / rel).is_file():
        previous = json.loads(qc_path.read_text()) if qc_path.is_file() else {}
        if previous.get("array") == rel and OUTPUT_AFFINE in previous:
            return {**previous, "status": "cached", "array": rel}
        # An entry from before grid affines were recorded: redo the (fast) suffix to record it.
    prefix, _ = split_steps(config)
    stage = out_dir / stage_name(pid, ses, prefix_key)
    reused = bool(prefix) and stage.is_file()
    if reused:
        intermediate = Intermediate.load(stage)
    else:
        intermediate = run_prefix(source, config)
        if prefix:
            with atomic_path(stage) as tmp:
                intermediate.save(tmp)
            remove_other_keys(out_dir, stage_name(pid, ses, prefix_key))
    array, mask, suffix_qc = run_suffix(intermediate, config)
    figure = figure_name(pid, ses)
    save_qc_figure(out_dir / figure, before=intermediate.preview.astype(np.float32), after=array,
                   before_mask=None if intermediate.preview_mask is None else intermediate.preview_mask > 0,
                   after_mask=mask, title=f"{pid} {ses}",
                   row_labels=(f"input\n{intermediate.qc['input_shape']}", f"output\n{'×'.join(map(str, array.shape))}"))
    qc = {**intermediate.qc, **suffix_qc, "stage_reused": reused, "seconds_total": round(time.perf_counter() - start, 2),
          "figure": figure, "array": rel}
    atomic_write_text(qc_path, json.dumps(qc, indent=1, default=str) + "\n")
    save_array(out_dir / rel, array, config.dtype)  # last: its existence marks the scan finished
    remove_other_keys(out_dir, rel)
    return {**qc, "status": "done"}


def preprocess_scans(
    scans: pd.DataFrame,
    out_dir: str | Path,
    config: PreprocessConfig,
    workers: int = 0,
    progress: bool = True,
    report: bool = True,
) -> pd.DataFrame:
    """Preprocess every scan of ``scans`` (a validated manifest) into ``out_dir``.

    Args:
        scans: table with participant_id, session_id, diagnosis (may be empty), path (absolute
            NIfTI file or DICOM series folder).
        out_dir: cache folder (created; must be empty or an alzmri preprocessing cache).
        config: preprocessing configuration.
        workers: worker processes (0 = one per CPU core).
        progress: show a progress bar.
        report: print the final summary (done / cached / failed).

    Returns:
        The cache manifest (also written to ``out_dir/manifest.tsv``).

    Raises:
        AlzmriError: when any scan failed (after caching all the others and writing the QC).
    """
    out_dir = Path(out_dir)
    claim_cache_dir(out_dir)
    workers = workers or os.cpu_count() or 1
    rows = scans.to_dict("records")
    results: dict[int, dict[str, Any]] = {}
    bar = tqdm(total=len(rows), desc="preprocess", unit="scan", disable=not progress)
    if workers > 1 and len(rows) > 1:
        from alzmri.preprocessing.pipeline import warm_up

        warm_up(config)  # forked workers inherit the loaded templates (~3.5 s each otherwise)
    pool = ProcessPoolExecutor(max_workers=min(workers, len(rows)), initializer=_init_worker)
    try:
        futures: dict[Future[dict[str, Any]], int] = {
            pool.submit(process_scan, str(r["path"]), r["participant_id"], r["session_id"], out_dir, config): i
            for i, r in enumerate(rows)
        }
        for future in as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except AlzmriError as exc:
                results[i] = {"status": "failed", "error": str(exc)}
            except Exception as exc:  # a transform failing on odd data: report it, keep going
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                results[i] = {"status": "failed", "error": f"{type(exc).__name__}: {message}"}
            bar.update(1)
    except KeyboardInterrupt:
        # Stop at once: finished scans are cached, a killed worker leaves only temporary files.
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        bar.close()
    pool.shutdown()
    return _finish(rows, results, out_dir, config, report)


def _finish(rows: list[dict[str, Any]], results: dict[int, dict[str, Any]], out_dir: Path, config: PreprocessConfig, report: bool) -> pd.DataFrame:
    """Write the QC table and page, failures, config and manifest; report."""
    from alzmri.preprocessing.qc_report import write_qc_html

    qc_rows, manifest_rows, failures = [], [], []
    for i, row in enumerate(rows):
        ids = {"participant_id": row["participant_id"], "session_id": row["session_id"]}
        result = results[i]
        qc_rows.append({**ids, "status": result["status"], "warnings": result.get("warnings", ""), "error": result.get("error", ""),
                        **{k: v for k, v in result.items() if k not in ("status", "warnings", "error")}})
        if result["status"] == "failed":
            failures.append({**ids, "path": str(row["path"]), "error": result["error"]})
            continue
        record = {k: row[k] for k in _META_COLUMNS if k in row}
        record.update(source=str(row["path"]), array=result["array"], warnings=result.get("warnings", ""))
        manifest_rows.append(record)
    qc = pd.DataFrame(qc_rows)
    write_manifest(qc.drop(columns=["figure"], errors="ignore"), out_dir / QC_TABLE)
    write_qc_html(qc, out_dir / QC_PAGE, figure_dir=out_dir)
    fail_path = out_dir / FAILURES_FILE
    if failures:
        write_manifest(pd.DataFrame(failures), fail_path)
    elif fail_path.exists():
        fail_path.unlink()  # our own file from an earlier run, now stale
    write_config(out_dir, config)
    manifest = pd.DataFrame(manifest_rows)
    if manifest_rows:
        write_manifest(manifest, out_dir / MANIFEST_FILE)
    counts = qc["status"].value_counts()
    warned = int((qc["warnings"].fillna("") != "").sum())
    if report:
        print(f"preprocess: {len(rows)} scans: {counts.get('done', 0)} done, {counts.get('cached', 0)} already cached, "
                  f"{counts.get('failed', 0)} failed, {warned} with QC warnings; skull stripping: {config.skull_strip if 'skull_strip' in config.steps else 'off'}; "
                  f"QC page {out_dir / QC_PAGE}")
        for failure in failures[:10]:
            print(f"  failed {failure['participant_id']} {failure['session_id']}: {failure['error']}")
        if len(failures) > 10:
            print(f"  ... {len(failures) - 10} more in {fail_path}")
    if failures:
        first = failures[0]
        raise AlzmriError(
            f"{len(failures)} of {len(rows)} scans failed to preprocess; first: {first['participant_id']} "
            f"{first['session_id']}: {first['error']} (all listed in {fail_path})"
        )
    return manifest

