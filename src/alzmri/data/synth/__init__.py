"""``alzmri synth``: a synthetic T1w cohort (CN / MCI / AD) in BIDS layout, with atrophy ground truth.

Example:
    >>> from alzmri.data.synth import SynthConfig, synthesize_cohort
    >>> synthesize_cohort(SynthConfig(subjects=8, voxel_size=2.0), Path("cohort"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from alzmri.data.synth.bids import claim_output, write_tables
from alzmri.data.synth.cohort import plan_jobs, plan_subjects
from alzmri.data.synth.config import SynthConfig
from alzmri.data.synth.render import ScanJob, render_scan, warm_up

__all__ = ["SynthConfig", "synthesize_cohort"]


def synthesize_cohort(config: SynthConfig, out_dir: Path, progress: bool = True) -> Path:
    """Generate (or finish) a synthetic cohort in ``out_dir``.

    Scans that already exist are skipped, so re-running the same config into the same folder
    resumes an interrupted run and is a quick no-op on a complete one. Output does not depend
    on ``config.workers``.

    Args:
        config: what to generate.
        out_dir: dataset root; must be missing, empty, or an earlier output of the same config.
        progress: show a progress bar.

    Returns:
        ``out_dir``.

    Raises:
        AlzmriError: if ``out_dir`` holds anything else.
    """
    out_dir = Path(out_dir)
    claim_output(out_dir, config)
    subjects = plan_subjects(config)
    todo = [job for job in plan_jobs(config, out_dir, subjects) if not job.done()]
    if todo:
        _render_all(todo, config.workers or os.cpu_count() or 1, progress)
    write_tables(out_dir, subjects, config)
    return out_dir


def _one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """Limit BLAS to one thread: its matrices here are small, and threads only oversubscribe cores."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _init_worker() -> None:
    _one_blas_thread()  # stays in force for the life of the worker process


def _render_all(jobs: list[ScanJob], workers: int, progress: bool) -> None:
    workers = min(workers, len(jobs))
    if workers == 1:
        with _one_blas_thread():
            for job in tqdm(jobs, desc="synth", unit="scan", disable=not progress):
                render_scan(job)
        return
    # With fork the template model built here is shared copy-on-write by every worker instead
    # of being rebuilt (seconds, ~250 MB) in each; elsewhere each worker builds its own.
    context = multiprocessing.get_context("fork") if sys.platform == "linux" else None
    if context is not None:
        warm_up(jobs[0].nominal_voxel)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        futures = [pool.submit(render_scan, job) for job in jobs]
        try:
            # The bar (and its monitor thread) starts only after the workers have been forked.
            with tqdm(total=len(jobs), desc="synth", unit="scan", disable=not progress) as bar:
                for future in as_completed(futures):
                    future.result()
                    bar.update(1)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
