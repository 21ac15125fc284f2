"""Classification metrics computed from a predictions table only.

Every metric is scikit-learn's (or, for the expected calibration error, a direct
implementation of its textbook definition) applied to the table's ``diagnosis``,
``predicted`` and ``prob_<class>`` columns. Subject-level metrics come from the same table
with the probabilities of each subject's sessions averaged (:func:`subject_level`).
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import pandas as pd
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_recall_fscore_support,
    roc_auc_score,
)

from alzmri.evaluation.stats.calibration import brier_score, expected_calibration_error
from alzmri.utils.errors import AlzmriError

ECE_BINS = 10


def probabilities(predictions: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """The ``prob_<class>`` columns as an array."""
    return predictions[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)


def classification_metrics(predictions: pd.DataFrame, classes: list[str]) -> dict[str, Any]:
    """Every classification metric of a predictions table, as a JSON-ready dict.

    Keys:
        n_scans, n_subjects, classes, class_counts (true labels per class);
        accuracy, balanced_accuracy, macro_f1, weighted_f1, mcc (Matthews), cohen_kappa;
        auc ({class: one-vs-rest ROC AUC}), macro_auc (mean of the defined ones),
        micro_auc (ROC AUC of the flattened one-hot labels vs probabilities);
        macro_pr_auc (mean of the defined per-class average precisions);
        per_class ({class: {precision, recall, specificity, f1, support, auc, pr_auc}}), where
        recall is the sensitivity and pr_auc the average precision (one-vs-rest);
        brier: multiclass Brier score, mean over scans of the sum over classes of
        (probability - one-hot label)^2, in [0, 2]. For two classes this is twice the
        customary binary Brier score (sklearn ``brier_score_loss`` with ``scale_by_half=False``);
        ece: top-label expected calibration error with ``ECE_BINS`` equal-width confidence bins
        (confidence = highest probability, correct = its class is the true label);
        confusion_matrix: rows true, columns predicted, in ``classes`` order.
        With two classes also positive_class (the second class, e.g. AD in [CN, AD]) and the
        binary sensitivity (recall of the positive class) and specificity (recall of the other),
        ``nan`` when the table has no positive (resp. negative) scan.

    A metric that is undefined on the table (e.g. the AUC of a class with no positive or no
    negative scan, the average precision of a class with no positive) is ``nan``; macro means
    skip those.

    Args:
        predictions: table with ``participant_id``, ``diagnosis``, ``prob_<class>`` and
            (optionally; else the arg-max) ``predicted`` columns.
        classes: class names, in logit order.
    """
    if predictions.empty:
        raise AlzmriError("no predictions to evaluate (empty split?)")
    y_true = predictions["diagnosis"].astype(str).to_numpy()
    probs = probabilities(predictions, classes)
    if "predicted" in predictions:
        y_pred = predictions["predicted"].astype(str).to_numpy()
    else:
        y_pred = np.asarray(classes, dtype=object)[probs.argmax(axis=1)].astype(str)
    onehot = (y_true[:, None] == np.asarray(classes)[None, :]).astype(int)
    cm = confusion_matrix(y_true, y_pred, labels=classes)

    with warnings.catch_warnings():
        # Undefined cases (a class absent from the table) are reported as nan or 0 below.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)  # "a single label was found", etc.
        precision, recall, f1, support = precision_recall_fscore_support(
            y_true, y_pred, labels=classes, zero_division=0
        )
        auc: dict[str, float] = {}
        pr_auc: dict[str, float] = {}
        for i, c in enumerate(classes):
            positive = onehot[:, i]
            n_pos = int(positive.sum())
            auc[c] = float(roc_auc_score(positive, probs[:, i])) if 0 < n_pos < len(positive) else float("nan")
            pr_auc[c] = float(average_precision_score(positive, probs[:, i])) if n_pos > 0 else float("nan")
        micro_auc = _safe(lambda: roc_auc_score(onehot, probs, average="micro"))
        mcc = _safe(lambda: matthews_corrcoef(y_true, y_pred))
        kappa = _safe(lambda: cohen_kappa_score(y_true, y_pred, labels=classes))

    per_class: dict[str, dict[str, float | int]] = {}
    for i, c in enumerate(classes):
        negatives = cm.sum() - cm[i, :].sum()
        true_negatives = negatives - (cm[:, i].sum() - cm[i, i])
        per_class[c] = {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "specificity": float(true_negatives / negatives) if negatives else float("nan"),
            "f1": float(f1[i]),
            "support": int(support[i]),
            "auc": auc[c],
            "pr_auc": pr_auc[c],
        }

    metrics: dict[str, Any] = {
        "n_scans": int(len(predictions)),
        "n_subjects": int(predictions["participant_id"].nunique()),
        "classes": list(classes),
        "class_counts": {c: int(onehot[:, i].sum()) for i, c in enumerate(classes)},
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=classes, average="weighted", zero_division=0)),
        "mcc": mcc,
        "cohen_kappa": kappa,
        "auc": auc,
        "macro_auc": _nanmean(auc.values()),
        "micro_auc": micro_auc,
        "macro_pr_auc": _nanmean(pr_auc.values()),
        "brier": brier_score(onehot.argmax(axis=1), probs, scale_by_half=False),
        "ece": expected_calibration_error(onehot.argmax(axis=1), probs, n_bins=ECE_BINS),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
    }
    if len(classes) == 2:
        metrics["positive_class"] = classes[1]
        positives = per_class[classes[1]]["support"]
        metrics["sensitivity"] = per_class[classes[1]]["recall"] if positives else float("nan")
        metrics["specificity"] = per_class[classes[1]]["specificity"]
    return metrics


def subject_level(predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """One row per subject: the mean of the probabilities of the subject's sessions.

    Columns: ``participant_id``, ``session_id`` (``""``), ``diagnosis``, ``n_sessions``,
    ``prob_<class>`` (the means), ``predicted`` (their arg-max) and, when the table has one,
    ``split``. Subjects keep the order of their first row.

    The subject's label is the diagnosis of its **last** session, ordering ``session_id``
    naturally (digit runs compare as numbers, so ``ses-M6`` < ``ses-M12``; zero-padded labels
    sort as plain strings do). A subject's sessions may legitimately carry different labels
    (CN -> MCI -> AD progression); the latest one is the subject's most advanced, current
    state. Its probabilities are still those of every session averaged.

    Raises:
        AlzmriError: the table is empty, or a subject has sessions in more than one split
            (filter the table to one split first).
    """
    if predictions.empty:
        raise AlzmriError("no predictions to aggregate per subject (empty split?)")
    prob_cols = [f"prob_{c}" for c in classes]
    table = predictions.copy()
    table["participant_id"] = table["participant_id"].astype(str)
    table["session_id"] = table["session_id"].fillna("").astype(str) if "session_id" in table else ""
    has_split = "split" in table
    if has_split:
        splits = table.groupby("participant_id", sort=False)["split"].nunique()
        mixed = splits[splits > 1]
        if len(mixed):
            pid = mixed.index[0]
            found = sorted(table.loc[table["participant_id"] == pid, "split"].astype(str).unique())
            raise AlzmriError(
                f"subject {pid} has sessions in splits {', '.join(found)}; "
                "filter the predictions to one split before aggregating per subject"
            )
    keys = table["session_id"].map(_natural_key).tolist()
    rows = []
    groups = sorted(table.groupby("participant_id").indices.items(), key=lambda kv: kv[1][0])
    for pid, positions in groups:
        group = table.iloc[positions]
        last = group.iloc[max(range(len(positions)), key=lambda j: (keys[positions[j]], positions[j]))]
        row: dict[str, Any] = {"participant_id": pid, "session_id": "", "diagnosis": last["diagnosis"],
                               "n_sessions": int(len(group))}
        mean = group[prob_cols].to_numpy(dtype=float).mean(axis=0)
        row.update(dict(zip(prob_cols, mean)))
        row["predicted"] = classes[int(mean.argmax())]
        if has_split:
            row["split"] = last["split"]
        rows.append(row)
    return pd.DataFrame(rows)


def scan_and_subject_metrics(predictions: pd.DataFrame, classes: list[str]) -> dict[str, dict[str, Any]]:
    """:func:`classification_metrics` of the scans and of :func:`subject_level`, side by side.

    Returns ``{"scan": {...}, "subject": {...}}``; in ``"subject"``, ``n_scans`` counts subjects.
    """
    return {
        "scan": classification_metrics(predictions, classes),
        "subject": classification_metrics(subject_level(predictions, classes), classes),
    }


def _safe(compute: Any) -> float:
    """A sklearn metric as a float, ``nan`` where sklearn finds it undefined."""
    try:
        return float(compute())
    except ValueError:
        return float("nan")


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "y_pred contains classes not in y_true"
        return float(balanced_accuracy_score(y_true, y_pred))


def _nanmean(values: Any) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _natural_key(session_id: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key comparing digit runs as numbers: ses-M6 < ses-M12 < ses-M100."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", session_id) if part)
