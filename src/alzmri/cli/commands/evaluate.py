"""``alzmri evaluate``, ``alzmri report`` and ``alzmri predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alzmri.cli.console import fmt, print_table
from alzmri.evaluation.config import CompareConfig, EvaluateConfig, ExportConfig, PredictConfig, ReportConfig


def _with_ci(value: float | None, ci: dict[str, Any] | None) -> str:
    if value is None:
        return "n/a"
    if not ci or ci.get("low") is None or ci.get("high") is None:
        return fmt(value)
    return f"{fmt(value)}  [{fmt(ci['low'])}, {fmt(ci['high'])}]"


def print_metrics(metrics: dict[str, Any]) -> None:
    """The headline metrics of ``evaluate`` (scan level, with subject-bootstrap 95 % intervals when present)."""
    ci = metrics.get("intervals", {})
    unit = metrics.get("unit", "scan")
    rows = [
        (f"{unit}s / subjects", f"{metrics['n_scans']} / {metrics['n_subjects']}"),
        ("accuracy", _with_ci(metrics["accuracy"], ci.get("accuracy"))),
        ("balanced accuracy", _with_ci(metrics["balanced_accuracy"], ci.get("balanced_accuracy"))),
        ("macro F1", _with_ci(metrics["macro_f1"], ci.get("macro_f1"))),
    ]
    rows += [(f"AUC {c} vs rest", _with_ci(v, ci.get(f"{c}/auc"))) for c, v in metrics["auc"].items()]
    if unit == "slice" and metrics.get("subject_level"):  # slices: the per-subject result beside the per-slice one
        subject, sci = metrics["subject_level"], metrics.get("subject_intervals", {})
        keys = ["", "accuracy", "balanced_accuracy", "macro_f1"] + [f"{c}/auc" for c in metrics["auc"]]
        values = [str(subject["n_scans"])] + [_with_ci(subject[k], sci.get(k)) for k in keys[1:4]]
        values += [_with_ci(subject["auc"][c], sci.get(f"{c}/auc")) for c in metrics["auc"]]
        rows = [(name, value, other) for (name, value), other in zip(rows, values, strict=True)]
        print_table(f"{metrics['subset']} set (95 % CI: bootstrap over subjects)", ["metric", "slice level", "subject level (mean over slices)"], rows)
    else:
        print_table(f"{metrics['subset']} set (95 % CI: bootstrap over subjects)", ["metric", "value"], rows)
    if metrics.get("subjects_unknown"):
        print(f"warning: {metrics['subjects_unknown']} evaluated {unit}s have no subject id: each counts as its own subject (see the report's banner)")
    if metrics.get("split_level") == "slice":
        print("LEAKAGE: slice-level split (--level slice): slices of one subject are in training and in this set; these results are not held out")
    if metrics.get("clinical"):
        _print_clinical(metrics["clinical"])
    print_not_computed(metrics.get("not_computed", {}))


def print_not_computed(skipped: dict[str, str]) -> None:
    """One line per statistic or figure the data could not support."""
    for name, reason in skipped.items():
        print(f"not computed: {name}: {reason}")


def _print_clinical(clinical: dict[str, Any]) -> None:
    se, sp, ppv, npv = clinical["sensitivity"], clinical["specificity"], clinical["ppv"], clinical["npv"]
    print(f"{clinical['positive_class']} per subject at threshold {clinical['threshold']['threshold']:.3g} ({clinical['threshold']['chosen_on']}): "
          f"sensitivity {_with_ci(se['mean'], se)}, specificity {_with_ci(sp['mean'], sp)}; at prevalence {clinical['prevalence']:.0%}: "
          f"PPV {_with_ci(ppv['mean'], ppv)}, NPV {_with_ci(npv['mean'], npv)}")  # fmt: skip


def print_leakage(audit: dict[str, Any]) -> None:
    """The LEAKAGE lines of a report's audit (nothing when it passed)."""
    if audit["subjects_in_several_splits"] or audit["images_in_several_splits"]:
        print(f"LEAKAGE: {len(audit['subjects_in_several_splits'])} subjects and {len(audit['images_in_several_splits'])} images "
              "appear in more than one split; these results are not held out")  # fmt: skip
    if audit.get("seen_by_model"):
        print(f"LEAKAGE: {len(audit['seen_by_model'])} evaluated scans were in the model's training or validation data; these results are not held out")


def print_report(report: dict[str, Any]) -> None:
    """The report's banners, headline metrics with intervals, and the clinical view, as text."""
    from alzmri.evaluation.report import headline_rows

    print_leakage(report["audit"])
    if report.get("split_level") == "slice":
        print("LEAKAGE: slice-level split (--level slice): slices of one subject are in training and in the evaluated set")
    if report.get("subjects_unknown"):
        print(f"warning: {report['subjects_unknown']} evaluated {report.get('unit', 'scan')}s have no subject id: each counts as its own subject")
    if report["small_sample"]:
        print("small sample: fewer than 30 subjects of " + ", ".join(f"{c} ({n})" for c, n in report["small_sample"].items()))
    rows = [
        (row["metric"].replace("_", " "), *(_with_ci(v[0], {"low": v[1], "high": v[2]}) for v in (row["scan_level"], row["subject_level"])))
        for row in headline_rows(report)
    ]  # fmt: skip
    print_table(f"{report['evaluated']}: {report['n_scans']} scans, {report['n_subjects']} subjects (95 % CI)", ["metric", "scan level", "subject level"], rows)
    if report.get("clinical"):
        _print_clinical(report["clinical"])
    print_not_computed(report.get("not_computed", {}))


def run_evaluate(config: EvaluateConfig) -> dict[str, Any]:
    from alzmri.evaluation.evaluate import evaluate

    metrics = evaluate(config)
    print_leakage(metrics["audit"])
    print_metrics(metrics)
    print(f"predictions.tsv, metrics.json, figures and report.html in {metrics['out']}")
    return metrics


def run_report(config: ReportConfig) -> dict[str, Any]:
    from alzmri.evaluation.predictions import read_predictions
    from alzmri.evaluation.report_html import write_report

    table, classes = read_predictions(config.predictions)
    out = Path(config.out) if config.out else Path(config.predictions).resolve().parent / "report"
    extra = _seen_by_checkpoint(config.checkpoint, table, config.subset, config.threshold_split) if config.checkpoint else None
    report = write_report(table, classes, out, title=config.title, context={"predictions": str(config.predictions)}, audit_extra=extra, **config.report_options())
    print_report(report)
    print(f"report: {out / 'report.html'}  (metrics.json and the PNG figures beside it)")
    return report


def _seen_by_checkpoint(checkpoint: Path, table: Any, subset: str, threshold_split: str) -> dict[str, Any]:
    """The report's audit entries for rows the checkpoint's model has seen.

    Rows of ``subset`` must be neither its training nor its validation data, rows of the
    threshold split not its training data (as ``evaluate`` requires). Without content hashes
    in the table the ids are matched: naming the model's checkpoint says the table comes from
    the cohort it was trained on.
    """
    import pandas as pd

    from alzmri.data.provenance import find_seen
    from alzmri.io.checkpoint import read_checkpoint

    record = read_checkpoint(checkpoint)["hparams"].get("training_data")
    by_ids = not {"image_hash", "source_hash"} & set(table.columns)
    if "split" not in table.columns:
        found = find_seen(record, table, same_dataset=by_ids)
    else:
        split = table["split"].astype(str)
        evaluated = find_seen(record, table[split == subset], same_dataset=by_ids)
        threshold = find_seen(record, table[split == threshold_split], same_dataset=by_ids) if threshold_split != subset else evaluated.iloc[:0]
        found = pd.concat([evaluated, threshold[threshold["seen_in"] == "train"]], ignore_index=True)
    return {"seen_by_model": found.drop(columns="position").to_dict("records"), "model_checked": record is not None}


def run_predict(config: PredictConfig) -> None:
    from alzmri.evaluation.evaluate import PartlyPredicted, predict

    try:
        table = predict(config)
    except PartlyPredicted as exc:
        print(exc.table.to_string(index=False))
        raise
    print(table.to_string(index=False))
    print(f"predictions written to {config.out}")


def run_compare(config: CompareConfig) -> dict[str, Any]:
    import json

    from alzmri.evaluation.compare_runs import compare
    from alzmri.utils.atomic import atomic_write_text

    result = compare(config.a, config.b, config.subset, config.bootstrap, config.seed)
    if result["kind"] == "cv":
        rows = [
            (m.replace("_", " "), f"{r['a_mean']:.3f}", f"{r['b_mean']:.3f}", f"{r['corrected_t']['mean_diff']:+.3f}",
             f"{r['corrected_t']['p_value']:.3g}", f"{r['bayesian']['p_a_better']:.2f} / {r['bayesian']['p_rope']:.2f} / {r['bayesian']['p_b_better']:.2f}")
            for m, r in result["metrics"].items()
        ]  # fmt: skip
        print_table(f"{result['folds']}-fold cross-validation, A = {config.a}, B = {config.b}",
                    ["metric", "A mean", "B mean", "A − B", "p (corrected t)", "P(A>B) / P(rope ±0.01) / P(B>A)"], rows)  # fmt: skip
    else:
        rows = [(f"AUC {c} vs rest", f"{d['auc_a']:.3f}", f"{d['auc_b']:.3f}", f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]", f"DeLong p = {d['p_value']:.3g}")
                for c, d in result["delong"].items()]  # fmt: skip
        diff, mc = result["balanced_accuracy_difference"], result["mcnemar"]
        rows.append(("accuracy", f"{result['accuracy']['a']:.3f}", f"{result['accuracy']['b']:.3f}", "", f"McNemar p = {mc['p_value']:.3g} (b={mc['b']}, c={mc['c']})"))
        rows.append(("balanced accuracy A − B", "", "", f"{diff['estimate']:+.3f} [{diff['low']:+.3f}, {diff['high']:+.3f}]", "subject bootstrap"))
        print_table(f"{result['n_subjects']} subjects of split '{result['subset']}' (per subject)", ["", "A", "B", "difference [95 % CI]", "test"], rows)
    if config.out:
        atomic_write_text(Path(config.out), json.dumps(result, indent=2, default=float) + "\n")
    return result


def run_export(config: ExportConfig) -> dict[str, Any]:
    from alzmri.evaluation.export import export_model

    result = export_model(config)
    print(f"{result['format']} model written to {result['out']} (inputs: {', '.join(result['inputs'])}; classes: {', '.join(result['classes'])}); "
          f"its probabilities match PyTorch's within {result['max_difference']:.1g}")
    return result
