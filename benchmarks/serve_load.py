"""A bounded load test of ``alzmri serve`` on 127.0.0.1: latency percentiles, errors and the server's memory (issue 17).

Usage (from the repository root, after ``make setup``)::

    .venv/bin/python benchmarks/serve_load.py --out benchmarks/results/serve_load            # a synthetic scan, a random-weight model
    .venv/bin/python benchmarks/serve_load.py --model runs/RUN/checkpoints/best-loss.ckpt --scan scan.nii.gz

It starts ``alzmri serve`` as a user would (a subprocess), sends ``--requests`` uploads of one
scan with ``--concurrency`` clients, stops by itself, and reports p50 / p95 / max latency, every
status code, and the server's resident memory after the first ``--concurrency`` requests (the
model and the libraries loaded) and at the end: memory that grows with the number of requests
would be a leak (uploads and results are not kept).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ALZMRI = str(ROOT / ".venv" / "bin" / "alzmri")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def default_inputs(folder: Path) -> tuple[Path, Path]:
    """One synthetic scan (``alzmri synth``) and a random-weight ``liu_cnn_compact`` taking it at 64³."""
    import torch

    from alzmri.io.checkpoint import write_checkpoint
    from alzmri.models import create_model
    from alzmri.preprocessing.config import PreprocessConfig

    subprocess.run([ALZMRI, "synth", folder / "bids", "--subjects", "2", "--voxel-size", "1.5", "--seed", "3", "--no-progress"], check=True, stdout=subprocess.DEVNULL)
    scan = sorted((folder / "bids").rglob("*_T1w.nii.gz"))[0]
    torch.manual_seed(0)
    kwargs = {"input_size": 64}
    net = create_model("liu_cnn_compact", num_classes=2, **kwargs)
    hparams = {"model_name": "liu_cnn_compact", "model_kwargs": {"num_classes": 2, **kwargs}, "classes": ["CN", "AD"],
               "preprocess": PreprocessConfig(size=64, spacing=2.0, skull_strip="none").model_dump(mode="json")}  # fmt: skip
    return write_checkpoint(folder / "model.ckpt", net.state_dict(), hparams), scan


def _rss_by_quarter(results: list[tuple[int, float, float]], memory: list[tuple[float, float]]) -> dict[str, float]:
    """The server's resident memory when 25, 50, 75 and 100 % of the requests had been answered: a leak grows with them, a warm-up plateaus."""
    finished = sorted(r[2] for r in results)
    out = {}
    for quarter in (1, 2, 3, 4):
        when = finished[max(0, len(finished) * quarter // 4 - 1)]
        before = [m for t, m in memory if t <= when]
        out[str(len(finished) * quarter // 4)] = round(before[-1], 1) if before else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve_load")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--scan", type=Path)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--evidence", default="gradcam")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="alzmri-load-"))
    model, scan = (args.model, args.scan) if args.model and args.scan else default_inputs(scratch)
    port = _port()
    command = [ALZMRI, "serve", str(model), "--port", str(port), "--workers", str(args.workers), "--queue", str(args.concurrency), "--evidence", args.evidence]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ | {"OMP_NUM_THREADS": "1"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.time() > deadline:
                sys.exit(f"the server did not start: {server.stderr.read().decode()[-2000:] if server.stderr else ''}")
            time.sleep(0.5)
        body = scan.read_bytes()
        memory: list[tuple[float, float]] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                memory.append((time.perf_counter(), _rss_mb(server.pid)))
                time.sleep(0.25)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        results: list[tuple[int, float, float]] = []
        failures: list[str] = []
        lock = threading.Lock()

        def one(_: int) -> None:
            start = time.perf_counter()
            try:
                response = httpx.post(f"{url}/api/predict", files={"file": (scan.name, body)}, timeout=300)
                status = response.status_code
                if status != 200:
                    with lock:
                        failures.append(f"{status}: {response.text[:300]}")
            except httpx.HTTPError as exc:
                status = -1
                with lock:
                    failures.append(f"transport: {exc}")
            with lock:
                results.append((status, time.perf_counter() - start, time.perf_counter()))

        begin = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - begin
        done.set()
        sampler.join()
    finally:
        server.terminate()
        server.wait(30)
    latencies = [r[1] for r in results if r[0] == 200]
    warm_at = sorted(r[2] for r in results)[min(args.concurrency, len(results)) - 1]
    after_warmup = [m for t, m in memory if t >= warm_at]
    summary = {"requests": args.requests, "concurrency": args.concurrency, "workers": args.workers, "evidence": args.evidence, "scan": str(scan),
               "scan_mb": round(len(body) / 1e6, 2), "statuses": dict(Counter(r[0] for r in results)), "errors": sum(r[0] != 200 for r in results), "first_errors": failures[:5],
               "p50_s": statistics.median(latencies), "p95_s": float(np.percentile(latencies, 95)), "max_s": max(latencies),
               "throughput_per_s": len(latencies) / wall, "wall_s": wall, "rss_mb_after_warmup": after_warmup[0] if after_warmup else None,
               "rss_mb_end": memory[-1][1] if memory else None, "rss_mb_peak": max(m for _, m in memory) if memory else None,
               "rss_mb_by_requests_done": _rss_by_quarter(results, memory), "cpu": os.cpu_count()}  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
