"""One self-contained HTML report (figures embedded as PNG data) plus ``metrics.json`` and the PNGs.

Plain HTML and CSS, no script, no template engine and no web dependency: the file opens
anywhere, can be mailed, and is archived as is.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from alzmri.evaluation.report import build_report, evaluated_rows, headline_rows
from alzmri.evaluation.report_figures import write_figures
from alzmri.utils.atomic import atomic_write_text
from alzmri.utils.jsonable import strict_json

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#1d1d1f;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f6}td:first-child,th:first-child{text-align:left}.muted{color:#666;font-size:13px}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0;font-size:14px}.bad{background:#fde8e8;border:1px solid #e0a0a0}
.warn{background:#fff6e0;border:1px solid #e6c66e}.ok{background:#e9f7ec;border:1px solid #9fd3aa}
.figs{display:flex;flex-wrap:wrap;gap:12px}.figs figure{margin:0;border:1px solid #eee;padding:6px}
.figs img{max-width:540px;height:auto;display:block}figcaption{font-size:12px;color:#555;max-width:540px}
pre{background:#f6f6f8;padding:10px;overflow:auto;font-size:12px}
"""

CAPTIONS = {
    "confusion_matrix": "Confusion matrix of the evaluated scans (colour: per-class recall).",
    "roc": "One-vs-rest ROC curves; shaded: 95 % pointwise band from resampling subjects.",
    "pr": "Precision–recall curves; dotted: the class's base rate (a useless model's precision).",
    "calibration": "Reliability of the top-label probability; the bars count scans per bin.",
    "predictive_values": "PPV and NPV over prevalence at the fixed threshold (posterior mean and 95 % credible band).",
}


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _interval(estimate: float | None, low: float | None, high: float | None) -> str:
    if low is None or high is None or not math.isfinite(low) or not math.isfinite(high):
        return _fmt(estimate)
    return f"{_fmt(estimate)} <span class=muted>[{_fmt(low)}, {_fmt(high)}]</span>"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _banners(report: dict[str, Any]) -> str:
    audit = report["audit"]
    parts = []
    if audit["leaky"]:
        subjects = ", ".join(f"{html.escape(s['participant_id'])} ({' & '.join(s['splits'])})" for s in audit["subjects_in_several_splits"][:10])
        images = ", ".join(f"{html.escape(s['image_hash'][:12])}… ({' & '.join(s['splits'])})" for s in audit["images_in_several_splits"][:10])
        seen = audit.get("seen_by_model", [])
        seen_text = ", ".join(f"{html.escape(s['participant_id'])} {html.escape(s['session_id'])} (model's {s['seen_in']}, same {s['seen_by']})" for s in seen[:10])
        detail = (f"<br>Subjects in several splits ({len(audit['subjects_in_several_splits'])}): {subjects}" if subjects else "") + (
            f"<br>Identical images in several splits ({len(audit['images_in_several_splits'])}): {images}" if images else "") + (
            f"<br>Scans the model trained or was validated on ({len(seen)}): {seen_text}" if seen else "")
        cause = ("Data of the same subject or the same image appears in more than one split"
                 if audit["subjects_in_several_splits"] or audit["images_in_several_splits"] else "The model was trained or validated on some evaluated scans")
        parts.append(f"<div class='banner bad'><b>LEAKAGE: these results are not valid.</b> {cause}, "
                     f"so the evaluated rows are not held out.{detail}</div>")  # fmt: skip
    else:
        checked = " and none the model was trained or validated on" if audit.get("model_checked") else ""
        parts.append(f"<div class='banner ok'>Leakage audit passed: no subject and no identical image in two splits{checked}.</div>")
    if report.get("subjects_unknown"):
        n, unit = report["subjects_unknown"], report.get("unit", "scan")
        parts.append(f"<div class='banner bad'><b>Subjects unknown.</b> {n} of {report['n_scans']} evaluated {unit}s have no subject id: each "
                     "counts as its own subject, so their subject-level results are slice-level, and the split cannot be checked for one "
                     "person on both sides (run the near-duplicate audit, 'alzmri slice-audit').</div>")  # fmt: skip
    if report.get("split_level") == "slice":
        parts.append("<div class='banner bad'><b>SLICE-LEVEL SPLIT: these results are not valid.</b> The split was made per slice "
                     "('--level slice', to demonstrate leakage): slices of one person are in training and in the evaluated set.</div>")
    if report["small_sample"]:
        small = ", ".join(f"{html.escape(c)}: {n}" for c, n in report["small_sample"].items())
        parts.append(f"<div class='banner warn'><b>Small sample.</b> Fewer than 30 subjects of a class were evaluated ({small}); "
                     "intervals are wide and single numbers are unreliable.</div>")  # fmt: skip
    if report.get("not_computed"):
        missing = "; ".join(f"<b>{html.escape(k)}</b>: {html.escape(v)}" for k, v in report["not_computed"].items())
        parts.append(f"<div class='banner warn'><b>Not computed</b> (the evaluated data cannot support them): {missing}</div>")
    return "".join(parts)


def _clinical(c: dict[str, Any]) -> str:
    se, sp, lr = c["sensitivity"], c["specificity"], c["likelihood_ratios"]
    counts = c["counts"]
    rows = [
        ["sensitivity", _interval(se["mean"], se["low"], se["high"]), f"{counts['tp']}/{counts['tp'] + counts['fn']}"],
        ["specificity", _interval(sp["mean"], sp["low"], sp["high"]), f"{counts['tn']}/{counts['tn'] + counts['fp']}"],
        ["LR+", _interval(lr["lr_pos"]["median"], lr["lr_pos"]["low"], lr["lr_pos"]["high"]), "posterior median"],
        ["LR−", _interval(lr["lr_neg"]["median"], lr["lr_neg"]["low"], lr["lr_neg"]["high"]), "posterior median"],
        [f"PPV at prevalence {c['prevalence']:.0%}", _interval(c["ppv"]["mean"], c["ppv"]["low"], c["ppv"]["high"]), "Bayes' rule"],
        [f"NPV at prevalence {c['prevalence']:.0%}", _interval(c["npv"]["mean"], c["npv"]["low"], c["npv"]["high"]), "Bayes' rule"],
    ]
    note = f"<p class=muted>{html.escape(c['note'])}</p>" if c["note"] else ""
    return (
        f"<p>Positive class <b>{html.escape(c['positive_class'])}</b>; one decision per subject "
        f"(probabilities averaged over sessions); threshold {c['threshold']['threshold']:.4g}, chosen on "
        f"{html.escape(c['threshold']['chosen_on'])} and applied unchanged. Intervals: 95 % equal-tailed "
        "posteriors from Beta(1 + successes, 1 + failures).</p>" + note + _table(["quantity", "estimate [95 % interval]", "basis"], rows)
    )


def render_html(report: dict[str, Any], figures: dict[str, Path], title: str = "alzmri evaluation report") -> str:
    """The report page as one HTML string with the figures inlined."""
    classes = report["classes"]
    unit = report.get("unit", "scan")
    headline = [
        [name.replace("_", " "), _interval(*row["scan_level"]), _interval(*row["subject_level"])]
        for row in headline_rows(report) for name in [row["metric"]]
    ]  # fmt: skip
    intervals = report["intervals"]["scan_level"]

    def cell(c: str, k: str) -> str:
        ci = intervals.get(f"{c}/{k}", {})
        return _interval(report["scan_level"]["per_class"][c][k], ci.get("low"), ci.get("high"))

    per_class = [
        [html.escape(c)] + [cell(c, k) for k in ("precision", "recall", "specificity", "f1", "auc")]
        + [_fmt(report["scan_level"]["per_class"][c]["pr_auc"]), str(report["scan_level"]["per_class"][c]["support"])]
        for c in classes
    ]  # fmt: skip
    balance = [
        [html.escape(b["split"])] + [f"{b['subjects'].get(c, 0)} / {b['scans'].get(c, 0)}" for c in classes] for b in report["audit"]["balance"]
    ]
    figs = "".join(
        f"<figure><img alt='{name}' src='data:image/png;base64,{base64.b64encode(Path(path).read_bytes()).decode()}'>"
        f"<figcaption>{CAPTIONS.get(name, '')}</figcaption></figure>"
        for name, path in figures.items()
    )
    delong = report.get("auc_delong")
    delong_text = (
        f"<p class=muted>Subject-level AUC with DeLong's 95 % interval: {_interval(delong['auc'], delong['low'], delong['high'])}.</p>"
        if delong else ""
    )  # fmt: skip
    context = json.dumps(report["context"], indent=2, default=str)
    return f"""<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title><style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class=muted>Evaluated: {html.escape(report['evaluated'])} — {report['n_scans']} {unit}s of {report['n_subjects']} subjects; classes {', '.join(map(html.escape, classes))}.
Every number below is computed from the predictions table alone.</p>
{_banners(report)}
<h2>Headline metrics</h2>
<p class=muted>{html.escape(report['intervals']['method'])}. Subject level: one row per subject, probabilities averaged over its {"slices and " if unit == "slice" else ""}sessions.</p>
{_table(["metric", f"{unit} level [95 % CI]", "subject level [95 % CI]"], headline)}
{delong_text}
<h2>Per class ({unit} level, one vs rest, 95 % CI)</h2>
{_table(["class", "precision", "recall", "specificity", "F1", "ROC-AUC", "PR-AUC", f"{unit}s"], per_class)}
{"<h2>Clinical view</h2>" + _clinical(report["clinical"]) if "clinical" in report else ""}
<h2>Figures</h2><div class=figs>{figs}</div>
<h2>Splits: subjects / scans per class</h2>
{_table(["split"] + [html.escape(c) for c in classes], balance)}
<h2>Run</h2><details><summary>context and configuration</summary><pre>{html.escape(context)}</pre></details>
</body></html>
"""


def write_report(table: pd.DataFrame, classes: list[str], out: Path, title: str = "alzmri evaluation report", **options: Any) -> dict[str, Any]:
    """Compute the report (see :func:`build_report` for ``options``) and write ``metrics.json``,
    the PNG figures and ``report.html`` into ``out``; returns the report dict (plus ``out``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(table, classes, **options)
    rows, _ = evaluated_rows(table, options.get("subset", "test"))
    figures = write_figures(rows, classes, report, out, seed=int(options.get("seed", 0)))
    report = strict_json(report)
    atomic_write_text(out / "metrics.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "report.html", render_html(report, figures, title))
    report["out"] = str(out)
    report["figures"] = {k: str(v) for k, v in figures.items()}
    return report
