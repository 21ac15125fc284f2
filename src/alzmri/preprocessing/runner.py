"""Preprocess a table of scans into a cache: parallel, resumable, content-addressed, with QC.

Each scan runs in a worker process. A scan whose array for the current input content and
settings exists is skipped; one whose slow stage (N4, skull stripping ...) is cached for
those settings reruns only the fast steps. Every file is written atomically, so a killed run
leaves no partial output and the next run continues. A failing scan is reported and skipped;
the others go on. At the end: ``manifest.tsv``, ``qc.tsv``, ``qc.html``, ``failures.tsv``.

Past one machine:

- ``shard=(i, n)`` processes every n-th scan of the list sorted by (participant, session),
  starting at the i-th (1-based), so the n tasks of a SLURM array cover the list once between
  them, all writing into one cache. Per-scan files are written by one task only and atomically;
  the shared tables are rebuilt from every scan's record under a file lock by each task as it
  ends, so the last task to end writes the complete tables.
- ``scheduler=ADDRESS`` runs the scans on a Dask cluster (``dask.distributed``) instead of a
  local process pool; the workers need alzmri installed and the cache folder mounted, and one
  thread each (``dask worker --nthreads 1``: the DICOM reader's warning capture and the
  libraries' thread settings are per process).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
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
    LOCK_FILE,
    claim_cache_dir,
    figure_name,
    mask_name,
    remove_other_keys,
    scan_name,
    qc_record_name,
    save_array,
    save_mask,
    stage_name,
    write_config,
)
from alzmri.preprocessing.config import PreprocessConfig
from alzmri.utils.atomic import atomic_path, atomic_write_text
from alzmri.utils.errors import AlzmriError, first_line
from alzmri.utils.names import check_distinct

_META_COLUMNS = ("participant_id", "session_id", "diagnosis", "age", "sex")


def _qc_json(out_dir: Path, pid: str, ses: str) -> Path:
    return out_dir / qc_record_name(pid, ses)


def settings_digest(config: PreprocessConfig) -> str:
    """Short hash of the settings, stored in each scan's QC record (whose settings made it)."""
    from alzmri.preprocessing.pipeline import PIPELINE_VERSION

    return hashlib.sha256(f"{PIPELINE_VERSION} {config.model_dump_json()}".encode()).hexdigest()[:12]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (1 <= I <= N) as ``(I, N)``; None for None.

    Raises:
        AlzmriError: not of that form.
    """
    if text is None:
        return None
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise AlzmriError(f"--shard must be I/N with whole numbers, e.g. 1/4 (got {text!r})") from None
    if not 1 <= i <= n:
        raise AlzmriError(f"--shard {text}: I must be between 1 and N (e.g. $SLURM_ARRAY_TASK_ID/N with --array=1-N)")
    return i, n


def shard_indices(rows: list[dict[str, Any]], shard: tuple[int, int] | None) -> list[int]:
    """Positions of ``rows`` this shard processes: every n-th of the (participant, session)-sorted list."""
    order = sorted(range(len(rows)), key=lambda k: (str(rows[k]["participant_id"]), str(rows[k]["session_id"])))
    if shard is None:
        return order
    i, n = shard
    return sorted(order[i - 1 :: n])


@contextlib.contextmanager
def cache_lock(out_dir: Path) -> Iterator[None]:
    """An exclusive lock on the cache's shared tables (``fcntl.flock``; works across processes and on NFS v4)."""
    with open(out_dir / LOCK_FILE, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _init_worker(parent: int) -> None:
    # Ctrl-C goes to the whole process group: the parent handles it, workers just stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGTERM ends a worker at once: the parent's handler (inherited through fork) would only turn it
    # into an exception that the pool sends back to a parent that may be gone.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(parent)
    _init_threads()


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel send this worker SIGTERM when the parent dies (even by SIGKILL), so none is orphaned."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _init_threads() -> None:
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(1)  # the pool provides the parallelism
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _up_to_date(previous: dict[str, Any], rel: str, out_dir: Path) -> bool:
    """Whether a scan's QC record describes its current array completely (grid affines, source
    digest and brain mask recorded, the mask file present); older entries redo the fast steps."""
    from alzmri.preprocessing.pipeline import OUTPUT_AFFINE, SCANNER_AFFINE

    if previous.get("array") != rel or not all(k in previous for k in (OUTPUT_AFFINE, SCANNER_AFFINE, "source_hash", "mask")):
        return False
    return not previous["mask"] or (out_dir / previous["mask"]).is_file()


def process_scan(source: str, pid: str, ses: str, out_dir: Path, config: PreprocessConfig) -> dict[str, Any]:
    """Bring one scan's cache entry up to date (runs in a worker).

    Writes the array, its brain mask on the array's grid (``masks/``; none without skull
    stripping), the QC picture and the QC record, which names both files (``array``, ``mask``:
    relative paths, ``mask`` empty when there is none) and the input's content digest
    (``source_hash``).

    Returns:
        The scan's QC record, with ``status`` ``done`` or ``cached`` and its ``array`` path.
    """
    from alzmri.preprocessing.pipeline import Intermediate, run_prefix, run_suffix, split_steps, step_keys
    from alzmri.preprocessing.qc_figure import save_qc_figure
    from alzmri.utils.hashing import content_digest

    start = time.perf_counter()
    source_hash = content_digest(source)
    prefix_key, key = step_keys(source_hash, config)
    rel = array_name(pid, ses, key)
    qc_path = _qc_json(out_dir, pid, ses)
    if (out_dir / rel).is_file():
        previous = json.loads(qc_path.read_text()) if qc_path.is_file() else {}
        if _up_to_date(previous, rel, out_dir):
            return {**previous, "status": "cached", "array": rel}
        # An entry from before grid affines, masks or digests were recorded: redo the (fast) suffix to record them
        # (a registered entry from before the registration was recorded has another key: it is redone whole).
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
    mask_rel = mask_name(pid, ses, key) if mask is not None else ""
    if mask is not None:
        save_mask(out_dir / mask_rel, mask)
    figure = figure_name(pid, ses)
    save_qc_figure(out_dir / figure, before=intermediate.preview.astype(np.float32), after=array,
                   before_mask=None if intermediate.preview_mask is None else intermediate.preview_mask > 0,
                   after_mask=mask, title=f"{pid} {ses}",
                   row_labels=(f"input\n{intermediate.qc['input_shape']}", f"output\n{'×'.join(map(str, array.shape))}"))
    qc = {**intermediate.qc, **suffix_qc, "stage_reused": reused, "seconds_total": round(time.perf_counter() - start, 2),
          "figure": figure, "array": rel, "mask": mask_rel, "source_hash": source_hash, "settings": settings_digest(config)}
    atomic_write_text(qc_path, json.dumps(qc, indent=1, default=str) + "\n")
    save_array(out_dir / rel, array, config.dtype)  # last: its existence marks the scan finished
    remove_other_keys(out_dir, rel)
    if mask is not None:
        remove_other_keys(out_dir, mask_rel)
    return {**qc, "status": "done"}


def preprocess_scans(
    scans: pd.DataFrame,
    out_dir: str | Path,
    config: PreprocessConfig,
    workers: int = 0,
    progress: bool = True,
    report: bool = True,
    shard: tuple[int, int] | None = None,
    scheduler: str | None = None,
    fail_on_qc: bool = False,
) -> pd.DataFrame:
    """Preprocess every scan of ``scans`` (a validated manifest) into ``out_dir``.

    Args:
        scans: table with participant_id, session_id, diagnosis (may be empty), path (absolute
            path of a scan file or DICOM series folder).
        out_dir: cache folder (created; must be empty or an alzmri preprocessing cache).
        config: preprocessing configuration.
        workers: worker processes (0 = one per CPU core); ignored with ``scheduler``.
        progress: show a progress bar.
        report: print the final summary (done / cached / failed, QC warnings).
        shard: ``(i, n)``: process only the i-th of n interleaved parts of the list (see the
            module docstring).
        scheduler: address of a Dask scheduler to run the scans on (e.g. ``tcp://host:8786``).
        fail_on_qc: treat a scan with a QC warning as failed (left out of the manifest).

    Returns:
        The cache manifest (also written to ``out_dir/manifest.tsv``).

    Raises:
        AlzmriError: when any scan of this run failed (after caching all the others and writing the QC).
    """
    out_dir = Path(out_dir)
    claim_cache_dir(out_dir)
    rows = scans.to_dict("records")
    keys = [(str(r["participant_id"]), str(r["session_id"])) for r in rows]
    check_distinct(keys, [scan_name(*key) for key in keys], "preprocess")  # one scan's files must not overwrite another's
    jobs = {i: (str(rows[i]["path"]), rows[i]["participant_id"], rows[i]["session_id"]) for i in shard_indices(rows, shard)}
    bar = tqdm(total=len(jobs), desc="preprocess" if shard is None else f"preprocess {shard[0]}/{shard[1]}", unit="scan", disable=not progress)
    try:
        if scheduler:
            results = _run_dask(jobs, out_dir, config, scheduler, bar)
        else:
            results = _run_local(jobs, out_dir, config, workers or os.cpu_count() or 1, bar)
    finally:
        bar.close()
    for i, result in results.items():
        if result["status"] == "failed":  # recorded, so other shards' tables list it too
            _, pid, ses = jobs[i]
            atomic_write_text(_qc_json(out_dir, pid, ses), json.dumps({**result, "settings": settings_digest(config)}) + "\n")
    return _finish(rows, results, out_dir, config, report, shard, fail_on_qc)


def _failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, AlzmriError):
        return {"status": "failed", "error": str(exc)}
    text = first_line(exc)  # a transform failing on odd data: name the exception type too
    return {"status": "failed", "error": text if text == type(exc).__name__ else f"{type(exc).__name__}: {text}"}


def _run_local(jobs: dict[int, tuple[str, str, str]], out_dir: Path, config: PreprocessConfig, workers: int, bar: Any) -> dict[int, dict[str, Any]]:
    """Run the jobs in a local process pool."""
    results: dict[int, dict[str, Any]] = {}
    if not jobs:
        return results
    if workers > 1 and len(jobs) > 1:
        from alzmri.preprocessing.pipeline import warm_up

        warm_up(config)  # forked workers inherit the loaded templates and networks
    pool = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), initializer=_init_worker, initargs=(os.getpid(),))
    try:
        futures: dict[Future[dict[str, Any]], int] = {pool.submit(process_scan, *job, out_dir, config): i for i, job in jobs.items()}
        for future in as_completed(futures):
            try:
                results[futures[future]] = future.result()
            except Exception as exc:
                results[futures[future]] = _failure(exc)
            bar.update(1)
    except KeyboardInterrupt:
        # Stop at once: finished scans are cached, a killed worker leaves only temporary files.
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def _dask_process_scan(*args: Any) -> dict[str, Any]:
    """:func:`process_scan` on a Dask worker, one thread per library (the cluster provides the parallelism)."""
    _init_threads()
    return process_scan(*args)


def _run_dask(jobs: dict[int, tuple[str, str, str]], out_dir: Path, config: PreprocessConfig, scheduler: str, bar: Any) -> dict[int, dict[str, Any]]:
    """Run the jobs on the Dask cluster at ``scheduler``."""
    try:
        from dask.distributed import Client, as_completed as dask_completed
    except ImportError:
        raise AlzmriError("--scheduler needs dask.distributed: pip install 'alzmri[cluster]'") from None
    try:
        client = Client(scheduler, timeout=30)
    except (OSError, TimeoutError, ValueError) as exc:
        raise AlzmriError(f"cannot reach the Dask scheduler at {scheduler}: {first_line(exc)}") from None
    results: dict[int, dict[str, Any]] = {}
    try:
        futures = {client.submit(_dask_process_scan, *job, out_dir, config, pure=False, key=f"alzmri-{job[1]}-{job[2]}-{os.getpid()}"): i
                   for i, job in jobs.items()}
        for future in dask_completed(list(futures)):
            try:
                results[futures[future]] = future.result()
            except Exception as exc:
                results[futures[future]] = _failure(exc)
            bar.update(1)
    finally:
        client.close()
    return results


def _recorded(out_dir: Path, row: dict[str, Any], settings: str) -> dict[str, Any]:
    """Another shard's scan, from its QC record: cached or failed with these settings, else pending."""
    path = _qc_json(out_dir, row["participant_id"], row["session_id"])
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"status": "pending"}
    if record.get("settings") != settings:
        return {"status": "pending"}
    if record.get("status") == "failed":
        return record
    if record.get("array") and (out_dir / record["array"]).is_file():
        return {**record, "status": "cached"}
    return {"status": "pending"}


def _finish(rows: list[dict[str, Any]], results: dict[int, dict[str, Any]], out_dir: Path, config: PreprocessConfig, report: bool,
            shard: tuple[int, int] | None = None, fail_on_qc: bool = False) -> pd.DataFrame:
    """Write the QC table and page, failures, config and manifest (over the whole list); report."""
    from alzmri.preprocessing.qc_checks import longitudinal_warnings
    from alzmri.preprocessing.qc_report import write_qc_html

    with cache_lock(out_dir):
        settings = settings_digest(config)
        outcome = [dict(results[i]) if i in results else _recorded(out_dir, row, settings) for i, row in enumerate(rows)]
        ids = pd.DataFrame([{"participant_id": r["participant_id"], "session_id": r["session_id"],
                             "status": o["status"], "brain_ml": o.get("brain_ml"),
                             "skull_strip_method": o.get("skull_strip_method")} for r, o in zip(rows, outcome, strict=True)])
        for i, warning in longitudinal_warnings(ids).items():
            outcome[i]["warnings"] = "; ".join(w for w in (outcome[i].get("warnings", ""), warning) if w)
        flagged = [i for i, o in enumerate(outcome) if o["status"] in ("done", "cached") and o.get("warnings")]
        if fail_on_qc:
            for i in flagged:
                outcome[i] = {**outcome[i], "status": "failed", "error": f"QC (--fail-on-qc): {outcome[i]['warnings']}"}
        qc_rows, manifest_rows, failures = [], [], []
        for row, result in zip(rows, outcome, strict=True):
            key = {"participant_id": row["participant_id"], "session_id": row["session_id"]}
            qc_rows.append({**key, "status": result["status"], "warnings": result.get("warnings", ""), "error": result.get("error", ""),
                            **{k: v for k, v in result.items() if k not in ("status", "warnings", "error", "settings")}})
            if result["status"] == "failed":
                failures.append({**key, "path": str(row["path"]), "error": result["error"]})
            elif result["status"] != "pending":
                record = {k: row[k] for k in _META_COLUMNS if k in row}
                record.update(source=str(row["path"]), source_hash=result.get("source_hash", ""), array=result["array"],
                              mask=result.get("mask", ""), warnings=result.get("warnings", ""))
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
        else:  # an older manifest would list scans now failed (or made with other settings)
            (out_dir / MANIFEST_FILE).unlink(missing_ok=True)
    mine = [i for i in range(len(rows)) if i in results]
    if report:
        _report(rows, outcome, mine, flagged, failures, out_dir, config, shard, fail_on_qc)
    own_failures = [i for i in mine if outcome[i]["status"] == "failed"]
    if own_failures:
        first = own_failures[0]
        raise AlzmriError(
            f"{len(own_failures)} of {len(mine)} scans failed to preprocess; first: {rows[first]['participant_id']} "
            f"{rows[first]['session_id']}: {outcome[first]['error']} (all listed in {fail_path})"
        )
    return manifest


def _report(rows: list[dict[str, Any]], outcome: list[dict[str, Any]], mine: list[int], flagged: list[int], failures: list[dict[str, Any]],
            out_dir: Path, config: PreprocessConfig, shard: tuple[int, int] | None, fail_on_qc: bool) -> None:
    """Print the summary: this run's counts, its QC warnings, the failures."""
    whole, own = len(flagged), set(mine)
    flagged = [i for i in flagged if i in own]
    counts = pd.Series([outcome[i]["status"] for i in mine], dtype=object).value_counts()
    method = config.skull_strip if "skull_strip" in config.steps else "off"
    where = "" if shard is None else f"shard {shard[0]}/{shard[1]}: "
    print(f"preprocess: {where}{len(mine)} scans: {counts.get('done', 0)} done, {counts.get('cached', 0)} already cached, "
          f"{counts.get('failed', 0)} failed, {len(flagged)} with QC warnings; skull stripping: {method}; QC page {out_dir / QC_PAGE}")
    if shard is not None:
        pending = sum(o["status"] == "pending" for o in outcome)
        print(f"  whole list: {len(rows) - pending} of {len(rows)} scans finished" + (f", {pending} still pending in other shards "
              "(the last shard to end completes manifest.tsv and qc.html)" if pending else "") + f"; {whole} with QC warnings")
    if flagged:
        verb = "failed by --fail-on-qc" if fail_on_qc else "listed first in qc.html; --fail-on-qc makes them failures"
        print(f"QC warnings: {len(flagged)} scan{'s' if len(flagged) != 1 else ''} ({verb}):")
        for i in flagged[:10]:
            print(f"  {rows[i]['participant_id']} {rows[i]['session_id']}: {outcome[i].get('warnings', '')}")
        if len(flagged) > 10:
            print(f"  ... {len(flagged) - 10} more in {out_dir / QC_TABLE}")
    listed = [f for f in failures if not f["error"].startswith("QC (--fail-on-qc)")]
    for failure in listed[:10]:
        print(f"  failed {failure['participant_id']} {failure['session_id']}: {failure['error']}")
    if len(listed) > 10:
        print(f"  ... {len(listed) - 10} more in {out_dir / FAILURES_FILE}")
