"""The evaluation report: every number, interval and check, computed from a predictions table only.

:func:`build_report` returns a JSON-able dict (written as ``metrics.json``); ``report_html``
turns it and the figures into one self-contained HTML page. The table may come from
``alzmri evaluate`` or from another tool (see :mod:`alzmri.evaluation.predictions`).

What is evaluated:

* the rows of one split (``--subset``, default ``test``) when the table has a ``split``
  column, otherwise every row;
* scan level (every row) and subject level (probabilities averaged over a subject's sessions)
  side by side;
* 95 % bootstrap intervals that resample **subjects** (a subject's sessions are not
  independent observations);
* for two classes, a clinical view at an operating threshold chosen on the validation rows
  (``--threshold-split``) and applied unchanged to the evaluated rows, per **subject**:
  sensitivity and specificity with Beta posteriors, likelihood ratios, and PPV/NPV at a
  stated prevalence with credible intervals, plus their curves over 1–50 % prevalence;
* checks: a subject in two splits or the same image (content hash) in two splits, class
  balance per split, and fewer than 30 subjects of a class in the evaluated rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from alzmri.evaluation.metrics import classification_metrics, probabilities, subject_level
from alzmri.evaluation.stats import (
    WeightedMetric,
    accuracy_metric,
    auc_metric,
    balanced_accuracy_metric,
    bootstrap_many,
    choose_threshold,
    delong_ci,
    likelihood_ratio_posteriors,
    mean_metric,
    predictive_value_posteriors,
    sensitivity_specificity_posteriors,
)
from alzmri.utils.errors import AlzmriError, first_line

MIN_SUBJECTS_PER_CLASS = 30
PREVALENCE_CURVE = np.round(np.arange(0.01, 0.505, 0.01), 2)
HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "mcc", "brier")


def evaluated_rows(table: pd.DataFrame, subset: str | None) -> tuple[pd.DataFrame, str]:
    """The rows the metrics are computed on, and a description of them."""
    if "split" in table.columns and subset:
        rows = table[table["split"].astype(str) == subset]
        if rows.empty:
            have = ", ".join(sorted(table["split"].astype(str).unique()))
            raise AlzmriError(f"the predictions have no rows of split {subset!r} (splits present: {have}); pass --subset")
        return rows.reset_index(drop=True), f"split '{subset}'"
    return table.reset_index(drop=True), "all rows (the table has no split column)"


def confusion_metric(classes: list[str], of_counts: Any, name: str) -> WeightedMetric:
    """A metric of the confusion matrix, evaluated for every bootstrap weighting at once.

    ``of_counts(C)`` maps confusion matrices ``C`` of shape ``(r, k, k)`` (true × predicted,
    weighted counts) to ``r`` values.
    """

    def prepare(table: pd.DataFrame) -> Any:
        k = len(classes)
        true = pd.Categorical(table["diagnosis"], categories=classes).codes
        pred = pd.Categorical(table["predicted"], categories=classes).codes
        cell = np.zeros((len(table), k * k))
        cell[np.arange(len(table)), true * k + pred] = 1.0
        return lambda w: of_counts((w @ cell).reshape(-1, k, k))

    return WeightedMetric(prepare, name=name)


def _macro_f1(c: np.ndarray) -> np.ndarray:
    """Macro F1 from confusion matrices; a class never predicted nor present scores 0 (sklearn's zero_division=0)."""
    tp = np.diagonal(c, axis1=1, axis2=2)
    denominator = c.sum(axis=2) + c.sum(axis=1)
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return f1.mean(axis=1)


def _mcc(c: np.ndarray) -> np.ndarray:
    """Matthews' correlation (Gorodkin's multiclass form, as sklearn) from confusion matrices."""
    t, p = c.sum(axis=2), c.sum(axis=1)
    n = c.sum(axis=(1, 2))
    correct = np.trace(c, axis1=1, axis2=2)
    cov_tp = correct * n - (t * p).sum(axis=1)
    cov_pp = n**2 - (p * p).sum(axis=1)
    cov_tt = n**2 - (t * t).sum(axis=1)
    denominator = np.sqrt(cov_tt * cov_pp)
    return np.divide(cov_tp, denominator, out=np.zeros_like(cov_tp), where=denominator > 0)


def _bootstrap_metrics(classes: list[str]) -> dict[str, Any]:
    """Headline metrics as weighted metrics: all bootstrap resamples in a few matrix products."""
    macro_f1 = confusion_metric(classes, _macro_f1, "macro F1")
    mcc = confusion_metric(classes, _mcc, "MCC")
    aucs = {c: auc_metric(c, score_col=f"prob_{c}") for c in classes}

    def prepare_macro_auc(table: pd.DataFrame) -> Any:
        parts = [aucs[c].prepare(table) for c in classes]
        return lambda w: np.mean([part(w) for part in parts], axis=0)

    macro_auc = WeightedMetric(prepare_macro_auc, name="macro AUC")

    return {
        "accuracy": accuracy_metric(),
        "balanced_accuracy": balanced_accuracy_metric(),
        "macro_f1": macro_f1,
        "macro_auc": aucs[classes[1]] if len(classes) == 2 else macro_auc,
        "mcc": mcc,
        "brier": mean_metric("_brier"),
    }


def with_row_brier(table: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """The table plus ``_brier``: each row's sum of squared probability errors (mean = Brier score)."""
    onehot = (table["diagnosis"].to_numpy()[:, None] == np.asarray(classes)[None, :]).astype(float)
    return table.assign(_brier=((probabilities(table, classes) - onehot) ** 2).sum(axis=1))


def _per_class_metrics(classes: list[str]) -> dict[str, Any]:
    """Per-class precision, recall, specificity, F1 and one-vs-rest AUC, keyed ``"<class>/<metric>"``."""

    def of_class(i: int, what: str) -> Any:
        def value(c: np.ndarray) -> np.ndarray:
            tp = c[:, i, i]
            fn, fp = c[:, i, :].sum(axis=1) - tp, c[:, :, i].sum(axis=1) - tp
            tn = c.sum(axis=(1, 2)) - tp - fn - fp
            num, den = {"precision": (tp, tp + fp), "recall": (tp, tp + fn), "specificity": (tn, tn + fp), "f1": (2 * tp, 2 * tp + fp + fn)}[what]
            return np.divide(num, den, out=np.full_like(num, np.nan), where=den > 0)

        return value

    metrics: dict[str, Any] = {}
    for i, c in enumerate(classes):
        for what in ("precision", "recall", "specificity", "f1"):
            metrics[f"{c}/{what}"] = confusion_metric(classes, of_class(i, what), f"{c} {what}")
        metrics[f"{c}/auc"] = auc_metric(c, score_col=f"prob_{c}")
    return metrics


def confidence_intervals(table: pd.DataFrame, classes: list[str], n_resamples: int, level: float, seed: int, per_class: bool = False) -> dict[str, Any]:
    """Subject-resampling bootstrap intervals of the headline metrics (and, optionally, of the per-class ones)."""
    metrics = _bootstrap_metrics(classes) | (_per_class_metrics(classes) if per_class else {})
    return bootstrap_many(metrics, with_row_brier(table, classes), n_resamples=n_resamples, level=level, seed=seed)


def clinical_view(
    table: pd.DataFrame,
    rows: pd.DataFrame,
    classes: list[str],
    *,
    threshold_split: str | None,
    rule: str,
    target_sensitivity: float,
    prevalence: float,
    level: float,
    seed: int,
) -> dict[str, Any]:
    """Binary operating point (chosen on validation subjects) applied to the evaluated subjects."""
    positive = classes[1]
    score = f"prob_{positive}"
    note = ""
    threshold: dict[str, Any]
    source = table[table["split"].astype(str) == threshold_split] if threshold_split and "split" in table.columns else table.iloc[:0]
    source_subjects = subject_level(source, classes) if len(source) else source
    if len(source_subjects) and source_subjects["diagnosis"].nunique() == 2:
        threshold = choose_threshold(source_subjects["diagnosis"] == positive, source_subjects[score], rule=rule, target=target_sensitivity)
        threshold["chosen_on"] = f"split '{threshold_split}' ({len(source_subjects)} subjects, rule {rule})"
    else:
        threshold = {"threshold": 0.5, "chosen_on": "default 0.5"}
        note = f"no validation rows with both classes (split '{threshold_split}'): the threshold is 0.5, not tuned"
    subjects = subject_level(rows, classes)
    truth = (subjects["diagnosis"] == positive).to_numpy()
    called = (subjects[score] >= threshold["threshold"]).to_numpy()
    posteriors = sensitivity_specificity_posteriors(truth, called, level=level)
    tp, fn, tn, fp = (int(posteriors[k]) for k in ("tp", "fn", "tn", "fp"))
    at = predictive_value_posteriors(tp, fn, tn, fp, prevalence, level=level, seed=seed)
    curve = predictive_value_posteriors(tp, fn, tn, fp, PREVALENCE_CURVE, level=level, seed=seed)
    return {
        "positive_class": positive,
        "unit": "subject (probabilities averaged over sessions)",
        "threshold": threshold,
        "note": note,
        "counts": {"tp": tp, "fn": fn, "tn": tn, "fp": fp},
        "sensitivity": posteriors["sensitivity"],
        "specificity": posteriors["specificity"],
        "likelihood_ratios": likelihood_ratio_posteriors(tp, fn, tn, fp, level=level, seed=seed),
        "prevalence": prevalence,
        "ppv": {k: float(v) for k, v in at["ppv"].items()},
        "npv": {k: float(v) for k, v in at["npv"].items()},
        "curve": {
            "prevalence": curve["prevalence"].tolist(),
            "ppv": {k: np.asarray(v).tolist() for k, v in curve["ppv"].items()},
            "npv": {k: np.asarray(v).tolist() for k, v in curve["npv"].items()},
        },
    }


def audit_table(table: pd.DataFrame, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Leakage and balance checks from the table's ``split`` (and ``image_hash``) columns.

    Args:
        table: the whole predictions table (all splits).
        extra: findings from outside the table (``alzmri evaluate`` hashes every cached image
            of the split folder); merged in.
    """
    findings: dict[str, Any] = {"subjects_in_several_splits": [], "images_in_several_splits": [], "seen_by_model": [], "balance": []}
    if "split" in table.columns:
        splits_of = table.groupby("participant_id")["split"].agg(lambda s: sorted(set(map(str, s))))
        findings["subjects_in_several_splits"] = [{"participant_id": p, "splits": s} for p, s in splits_of.items() if len(s) > 1]
        if "image_hash" in table.columns:
            hashed = table[table["image_hash"].astype(str).str.len() > 0]
            spread = hashed.groupby("image_hash")["split"].agg(lambda s: sorted(set(map(str, s))))
            findings["images_in_several_splits"] = [{"image_hash": h, "splits": s} for h, s in spread.items() if len(s) > 1]
        for split, part in table.groupby(table["split"].astype(str), sort=False):
            findings["balance"].append(class_balance(str(split), part))
    else:
        findings["balance"].append(class_balance("all", table))
    for key, value in (extra or {}).items():
        if isinstance(value, list) and key in findings:
            known = {repr(v) for v in findings[key]}
            findings[key] += [v for v in value if repr(v) not in known]
        else:
            findings[key] = value
    findings["leaky"] = bool(findings["subjects_in_several_splits"] or findings["images_in_several_splits"] or findings["seen_by_model"])
    return findings


def class_balance(split: str, part: pd.DataFrame) -> dict[str, Any]:
    """Scans and subjects per diagnosis of one split."""
    subjects = part.groupby("diagnosis")["participant_id"].nunique()
    scans = part["diagnosis"].value_counts()
    return {"split": split, "scans": {str(k): int(v) for k, v in scans.items()}, "subjects": {str(k): int(v) for k, v in subjects.items()}}


def build_report(
    table: pd.DataFrame,
    classes: list[str],
    *,
    subset: str | None = "test",
    threshold_split: str | None = "val",
    threshold_rule: str = "youden",
    target_sensitivity: float = 0.9,
    prevalence: float = 0.1,
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    audit_extra: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything the report shows, as a JSON-able dict (see the module docstring).

    Args:
        table: a validated predictions table (all splits it has).
        classes: class names in probability-column order.
        subset: the split to evaluate (ignored when the table has no ``split`` column).
        threshold_split: the split the binary operating threshold is chosen on.
        threshold_rule: ``"youden"`` or ``"sensitivity"`` (highest threshold reaching
            ``target_sensitivity``).
        target_sensitivity: for ``threshold_rule="sensitivity"``.
        prevalence: prevalence at which PPV and NPV are reported.
        n_resamples: bootstrap resamples (≥ 2,000 for the published intervals).
        level: interval level.
        seed: seed of the bootstrap and the posterior draws.
        audit_extra: leakage findings from outside the table.
        context: free-form provenance (checkpoint, run config) shown in the report.
    """
    rows, described = evaluated_rows(table, subset)
    scan = classification_metrics(rows, classes)
    subjects = subject_level(rows, classes)
    subject = classification_metrics(subjects, classes)
    per_class_subjects = rows.groupby("diagnosis")["participant_id"].nunique()
    small = {c: int(per_class_subjects.get(c, 0)) for c in classes if per_class_subjects.get(c, 0) < MIN_SUBJECTS_PER_CLASS}
    unknown = int((~rows["subject_known"].astype(str).str.lower().isin(("true", "1"))).sum()) if "subject_known" in rows.columns else 0
    report: dict[str, Any] = {
        "evaluated": described,
        "classes": classes,
        "unit": "slice" if "slice_id" in rows.columns else "scan",
        # a --level slice split: said by evaluate, and kept in its predictions table for 'alzmri report'
        "split_level": (context or {}).get("split_level") or ("slice" if "split_level" in table.columns and (table["split_level"].astype(str) == "slice").any() else "subject"),
        "subjects_unknown": unknown,
        "n_scans": int(len(rows)),
        "n_subjects": int(rows["participant_id"].nunique()),
        "scan_level": scan,
        "subject_level": subject,
        "audit": audit_table(table, audit_extra),
        "small_sample": small,
        "context": context or {},
        "not_computed": {},
    }
    skipped = report["not_computed"]
    report["intervals"] = {
        "method": f"{level:.0%} percentile bootstrap over subjects, {n_resamples} resamples",
        "scan_level": attempt(skipped, "scan-level intervals", lambda: confidence_intervals(rows, classes, n_resamples, level, seed, per_class=True), {}),
        "subject_level": attempt(skipped, "subject-level intervals", lambda: confidence_intervals(subjects, classes, n_resamples, level, seed), {}),
    }
    if len(classes) == 2:
        positive = classes[1]
        delong = attempt(skipped, "DeLong AUC interval", lambda: delong_ci(subjects["diagnosis"] == positive, subjects[f"prob_{positive}"], level=level))
        clinical = attempt(skipped, "clinical view (threshold, sensitivity, PPV/NPV)", lambda: clinical_view(
            table, rows, classes, threshold_split=threshold_split, rule=threshold_rule,
            target_sensitivity=target_sensitivity, prevalence=prevalence, level=level, seed=seed,
        ))  # fmt: skip
        report.update({k: v for k, v in (("auc_delong", delong), ("clinical", clinical)) if v is not None})
    return report


def attempt(skipped: dict[str, str], name: str, compute: Callable[[], Any], default: Any = None) -> Any:
    """``compute()``, or ``default`` with the reason recorded in ``skipped[name]`` when the data cannot support it.

    A report with one subject of a class still shows everything else (and says what it left out)
    instead of failing as a whole.
    """
    try:
        return compute()
    except (AlzmriError, ValueError, ZeroDivisionError, np.linalg.LinAlgError) as exc:
        if "no space left on device" in str(exc) or "disk quota exceeded" in str(exc):
            raise  # a full disk is not a property of the data
        skipped[name] = first_line(exc)
        return default


def headline_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Headline metrics at scan and subject level with their intervals (for tables and the console)."""
    out = []
    for name in HEADLINE:
        row: dict[str, Any] = {"metric": name}
        for level in ("scan_level", "subject_level"):
            ci = report["intervals"][level].get(name, {})
            value = report[level].get(name)
            row[level] = (float("nan") if value is None else float(value), ci.get("low"), ci.get("high"))
        out.append(row)
    return out
