"""Classification metrics computed from a predictions table only."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, roc_auc_score

from alzmri.utils.errors import AlzmriError


def probabilities(predictions: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """The ``prob_<class>`` columns as an array."""
    return predictions[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)


def classification_metrics(predictions: pd.DataFrame, classes: list[str]) -> dict[str, Any]:
    """Accuracy, balanced accuracy, macro-F1, one-vs-rest AUCs and the confusion matrix.

    AUC of a class is ``nan`` when the table has no positive or no negative scan of it.

    Args:
        predictions: table with ``diagnosis``, ``predicted`` and ``prob_<class>`` columns.
        classes: class names, in logit order.
    """
    if predictions.empty:
        raise AlzmriError("no predictions to evaluate (empty split?)")
    y_true = predictions["diagnosis"].to_numpy()
    y_pred = predictions["predicted"].to_numpy()
    probs = probabilities(predictions, classes)
    auc: dict[str, float] = {}
    for i, c in enumerate(classes):
        positive = y_true == c
        auc[c] = float(roc_auc_score(positive, probs[:, i])) if 0 < positive.sum() < len(positive) else float("nan")
    finite = [v for v in auc.values() if np.isfinite(v)]
    return {
        "n_scans": int(len(predictions)),
        "n_subjects": int(predictions["participant_id"].nunique()),
        "classes": classes,
        "class_counts": {c: int((y_true == c).sum()) for c in classes},
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "auc": auc,
        "macro_auc": float(np.mean(finite)) if finite else float("nan"),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist(),
    }
