"""Training and inference throughput (volumes or slices per second) and peak memory of every registered model.

Usage (from the repository root, after ``make setup``)::

    .venv/bin/python benchmarks/train_throughput.py --sizes 64 128 --batch-size 2 --json /tmp/tt.json
    .venv/bin/python benchmarks/train_throughput.py --models 'liu*' r3d_18 --sizes 32 64 --steps 1

The models are those in ``alzmri.models.list_models()`` at run time (``--models`` takes
shell-style patterns). Each (model, input size) pair runs in a fresh Python process (this
script re-invoked with ``--one NAME SIZE``), so its memory peak is its own and a crash or an
out-of-memory kill only costs that row. In that process:

* the model is built with ``create_model`` (``input_size=SIZE`` when the builder takes it,
  otherwise its defaults; no pretrained weights, nothing is downloaded) and moved to the device;
  sizes below the model's ``min_input_size`` are skipped with a note and run nothing;
* one random batch ``(B, in_channels, S, S, S)`` (``(B, in_channels, S, S)`` for 2D models) and random labels are created once on the
  device and reused by every step (cached inputs: no host-to-device copy while timing);
* inference: ``model.eval()`` and ``torch.inference_mode()``; ``--warmup`` untimed forward
  passes, then ``--steps`` timed ones;
* training: ``model.train()``, AdamW (lr 1e-4); one step is zero_grad + forward + cross-entropy
  + backward + ``optimizer.step()``; ``--warmup`` untimed steps, then ``--steps`` timed ones;
* throughput = B x steps / wall seconds of the timed steps (``time.perf_counter``; on CUDA with
  ``torch.cuda.synchronize()`` before starting and before stopping the clock). Inference runs
  before training.

Memory. CPU: peak resident set size of the child process, ``resource.getrusage(RUSAGE_SELF)
.ru_maxrss``, read after the imports (``base``: torch + alzmri, before the model is built), after
inference and after training (the table's peak is the one after training, i.e. the whole
process's peak). CUDA: ``torch.cuda.max_memory_allocated()`` over each phase, after
``torch.cuda.reset_peak_memory_stats()`` (it includes the parameters and the cached inputs; the
table shows the training phase's). GB = 1e9 bytes.

CPU runs default to fp32 (``--amp`` gives bf16 autocast on the CPU too) with torch's default thread
count (all cores) unless ``--threads N``. CUDA
(used when available, or with ``--device cuda``) defaults to bf16 autocast (``--amp``) and
``torch.channels_last_3d`` for the model and the inputs (``--channels-last``), with
``torch.backends.cudnn.benchmark = True``; the loss is computed in fp32.

A model that fails (an exception, out of memory, a killed process, ``--timeout``) gives a row
with the error in its notes. Progress goes to stderr (one line per finished row); the markdown
table to stdout, under a header line naming the device, torch version, settings and the 1-minute
load average at the start (CPU timings on a shared machine suffer from other jobs); ``--json
PATH`` writes the header and every row, rewritten atomically after each row.
"""

from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from alzmri.models import create_model, list_models, model_info

RESULT_PREFIX = "TRAIN_THROUGHPUT_RESULT "
GB = 1e9


# ---------------------------------------------------------------------------------------------
# child: one (model, size) in this process
# ---------------------------------------------------------------------------------------------


def peak_rss_bytes() -> int | None:
    """This process's peak resident set size in bytes (``ru_maxrss``), or None without ``resource``."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss) if sys.platform == "darwin" else int(maxrss) * 1024  # macOS: bytes; Linux: KiB


def short_error(exc: BaseException) -> str:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "out of memory (CUDA)"
    if isinstance(exc, MemoryError):
        return "out of memory (MemoryError)"
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_one(name: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Measure one model at one input size in the current process; never raises."""
    row: dict[str, Any] = {"model": name, "input_size": size, "batch_size": args.batch_size}
    row["rss_base_gb"] = _gb(peak_rss_bytes())  # after the imports, before anything else
    errors: list[str] = []
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    row["threads"] = torch.get_num_threads()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    try:
        info = model_info(name)
        kwargs: dict[str, Any] = {"input_size": size} if "input_size" in info.defaults else {}
        model = create_model(name, **kwargs).to(device)
        flat = info.spatial_dims == 2
        row["spatial_dims"] = info.spatial_dims
        memory_format = (torch.channels_last if flat else torch.channels_last_3d) if args.channels_last else torch.contiguous_format
        model = model.to(memory_format=memory_format)
        row["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        in_channels = int(info.defaults.get("in_channels", 1))
        num_classes = int(info.defaults.get("num_classes", 2))
        x = torch.randn(args.batch_size, in_channels, *(size,) * info.spatial_dims, device=device).contiguous(memory_format=memory_format)
        y = torch.randint(0, num_classes, (args.batch_size,), device=device)
    except Exception as exc:  # noqa: BLE001 - the row reports it
        row["error"] = f"build: {short_error(exc)}"
        row["rss_peak_gb"] = _gb(peak_rss_bytes())
        return row
    amp_dtype = torch.bfloat16 if args.amp else None

    def autocast() -> Any:
        return torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    def timed(step: Any) -> float:
        for _ in range(args.warmup):
            step()
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        _sync(device)
        return time.perf_counter() - start

    # inference
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        model.eval()

        def infer_step() -> None:
            with torch.inference_mode(), autocast():
                model(x)

        seconds = timed(infer_step)
        row["infer_s_per_step"] = seconds / args.steps
        row["infer_vol_s"] = args.batch_size * args.steps / seconds
    except Exception as exc:  # noqa: BLE001
        errors.append(f"inference: {short_error(exc)}")
    row["rss_after_infer_gb"] = _gb(peak_rss_bytes())
    if device.type == "cuda":
        row["cuda_infer_peak_gb"] = torch.cuda.max_memory_allocated(device) / GB
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    # training
    try:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def train_step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            loss.backward()
            optimizer.step()

        seconds = timed(train_step)
        row["train_s_per_step"] = seconds / args.steps
        row["train_vol_s"] = args.batch_size * args.steps / seconds
    except Exception as exc:  # noqa: BLE001
        errors.append(f"training: {short_error(exc)}")
    row["rss_peak_gb"] = _gb(peak_rss_bytes())
    if device.type == "cuda":
        row["cuda_train_peak_gb"] = torch.cuda.max_memory_allocated(device) / GB
        row["cuda_train_reserved_gb"] = torch.cuda.max_memory_reserved(device) / GB
    if errors:
        row["error"] = "; ".join(errors)
    return row


def _gb(n: int | None) -> float | None:
    return None if n is None else n / GB


# ---------------------------------------------------------------------------------------------
# parent: environment, subprocesses, table
# ---------------------------------------------------------------------------------------------


def meta_params_m(name: str, size: int) -> float | None:
    """Parameter count (millions) from a build on the ``meta`` device (no memory, no compute)."""
    try:
        kwargs: dict[str, Any] = {"input_size": size} if "input_size" in model_info(name).defaults else {}
        with torch.device("meta"):
            model = create_model(name, **kwargs)
        return sum(p.numel() for p in model.parameters()) / 1e6
    except Exception:  # noqa: BLE001 - the count is a courtesy for rows that measured nothing
        return None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def environment(args: argparse.Namespace) -> dict[str, Any]:
    env: dict[str, Any] = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "device": args.device,
        "cpu": cpu_name(),
        "cpu_cores": os.cpu_count(),
        "threads": args.threads or torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if args.device.startswith("cuda") else None,
        "python": platform.python_version(),
        "load_avg_1min_at_start": load_average(),
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "steps": args.steps,
        "amp_bf16": args.amp,
        "channels_last_3d": args.channels_last,
    }
    return env


def load_average() -> float | None:
    """The 1-minute load average (other jobs on a shared machine slow the CPU timings down)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def header_line(env: dict[str, Any]) -> str:
    if env["gpu"]:
        device = f"GPU {env['gpu']} (CUDA {env['cuda']}); host CPU {env['cpu']}"
    else:
        device = f"CPU {env['cpu']}, {env['threads']} threads ({env['cpu_cores']} cores)"
    precision = "bf16 autocast" if env["amp_bf16"] else "fp32"
    layout = ", channels_last_3d" if env["channels_last_3d"] else ""
    load = "" if env["load_avg_1min_at_start"] is None else f", load avg {env['load_avg_1min_at_start']:.2f} at start"
    return (f"{device}; torch {env['torch']}; batch {env['batch_size']}, {env['warmup']} warm-up + "
            f"{env['steps']} timed steps, {precision}{layout}, AdamW; {env['date']}{load}")


def select_models(patterns: list[str]) -> list[str]:
    known = list_models()
    chosen: list[str] = []
    for pattern in patterns:
        matches = [n for n in known if fnmatch.fnmatch(n, pattern)]
        if not matches:
            raise SystemExit(f"--models: {pattern!r} matches no registered model; known: {', '.join(known)}")
        chosen += [m for m in matches if m not in chosen]
    return chosen


def child_command(name: str, size: int, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", name, str(size),
           "--batch-size", str(args.batch_size), "--warmup", str(args.warmup), "--steps", str(args.steps),
           "--device", args.device, "--amp" if args.amp else "--no-amp",
           "--channels-last" if args.channels_last else "--no-channels-last"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return cmd


def run_child(name: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run ``--one name size`` in a fresh interpreter and return its row (an error row on failure)."""
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    row: dict[str, Any] = {"model": name, "input_size": size, "batch_size": args.batch_size}
    try:
        done = subprocess.run(child_command(name, size, args), capture_output=True, text=True, env=env,
                              timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        row["error"] = f"timed out after {args.timeout:g} s"
        return row
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    if done.returncode < 0:
        sig = signal.Signals(-done.returncode).name
        row["error"] = f"child killed by {sig}" + (" (out of memory?)" if sig == "SIGKILL" else "")
    else:
        tail = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        row["error"] = f"child exited {done.returncode}: {tail[-1].strip() if tail else 'no output'}"[:300]
    return row


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict[str, Any]], cuda: bool) -> str:
    lines = ["| model | input | params (M) | train inputs/s | infer inputs/s | peak memory (GB) | notes |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if cuda:
            memory = _fmt(r.get("cuda_train_peak_gb"))
        else:
            memory = _fmt(r.get("rss_peak_gb"))
            if r.get("rss_base_gb") is not None and r.get("rss_peak_gb") is not None:
                memory += f" (base {r['rss_base_gb']:.2f})"
        notes = r.get("note") or r.get("error") or ""
        power = "²" if r.get("spatial_dims") == 2 else "³"
        lines.append(f"| {r['model']} | {r['input_size']}{power} | {_fmt(r.get('params_m'))} | {_fmt(r.get('train_vol_s'))} | "
                     f"{_fmt(r.get('infer_vol_s'))} | {memory} | {notes.replace('|', '/')} |")
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically: a temporary file in the same folder, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(payload, indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def progress_line(i: int, n: int, row: dict[str, Any], seconds: float) -> str:
    head = f"[{i}/{n}] {row['model']} {row['input_size']}{'²' if row.get('spatial_dims') == 2 else '³'}"
    if row.get("note"):
        return f"{head}: {row['note']}"
    unit = "img/s" if row.get("spatial_dims") == 2 else "vol/s"
    parts = [f"train {_fmt(row.get('train_vol_s'))} {unit}", f"infer {_fmt(row.get('infer_vol_s'))} {unit}"]
    peak = row.get("cuda_train_peak_gb", row.get("rss_peak_gb"))
    parts.append(f"peak {_fmt(peak)} GB")
    if row.get("error"):
        parts.append(f"ERROR {row['error']}")
    return f"{head}: {', '.join(parts)} ({seconds:.0f} s)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example (CPU, two models, quick):\n"
               "  .venv/bin/python benchmarks/train_throughput.py --models liu_cnn_compact 'r3d*' "
               "--sizes 32 64 --steps 1 --warmup 1 --json /tmp/tt.json",
    )
    parser.add_argument("--models", nargs="+", default=["*"], metavar="PATTERN",
                        help="registered model names or shell-style patterns (default: all registered models)")
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128], metavar="S",
                        help="cubic input edges in voxels (default: 64 128)")
    parser.add_argument("--batch-size", type=int, default=2, help="volumes per step (default: 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before timing, per phase (default: 1)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per phase (default: 3)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None,
                        help="default: cuda when torch.cuda.is_available(), else cpu")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="bf16 autocast (default: on for cuda, off (fp32) for cpu)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.channels_last_3d model and inputs (default: on for cuda, off for cpu)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's default, all cores)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds allowed per (model, size) process before it is killed (default: none)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the header and rows here")
    parser.add_argument("--one", nargs=2, metavar=("NAME", "SIZE"), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error("--steps and --batch-size must be >= 1, --warmup >= 0")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    cuda = args.device == "cuda"
    args.amp = cuda if args.amp is None else args.amp
    args.channels_last = cuda if args.channels_last is None else args.channels_last
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one is not None:
        row = run_one(args.one[0], int(args.one[1]), args)
        print(RESULT_PREFIX + json.dumps(row), flush=True)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    env = environment(args)
    names = select_models(args.models)
    jobs = [(name, size) for name in names for size in args.sizes]
    print(f"{len(names)} models x {len(args.sizes)} sizes = {len(jobs)} rows: {', '.join(names)}", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    for i, (name, size) in enumerate(jobs, 1):
        info = model_info(name)
        load = load_average()
        start = time.perf_counter()
        if size < info.min_input_size:
            row: dict[str, Any] = {"model": name, "input_size": size, "batch_size": args.batch_size,
                                   "note": f"skipped: needs inputs of at least {info.min_input_size}³"}
        else:
            row = run_child(name, size, args)
        row["wall_s"] = time.perf_counter() - start
        if row.get("params_m") is None and "note" not in row:  # failed before building: count on meta
            row["params_m"] = meta_params_m(name, size)
        row["load_avg_1min_before"] = load
        rows.append(row)
        print(progress_line(i, len(jobs), row, row["wall_s"]), file=sys.stderr, flush=True)
        if args.json:
            write_json(args.json, {"environment": env, "rows": rows})
    print(header_line(env))
    print()
    print(table(rows, cuda=args.device == "cuda"))


if __name__ == "__main__":
    main()
