"""``alzmri import-slices`` (2D image files) and ``alzmri slices`` (slices cut from a 3D cache)."""

from __future__ import annotations

from pathlib import Path

from alzmri.data.slices.config import EdaConfig, ImportSlicesConfig, SliceAuditConfig, SlicesConfig


def run_import(config: ImportSlicesConfig) -> Path:
    from alzmri.data.slices.from_images import import_slices

    result = import_slices(config)
    counts = ", ".join(f"{c} {n}" for c, n in zip(result["classes"], result["counts"], strict=True))
    print(f"{result['slices']} slices ({counts}) of {config.size}x{config.size} in {result['out']}; "
          f"subject known for {result['subjects_known']} of them")  # fmt: skip
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    if result["split"]:
        parts = ", ".join(f"{name} {n}" for name, n in result["split"].items())
        print(f"the split the images came with ({parts} slices) is in {Path(result['out']) / 'split'}")
    return Path(result["out"])


def run_slices(config: SlicesConfig) -> Path:
    from alzmri.data.slices.from_volumes import slices_from_volumes

    result = slices_from_volumes(config)
    kind = "2.5D (3 channels)" if result["channels"] == 3 else "2D"
    print(f"{result['slices']} {kind} {config.plane} slices of {result['size']}x{result['size']} "
          f"({result['per_scan']} per scan, {result['scans']} scans) in {result['out']}")  # fmt: skip
    return Path(result["out"])


def run_audit(config: SliceAuditConfig) -> dict:
    from alzmri.data.slices.audit_run import run_slice_audit

    summary = run_slice_audit(config)
    cal = summary["calibration"]
    if cal.get("source"):
        print(f"threshold NCC > {cal['threshold']:.4f}, calibrated on {cal['source']} ({cal['subjects']} subjects): flags "
              f"{cal['same_person_flagged']:.1%} of same-person neighbouring slice pairs and {cal['strangers_flagged']:.1%} of strangers' best matches")  # fmt: skip
    else:
        print(f"threshold NCC > {cal['threshold']:.4f} (given)")
    print(f"{summary['flagged']} of {summary['test_slices']} {config.test} slices ({summary['flagged_share']:.1%}) have a {config.train} slice "
          f"with NCC above it: probably the same person; per class: "
          + ", ".join(f"{c} {v['flagged']}/{v['slices']}" for c, v in summary["per_class"].items()))  # fmt: skip
    print(f"every {config.test} slice's best match: {Path(summary['out']) / 'audit.tsv'}; figures and summary.json in {summary['out']}")
    return summary


def run_eda(config: EdaConfig) -> dict:
    from alzmri.data.slices.eda import run_eda as eda

    summary = eda(config.cache, config.out, config.limit)
    counts = ", ".join(f"{c} {v['slices']}" for c, v in summary["counts"].items())
    stages = "; ".join(f"{r['pair']} SSIM {r['ssim']:.3f}" for r in summary["adjacent_stages"])
    print(f"{counts} slices" + (f"; adjacent-stage means: {stages}" if stages else ""))
    print(f"page: {Path(summary['out']) / 'eda.html'}")
    return summary
