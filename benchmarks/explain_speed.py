"""Seconds to explain one scan: ``alzmri.explain.attribute`` per method, model and input size.

Usage (from the repository root, after ``make setup``)::

    .venv/bin/python benchmarks/explain_speed.py                       # liu2022 widths 1 and 8 at 128³, Grad-CAM
    .venv/bin/python benchmarks/explain_speed.py --widths 1 --methods gradcam saliency integrated_gradients --repeats 3

What is timed: one call of :func:`alzmri.explain.attribute` on one random ``(S, S, S)`` volume,
the way ``alzmri explain`` calls it per scan (model in eval mode; the class explained is the
predicted one, so Grad-CAM's own forward pass decides it). The model is ``liu2022`` built with
``create_model`` at the given width and input size with random weights: the cost does not
depend on the weights. One untimed call first (allocations, MONAI imports), then ``--repeats``
timed calls; the median and the minimum are reported, with ``torch.get_num_threads()`` threads
(``--threads``, default 2 as on the project's CPU box). A forward pass alone (``inference_mode``)
is timed the same way for comparison. Output: a markdown table on stdout, and ``--json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch



def _time(fn, repeats: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--methods", nargs="+", default=["gradcam"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from alzmri.explain.attribution import attribute as attribute_map
    from alzmri.models import create_model

    torch.manual_seed(0)
    volume = torch.randn(args.size, args.size, args.size)
    rows = []
    for width in args.widths:
        model = create_model("liu2022", num_classes=2, width=width, input_size=args.size).eval()
        params = sum(p.numel() for p in model.parameters())

        def forward() -> None:
            with torch.inference_mode():
                model(volume[None, None])

        median, best = _time(forward, args.repeats)
        rows.append({"model": "liu2022", "width": width, "params": params, "size": args.size, "method": "forward pass only", "median_s": median, "min_s": best})
        print(f"liu2022 w{width} {args.size}³ forward: {median:.2f} s", flush=True)
        for method in args.methods:
            median, best = _time(lambda m=method: attribute_map(model, volume, m, model_name="liu2022"), args.repeats)
            rows.append({"model": "liu2022", "width": width, "params": params, "size": args.size, "method": method, "median_s": median, "min_s": best})
            print(f"liu2022 w{width} {args.size}³ {method}: {median:.2f} s", flush=True)
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} timed calls each\n")
    print("| model | width | parameters | input | method | median s | min s |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['width']} | {r['params'] / 1e6:.2f} M | {r['size']}³ | {r['method']} | {r['median_s']:.2f} | {r['min_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
