"""``alzmri compare A B``: are two models different, on the same subjects?

Two inputs of the same kind:

* **predictions** (a predictions table, a folder holding ``predictions.tsv``, or a run folder
  holding ``eval-test/predictions.tsv``): the rows of ``--subset`` must be the same scans in
  both. Per subject (probabilities averaged over sessions, so repeated sessions are not
  counted as independent evidence): DeLong's test of the AUCs (each class one vs rest; the
  positive class only for two classes), McNemar's test of paired correctness, and a paired
  subject-bootstrap interval of the difference in balanced accuracy.
* **cross-validation folders** (``alzmri cv`` outputs with ``cv_folds.tsv``, same folds):
  the per-fold differences go through the corrected resampled t-test (Nadeau & Bengio 2003)
  and the Bayesian correlated t-test (Benavoli et al. 2017), because fold results share
  training data and a plain paired t-test is overconfident.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alzmri.evaluation.metrics import subject_level
from alzmri.evaluation.predictions import read_predictions
from alzmri.evaluation.stats import (
    WeightedMetric,
    balanced_accuracy_metric,
    bayesian_correlated_ttest,
    bootstrap_ci,
    corrected_resampled_ttest,
    delong_test,
    mcnemar_test,
)
from alzmri.utils.errors import AlzmriError

CV_METRICS = ("accuracy", "balanced_accuracy", "macro_auc")


def predictions_path(path: Path) -> Path:
    """The predictions table behind ``path`` (a file, an eval folder or a run folder)."""
    path = Path(path)
    for candidate in (path, path / "predictions.tsv", path / "eval-test" / "predictions.tsv"):
        if candidate.is_file():
            return candidate
    raise AlzmriError(f"{path} is neither a predictions table nor a folder with predictions.tsv or eval-test/predictions.tsv")


def _paired_tables(a: Path, b: Path, subset: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    tables = []
    classes: list[str] | None = None
    for path in (a, b):
        table, found = read_predictions(predictions_path(path))
        if "split" in table.columns:
            table = table[table["split"].astype(str) == subset]
            if table.empty:
                raise AlzmriError(f"{path} has no rows of split {subset!r}")
        if classes is not None and found != classes:
            raise AlzmriError(f"the two tables have different classes: {classes} vs {found}")
        classes = found
        tables.append(table.set_index(["participant_id", "session_id"]).sort_index())
    keys_a, keys_b = set(tables[0].index), set(tables[1].index)
    if keys_a != keys_b:
        raise AlzmriError(
            f"the two tables do not hold the same scans ({len(keys_a - keys_b)} only in A, {len(keys_b - keys_a)} only in B); "
            "compare models evaluated on the same subjects"
        )
    if not tables[0]["diagnosis"].equals(tables[1].loc[tables[0].index, "diagnosis"]):
        raise AlzmriError("the two tables give different true diagnoses for the same scans")
    assert classes is not None
    return tables[0].reset_index(), tables[1].loc[tables[0].index].reset_index(), classes


def _difference(metric_a: WeightedMetric, metric_b: WeightedMetric) -> WeightedMetric:
    def prepare(table: pd.DataFrame) -> Any:
        fa, fb = metric_a.prepare(table), metric_b.prepare(table)
        return lambda w: fa(w) - fb(w)

    return WeightedMetric(prepare, name=f"{metric_a.name} − {metric_b.name}")


def compare_predictions(a: Path, b: Path, subset: str = "test", n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Paired tests of two models' predictions on the same subjects (see the module docstring)."""
    table_a, table_b, classes = _paired_tables(a, b, subset)
    subjects_a, subjects_b = subject_level(table_a, classes), subject_level(table_b, classes)
    truth = subjects_a["diagnosis"].to_numpy()
    shown = classes[1:] if len(classes) == 2 else classes
    delong = {c: delong_test(truth == c, subjects_a[f"prob_{c}"], subjects_b[f"prob_{c}"]) for c in shown}
    correct_a = (subjects_a["predicted"] == subjects_a["diagnosis"]).to_numpy()
    correct_b = (subjects_b["predicted"] == subjects_b["diagnosis"]).to_numpy()
    paired = subjects_a[["participant_id", "diagnosis"]].assign(pred_a=subjects_a["predicted"].values, pred_b=subjects_b["predicted"].values)
    bacc_diff = bootstrap_ci(
        _difference(balanced_accuracy_metric(pred_col="pred_a"), balanced_accuracy_metric(pred_col="pred_b")),
        paired, n_resamples=n_resamples, seed=seed,
    )  # fmt: skip
    return {
        "kind": "predictions",
        "a": str(a),
        "b": str(b),
        "subset": subset,
        "unit": "subject (probabilities averaged over sessions)",
        "n_subjects": int(len(subjects_a)),
        "classes": classes,
        "accuracy": {"a": float(correct_a.mean()), "b": float(correct_b.mean())},
        "balanced_accuracy_difference": bacc_diff,
        "delong": delong,
        "mcnemar": mcnemar_test(correct_a, correct_b),
    }


def compare_cv(a: Path, b: Path) -> dict[str, Any]:
    """Corrected resampled and Bayesian correlated t-tests on the per-fold metrics of two cv folders."""
    folds = []
    for path in (a, b):
        file = Path(path) / "cv_folds.tsv"
        if not file.is_file():
            raise AlzmriError(f"{path} is not an 'alzmri cv' folder (no cv_folds.tsv)")
        folds.append(pd.read_csv(file, sep="\t").set_index("fold").sort_index())
    if list(folds[0].index) != list(folds[1].index) or not folds[0]["n_subjects"].equals(folds[1]["n_subjects"]):
        raise AlzmriError("the two cross-validations do not have the same folds; run both with the same --split or --seed and --folds")
    k = len(folds[0])
    n_test = float(folds[0]["n_scans"].mean())
    n_train = float(folds[0]["n_scans"].sum() - 2 * n_test)  # every fold but its test and its validation fold
    out: dict[str, Any] = {"kind": "cv", "a": str(a), "b": str(b), "folds": k, "n_train": n_train, "n_test": n_test, "metrics": {}}
    for metric in CV_METRICS:
        diffs = (folds[0][metric] - folds[1][metric]).to_numpy(dtype=float)
        if not np.isfinite(diffs).all():
            continue
        out["metrics"][metric] = {
            "a_mean": float(folds[0][metric].mean()),
            "b_mean": float(folds[1][metric].mean()),
            "corrected_t": corrected_resampled_ttest(diffs, n_train, n_test),
            "bayesian": bayesian_correlated_ttest(diffs, n_train, n_test),
        }
    return out


def compare(a: Path, b: Path, subset: str = "test", n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Dispatch on the inputs: two cv folders, or two predictions tables."""
    is_cv = [(Path(p) / "cv_folds.tsv").is_file() for p in (a, b)]
    if all(is_cv):
        return compare_cv(a, b)
    if any(is_cv):
        raise AlzmriError("compare two cross-validation folders, or two predictions tables, not one of each")
    return compare_predictions(a, b, subset, n_resamples, seed)
