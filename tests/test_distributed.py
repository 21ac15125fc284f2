"""Multi-process training: torchrun + DDP (gloo on CPU) gives the single-process result format once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch


_GLOO_CRASH = "gloo/transport/tcp"


@pytest.mark.slow
def test_two_process_ddp_on_cpu_writes_one_result(prepared: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "runs"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "alzmri", "train", str(prepared["cache"]), str(prepared["split"]),
        "--out", str(out), "--run-name", "ddp", "--epochs", "2", "--batch-size", "2", "--threads", "1", "--no-progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    if done.returncode != 0 and _GLOO_CRASH in done.stderr:
        # Seen once (a fresh-clone CI run, 2026-12-01; the test alone then passed 5 of 5): a rank aborts inside gloo's TCP transport
        # ("terminate called without an active exception", SIGABRT) before the first step. One fresh
        # retry; a real bug fails both times.
        shutil.rmtree(out, ignore_errors=True)
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-3000:]
    assert done.stdout.count("trained 2 epochs") == 1  # rank 0 reports for both processes
    assert "2 processes (DDP)" in done.stdout

    run_dir = out / "ddp"
    assert [p.parent.name for p in out.glob("*/result.json")] == ["ddp"]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["processes"] == 2 and result["device"] == "cpu" and result["epochs_trained"] == 2
    assert set(result["checkpoints"]) == {"last", "best_acc", "best_loss"}
    metrics = (run_dir / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 3  # header + one row per epoch, not one per process

    # Each process trained on its half of the scans: steps per epoch = ceil(n / 2) // batch.
    n_train = json.loads((run_dir / "config.json").read_text())["n_train_scans"]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 2 * (-(-n_train // 2) // 2)
