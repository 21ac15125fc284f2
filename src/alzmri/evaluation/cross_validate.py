"""``alzmri cv``: subject-level stratified group k-fold, one run per fold, mean ± sd over folds.

Layout of the output folder::

    folds/fold-<k>/{train,val,test}.tsv   the splits (made from the cache unless given)
    fold-<k>/                             the run of fold k (resumable, like 'alzmri train')
    fold-<k>/eval-test/                   its held-out predictions and metrics
    cv_folds.tsv, cv_summary.json         per-fold metrics, mean and standard deviation

With ``--model pca_logreg`` or ``linear_svm`` each fold's run is the linear baseline of
``alzmri baseline`` (its hyper-parameters chosen on that fold's training subjects only), in
the same layout, so ``alzmri compare CV_CNN CV_BASELINE`` pairs the folds.

``--freeze-encoder`` may name each fold's own checkpoint with ``{fold}``
(``cv-mri/fold-{fold}/checkpoints/best-loss.ckpt``): an encoder trained on another fold's test
subjects would leak (``evaluate`` refuses it: its scans count as seen).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alzmri.evaluation.config import BaselineConfig, CrossValidateConfig, EvaluateConfig
from alzmri.evaluation.stats import kfold_summary
from alzmri.io.manifest import write_manifest
from alzmri.training.config import LINEAR_BASELINES, TrainConfig
from alzmri.utils.atomic import atomic_write_text
from alzmri.utils.errors import AlzmriError
from alzmri.utils.names import folder_name

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc")


def make_folds(config: CrossValidateConfig) -> Path:
    """The folder of fold splits: the given one, or folds made from the cache's labelled scans."""
    from alzmri.data.splits import diagnosis_change_warning, missing_class_warnings, stratified_group_kfold, write_kfold
    from alzmri.preprocessing.cache import read_cache

    if config.split is not None:
        return Path(config.split)
    scans, _ = read_cache(config.cache)
    scans = scans[scans["diagnosis"].fillna("") != ""]
    if config.classes:
        scans = scans[scans["diagnosis"].isin(config.classes)]
    changed = diagnosis_change_warning(scans)
    folds = stratified_group_kfold(scans, n_folds=config.folds, seed=config.seed)
    for message in [changed, *missing_class_warnings({f"fold {k} {name}": df for k, fold in enumerate(folds) for name, df in fold.items()})]:
        if message:
            print(f"warning: {message}")
    # The folds depend only on the scans and the seed, so re-running rewrites identical files.
    return write_kfold(folds, Path(config.out) / "folds")


def fold_metrics(config: CrossValidateConfig, fold_dir: Path, run_name: str) -> dict[str, Any]:
    """Train and evaluate one fold (or fit its linear baseline); the held-out metrics of ``evaluate``."""
    if config.model in LINEAR_BASELINES:
        from alzmri.evaluation.baseline import baseline

        fields = {"model", "classes", "class_weights", "seed"}
        result = baseline(BaselineConfig(**config.model_dump(include=fields), **config.baseline_options(), cache=config.cache, split=fold_dir, out=config.out, run_name=run_name))
        best = result["search"]["best_params"]
        print(f"{config.model}: components {best['components']}, C {best['C']:g} (inner-CV {result['search']['scoring']} {result['search']['inner_cv_score']:.3f})")
        return result
    from alzmri.evaluation.evaluate import evaluate
    from alzmri.training.fit import fit

    train_fields = set(TrainConfig.model_fields) - {"split", "out", "run_name", "resume"}
    fields = config.model_dump(include=train_fields)
    if fields.get("freeze_encoder") is not None:  # 'cv-mri/fold-{fold}/checkpoints/best-loss.ckpt': each fold's own encoder
        fields["freeze_encoder"] = Path(str(fields["freeze_encoder"]).replace("{fold}", fold_dir.name.removeprefix("fold-")))
    run_dir = fit(TrainConfig(**fields, split=fold_dir, out=config.out, run_name=run_name))
    return evaluate(EvaluateConfig(checkpoint=run_dir / "checkpoints" / "best-loss.ckpt", cache=config.cache, split=fold_dir))


def cross_validate(config: CrossValidateConfig) -> dict[str, Any]:
    """Train and evaluate every fold; return and write the per-fold table and its summary."""
    if config.run_name:
        folder_name(config.run_name, "--run-name")  # refused before any fold is made
    out = Path(config.out)
    split_root = make_folds(config)
    fold_dirs = sorted((p for p in split_root.glob("fold-*") if p.is_dir()), key=lambda p: int(p.name.removeprefix("fold-")))
    if len(fold_dirs) < 3:
        raise AlzmriError(f"{split_root} holds {len(fold_dirs)} fold folders; cross-validation needs at least 3")
    rows = []
    for fold_dir in fold_dirs:
        k = int(fold_dir.name.removeprefix("fold-"))
        print(f"── fold {k} of {len(fold_dirs)} " + "─" * 40)
        metrics = fold_metrics(config, fold_dir, f"{config.run_name or 'fold'}-{k}")
        rows.append({"fold": k, "n_scans": metrics["n_scans"], "n_subjects": metrics["n_subjects"], **{m: metrics[m] for m in METRICS}})
    table = pd.DataFrame(rows)
    summary = {m: _summary(table[m]) for m in METRICS}
    write_manifest(table, out / "cv_folds.tsv")
    result = {"folds": len(rows), "metrics": summary, "per_fold": rows, "split": str(split_root)}
    atomic_write_text(out / "cv_summary.json", json.dumps(result, indent=2) + "\n")
    print(format_cv(table, summary))
    return result


def format_cv(table: pd.DataFrame, summary: dict[str, dict[str, float]]) -> str:
    """Per-fold metrics and mean ± sd as a text table."""
    names = {"accuracy": "accuracy", "balanced_accuracy": "bal. acc.", "macro_f1": "macro F1", "macro_auc": "macro AUC"}
    lines = ["fold  test scans/subjects  " + "  ".join(f"{names[m]:>10s}" for m in METRICS)]
    for row in table.to_dict("records"):
        lines.append(f"{row['fold']:>4d}  {row['n_scans']:>10d}/{row['n_subjects']:<8d}  " + "  ".join(f"{row[m]:>10.3f}" for m in METRICS))
    lines.append("mean ± sd" + " " * 16 + "  ".join(f"{summary[m]['mean']:.3f}±{summary[m]['sd']:.3f}".rjust(10) for m in METRICS))
    lines.append("95 % t-interval" + " " * 10 + "  ".join(f"{summary[m]['low']:.2f}–{summary[m]['high']:.2f}".rjust(10) for m in METRICS))
    lines.append("(folds share training data, so the interval is optimistic; compare models with 'alzmri compare CV_A CV_B')")
    return "\n".join(lines)


def _summary(values: pd.Series) -> dict[str, float]:
    """Mean ± sd over folds and a t-interval of the mean (NaN folds left out)."""
    finite = values.dropna().to_numpy(dtype=float)
    if len(finite) < 2:
        return {"mean": float(np.mean(finite)) if len(finite) else float("nan"), "sd": float("nan"), "low": float("nan"), "high": float("nan"), "n": len(finite)}
    return dict(kfold_summary(finite))
