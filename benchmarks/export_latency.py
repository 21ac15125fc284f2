"""PyTorch vs ONNX Runtime (and TorchScript): latency of one scan and throughput of a batch, 1 and 2 CPU threads (issue 17).

Usage (from the repository root, after ``make setup``)::

    .venv/bin/python benchmarks/export_latency.py --out benchmarks/results/export_latency

Each model is built with random weights (speed does not depend on them) and saved as a
checkpoint in alzmri's layout, exported with ``alzmri export`` (ONNX and TorchScript), and run
through the same engines ``alzmri predict`` uses, on the same random inputs: the median and 95th
percentile of ``--repeats`` single-scan calls after ``--warmup`` calls, and scans per second
over batches of ``--batch``. The largest probability difference to PyTorch is reported beside.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import alzmri.fusion  # noqa: F401  (registers the fusion models)
from alzmri.evaluation.config import ExportConfig
from alzmri.evaluation.engines import OnnxEngine, TorchEngine, TorchScriptEngine, load_engine
from alzmri.evaluation.export import example_inputs, export_model
from alzmri.io.checkpoint import write_checkpoint
from alzmri.models import create_model
from alzmri.preprocessing.config import PreprocessConfig

MODELS = {  # name: (registry model, kwargs, input edge)
    "liu_cnn_compact@64": ("liu_cnn_compact", {"input_size": 64}, 64),
    "resnet10_3d@96": ("resnet10_3d", {}, 96),
    "liu2022@96": ("liu2022", {"input_size": 96}, 96),
}


def checkpoint(folder: Path, model: str, kwargs: dict[str, Any], size: int) -> Path:
    torch.manual_seed(0)
    net = create_model(model, num_classes=3, **kwargs)
    hparams = {"model_name": model, "model_kwargs": {"num_classes": 3, **kwargs}, "classes": ["CN", "MCI", "AD"],
               "preprocess": PreprocessConfig(size=size, spacing=1.5).model_dump(mode="json")}  # fmt: skip
    return write_checkpoint(folder / f"{model}-{size}.ckpt", net.state_dict(), hparams)


def timed(engine: Any, inputs: list[np.ndarray], repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        engine.probabilities(*inputs)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.probabilities(*inputs)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/export_latency"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for label in args.models.split(","):
        model, kwargs, size = MODELS[label]
        ckpt = checkpoint(args.out, model, kwargs, size)
        files = {"onnxruntime": export_model(ExportConfig(checkpoint=ckpt, out=args.out / f"{label}.onnx"))["out"],
                 "torchscript": export_model(ExportConfig(checkpoint=ckpt, format="torchscript", out=args.out / f"{label}.pt"))["out"]}  # fmt: skip
        reference = load_engine(ckpt)
        names = reference.inputs
        one = example_inputs(reference.hparams, names, batch=1, seed=0)
        batch = example_inputs(reference.hparams, names, batch=args.batch, seed=1)
        for threads in map(int, args.threads.split(",")):
            torch.set_num_threads(threads)
            engines: dict[str, TorchEngine | OnnxEngine | TorchScriptEngine] = {"torch": reference, "onnxruntime": OnnxEngine(Path(files["onnxruntime"]), threads),
                                                                               "torchscript": TorchScriptEngine(Path(files["torchscript"]))}  # fmt: skip
            for name, engine in engines.items():
                single = timed(engine, one, args.repeats, args.warmup)
                batched = timed(engine, batch, max(3, args.repeats // 4), 1)
                difference = float(np.abs(engine.probabilities(*batch) - reference.probabilities(*batch)).max())
                rows.append({"model": label, "threads": threads, "engine": name, "median_ms": 1000 * statistics.median(single),
                             "p95_ms": 1000 * float(np.percentile(single, 95)), "scans_per_s": args.batch / statistics.median(batched),
                             "max_difference": difference})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
        for path in (ckpt, *map(Path, files.values())):
            path.unlink()
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["| model | threads | engine | one scan, median ms | p95 ms | scans/s (batch %d) | max |Δp| vs PyTorch |" % args.batch, "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['threads']} | {r['engine']} | {r['median_ms']:.1f} | {r['p95_ms']:.1f} | {r['scans_per_s']:.1f} | {r['max_difference']:.1g} |" for r in rows]
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
