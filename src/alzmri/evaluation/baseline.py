"""``alzmri baseline``: a linear model on brain voxels, evaluated exactly like a network.

A CNN number means little without the number of a simple model on the same subjects beside
it: on real data a PCA + logistic-regression model on brain voxels fitted in about a minute
and was level with the CNN (balanced accuracy 0.869, AUC 0.939), as Wen et al. (MedIA 2020)
found for linear SVMs on voxels. This module fits that baseline on a cache + split and writes
a folder that ``alzmri compare`` treats like a CNN run.

* **Features**: the brain voxels of each cached array, optionally average-pooled by
  ``--downsample``. A voxel is a brain voxel when it is brain in at least ``--mask-fraction``
  of the *training* scans (val and test scans never shape the mask). A scan's brain is its
  manifest ``mask`` file when the cache has one, else the voxels that differ from the scan's
  background plateau (``preprocessing.brain_mask``, as ``explain`` does).
* **Models**: scikit-learn ``Pipeline(StandardScaler, PCA, classifier)`` with a
  ``LogisticRegression`` (``pca_logreg``) or a ``LinearSVC`` (``linear_svm``). The SVM's
  probabilities are the softmax of its decision values (the sigmoid for two classes): they
  rank scans exactly as the SVM does, so AUCs, DeLong tests and the threshold chosen on val
  are those of the SVM, but they are not calibrated (the report's calibration figure shows
  it). Platt scaling (``CalibratedClassifierCV``) was left out: its internal folds ignore
  subjects, and it would make the stored model a list of models.
* **Hyper-parameters**: the PCA size (``--components``) and ``C`` (``--c-values``) are
  chosen by ``GridSearchCV`` over subject-level ``StratifiedGroupKFold`` folds of the
  training scans only (groups = participant_id), scored by ``--scoring``: balanced accuracy
  (the headline metric; ties go to the first candidate in grid order, i.e. the smallest C,
  then the fewest components) or the negative log loss (smoother, uses the probabilities).
  The best candidate is refitted on all training scans. The val scans are only predicted:
  the report chooses its binary threshold on them, as for a network.
* **Classes** are data, picked as ``alzmri train`` picks them: ``--classes``, or the
  diagnoses of the training split in CN, MCI, AD order. Any number of classes works.

Run folder (``OUT/RUN_NAME``, default ``<model>-<hash of settings, cache and split>``)::

    config.json       resolved BaselineConfig, classes, preprocessing config, data counts
    search.tsv        the inner search: one row per candidate, its score per fold, mean and sd
    search.json       the chosen hyper-parameters, their inner-CV score, the inner folds
    model.npz         the fitted model as plain arrays (see :class:`LinearBaseline`; loaded
                      with ``allow_pickle=False``, so nothing is ever unpickled)
    eval-SUBSET/      predictions.tsv, report.html, metrics.json, figures: what 'alzmri evaluate' writes
    result.json       written last: metrics and search (its presence = finished)

Every file is written atomically; re-running the same command reports the finished result,
and a run stopped after ``model.npz`` was written only redoes the evaluation.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import softmax
from sklearn.svm import LinearSVC

from alzmri.data.audit import assert_no_leakage
from alzmri.data.dataset import select_scans
from alzmri.data.splits import read_split_dir
from alzmri.evaluation.config import BaselineConfig
from alzmri.io.manifest import DIAGNOSES, write_manifest
from alzmri.preprocessing.brain_mask import estimate_brain_mask
from alzmri.preprocessing.cache import load_array, read_cache
from alzmri.utils.atomic import atomic_path, atomic_write_text
from alzmri.utils.errors import AlzmriError
from alzmri.utils.hashing import content_digest
from alzmri.utils.names import folder_name
from alzmri.utils.run_folder import claim_run_dir

# Settings that do not change the result (a run may be re-run with other values).
_NOT_HASHED = {"out", "run_name", "jobs"}
_PREDICT_BATCH = 32  # scans read at a time when predicting


class SoftmaxLinearSVC(LinearSVC):
    """``LinearSVC`` whose ``predict_proba`` is the softmax of its decision values.

    For two classes that is the sigmoid of the decision value. Monotone in the decision
    values, so every ranking metric is the SVM's; not calibrated (see the module docstring).
    """

    def predict_proba(self, X: Any) -> np.ndarray:
        return scores_to_proba(self.decision_function(X))


def scores_to_proba(scores: np.ndarray) -> np.ndarray:
    """Class probabilities from linear scores: softmax, with ``[0, z]`` for one binary score ``z``.

    This is exactly scikit-learn's ``LogisticRegression.predict_proba`` (sigmoid for two
    classes, multinomial softmax for more).
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1 or scores.shape[1] == 1:
        scores = np.column_stack([np.zeros(len(scores)), scores.reshape(len(scores))])
    return softmax(scores, axis=1)


def pool(volume: np.ndarray, factor: int) -> np.ndarray:
    """Average-pool a 3D volume by ``factor`` (the edges that do not fill a block are dropped)."""
    if factor == 1:
        return np.asarray(volume, dtype=np.float32)
    d, h, w = (s // factor for s in volume.shape)
    blocks = np.asarray(volume[: d * factor, : h * factor, : w * factor], dtype=np.float32)
    return blocks.reshape(d, factor, h, factor, w, factor).mean(axis=(1, 3, 5))


def scan_foreground(row: pd.Series) -> np.ndarray:
    """One scan's brain voxels (full resolution): its ``mask`` file if the cache has one, else
    :func:`alzmri.preprocessing.brain_mask.estimate_brain_mask` (the rule ``explain`` uses)."""
    mask_path = row.get("mask")
    if isinstance(mask_path, str) and mask_path and Path(mask_path).is_file():  # a listed mask may be gone: estimate then
        mask = _read_mask(Path(mask_path))
        if mask.shape != load_array(row["array"]).shape:
            raise AlzmriError(f"brain mask {mask_path} has shape {mask.shape}, its array {row['array']} {load_array(row['array']).shape}")
        return mask > 0
    return estimate_brain_mask(np.asarray(load_array(row["array"]), dtype=np.float32))


def _read_mask(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.asarray(load_array(path))
    if path.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        return np.asarray(nib.load(str(path)).dataobj)
    raise AlzmriError(f"cannot read brain mask {path}: expected a .npy or NIfTI file")


def brain_mask(scans: pd.DataFrame, downsample: int, fraction: float) -> np.ndarray:
    """Voxels (after pooling) that are brain in at least ``fraction`` of ``scans``: call it with training scans only.

    A pooled voxel is brain in a scan when any voxel of its block is.
    """
    counts: np.ndarray | None = None
    for _, row in scans.iterrows():
        brain = pool(scan_foreground(row), downsample) > 0
        if counts is not None and brain.shape != counts.shape:
            raise AlzmriError(f"cached arrays differ in shape ({row['array']}); re-run preprocess into one cache")
        counts = brain.astype(np.int32) if counts is None else counts + brain
    if counts is None:
        raise AlzmriError("no training scans to take the brain mask from")
    mask = counts >= fraction * len(scans)
    if not mask.any():
        raise AlzmriError("no voxel is brain in the training scans (are the cached arrays constant?)")
    return mask


def voxel_features(scans: pd.DataFrame, mask: np.ndarray, downsample: int) -> np.ndarray:
    """``(n_scans, n_brain_voxels)`` float32: each scan pooled, then its voxels inside ``mask``."""
    features = np.empty((len(scans), int(mask.sum())), dtype=np.float32)
    for i, path in enumerate(scans["array"]):
        volume = pool(load_array(path), downsample)
        if volume.shape != mask.shape:
            raise AlzmriError(f"cached array {path} pools to {volume.shape}, the brain mask is {mask.shape}; re-run preprocess into one cache")
        features[i] = volume[mask]
        if not np.isfinite(features[i]).all():
            raise AlzmriError(f"cached array {path} has NaN or infinite brain voxels; re-run preprocess for it")
    return features


@dataclass(frozen=True)
class LinearBaseline:
    """A fitted baseline as plain arrays: enough to predict, nothing pickled.

    ``probabilities = scores_to_proba(((x - scaler_mean) / scaler_scale - pca_mean) @ pca_components.T @ coef.T + intercept)``
    where ``x`` are a scan's brain voxels (``mask`` of the scan pooled by ``downsample``).
    """

    model: str
    classes: tuple[str, ...]
    downsample: int
    mask: np.ndarray
    scaler_mean: np.ndarray
    scaler_scale: np.ndarray
    pca_mean: np.ndarray
    pca_components: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    @classmethod
    def from_pipeline(cls, pipeline: Any, model: str, classes: list[str], downsample: int, mask: np.ndarray) -> LinearBaseline:
        """The arrays of a fitted ``Pipeline(StandardScaler, PCA, linear classifier)``."""
        scaler, pca, clf = (pipeline.named_steps[k] for k in ("scale", "pca", "clf"))
        return cls(model, tuple(classes), downsample, mask, scaler.mean_, scaler.scale_, pca.mean_, pca.components_, np.atleast_2d(clf.coef_), np.atleast_1d(clf.intercept_))

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """``(n, n_classes)`` probabilities of ``voxel_features`` rows."""
        reduced = ((features - self.scaler_mean) / self.scaler_scale - self.pca_mean) @ self.pca_components.T
        return scores_to_proba(reduced @ self.coef.T + self.intercept)

    def predict_scans(self, scans: pd.DataFrame) -> np.ndarray:
        """Probabilities of cache-manifest rows, read a batch at a time."""
        parts = [self.predict_proba(voxel_features(scans.iloc[i : i + _PREDICT_BATCH], self.mask, self.downsample)) for i in range(0, len(scans), _PREDICT_BATCH)]
        return np.concatenate(parts)

    def save(self, path: Path) -> None:
        """Write ``model.npz`` atomically."""
        arrays = {k: getattr(self, k) for k in ("mask", "scaler_mean", "scaler_scale", "pca_mean", "pca_components", "coef", "intercept")}
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, model=np.array(self.model), classes=np.array(self.classes), downsample=np.array(self.downsample), **arrays)

    @classmethod
    def load(cls, path: Path) -> LinearBaseline:
        """Read ``model.npz`` (plain arrays only: ``allow_pickle=False``)."""
        with np.load(path, allow_pickle=False) as npz:
            return cls(
                model=str(npz["model"]), classes=tuple(str(c) for c in npz["classes"]), downsample=int(npz["downsample"]),
                **{k: npz[k] for k in ("mask", "scaler_mean", "scaler_scale", "pca_mean", "pca_components", "coef", "intercept")},
            )  # fmt: skip


def make_pipeline(model: str, class_weights: bool, seed: int) -> Any:
    """The unfitted scikit-learn pipeline of a baseline (PCA size and C are set by the search)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    weight = "balanced" if class_weights else None
    if model == "pca_logreg":
        clf: Any = LogisticRegression(class_weight=weight, max_iter=5000, random_state=seed)
    elif model == "linear_svm":
        clf = SoftmaxLinearSVC(class_weight=weight, max_iter=20000, random_state=seed)
    else:
        raise AlzmriError(f"unknown baseline {model!r}; baselines: pca_logreg, linear_svm")
    return Pipeline([("scale", StandardScaler()), ("pca", PCA(svd_solver="full", random_state=seed)), ("clf", clf)])


def inner_folds(train: pd.DataFrame, y: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Subject-level stratified folds of the training scans (as many as the rarest class has subjects, at most ``n_folds``).

    Raises:
        AlzmriError: a class has fewer than two training subjects, or a fold would train without a class.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    subjects = train.groupby("diagnosis")["participant_id"].nunique()
    k = min(n_folds, int(subjects.min()))
    if k < 2:
        raise AlzmriError(f"the training split has {int(subjects.min())} subject of class {subjects.idxmin()}; the inner search needs at least 2 per class")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = list(splitter.split(np.zeros(len(y)), y, groups=train["participant_id"].to_numpy()))
    for fit_rows, _ in folds:
        if len(np.unique(y[fit_rows])) < len(np.unique(y)):
            raise AlzmriError(f"an inner fold of the {len(train)} training scans lacks a class; use fewer --inner-folds")
    return folds


def _param_grid(config: BaselineConfig, folds: list[tuple[np.ndarray, np.ndarray]], n_features: int) -> dict[str, list[Any]]:
    components = sorted({int(v) if v >= 1 else float(v) for v in config.components})
    largest = min(min(len(fit_rows) for fit_rows, _ in folds), n_features)
    too_many = [c for c in components if isinstance(c, int) and c > largest]
    if too_many:
        raise AlzmriError(f"--components {too_many[0]}: the inner folds fit on as few as {largest} scans; give at most {largest} components or a fraction of the variance")
    return {"clf__C": sorted(set(config.c_values)), "pca__n_components": components}


def fit_baseline(config: BaselineConfig, train: pd.DataFrame, classes: list[str], run_dir: Path) -> tuple[LinearBaseline, dict[str, Any]]:
    """Mask, features, inner search and refit on the training scans only; writes search.tsv, search.json, model.npz."""
    from sklearn.model_selection import GridSearchCV

    y = np.array([classes.index(d) for d in train["diagnosis"]])
    groups = train["participant_id"].to_numpy()
    mask = brain_mask(train, config.downsample, config.mask_fraction)
    features = voxel_features(train, mask, config.downsample)
    folds = inner_folds(train, y, config.inner_folds, config.seed)
    search = GridSearchCV(
        make_pipeline(config.model, config.class_weights, config.seed), _param_grid(config, folds, features.shape[1]),
        scoring=config.scoring, cv=folds, refit=True, n_jobs=config.jobs, error_score="raise",
    )  # fmt: skip
    search.fit(features, y, groups=groups)
    model = LinearBaseline.from_pipeline(search.best_estimator_, config.model, classes, config.downsample, mask)

    results = pd.DataFrame(search.cv_results_)
    table = pd.DataFrame({"components": results["param_pca__n_components"], "C": results["param_clf__C"]})
    for i in range(len(folds)):
        table[f"fold{i}_score"] = results[f"split{i}_test_score"].round(6)
    table["mean_score"] = results["mean_test_score"].round(6)
    table["sd_score"] = results["std_test_score"].round(6)
    table["rank"] = results["rank_test_score"]
    write_manifest(table, run_dir / "search.tsv")
    pca = search.best_estimator_.named_steps["pca"]
    summary = {
        "scoring": config.scoring,
        "best_params": {"components": search.best_params_["pca__n_components"], "C": search.best_params_["clf__C"]},
        "inner_cv_score": float(search.best_score_),
        "inner_cv_sd": float(results["std_test_score"][search.best_index_]),
        "inner_folds": [sorted(set(groups[test_rows])) for _, test_rows in folds],
        "n_components": int(pca.n_components_),
        "explained_variance": float(pca.explained_variance_ratio_.sum()),
        "n_voxels": int(mask.sum()),
        "n_train_scans": len(train),
        "n_train_subjects": int(train["participant_id"].nunique()),
    }
    atomic_write_text(run_dir / "search.json", json.dumps(summary, indent=2) + "\n")
    model.save(run_dir / "model.npz")  # last: its presence means the fit is done
    return model, summary


def load_data(config: BaselineConfig) -> dict[str, Any]:
    """Cache, splits (audited for leakage), training scans and classes, checked before anything is written."""
    cache, preprocess = read_cache(config.cache)  # absolute array and mask paths
    splits = read_split_dir(config.split)
    assert_no_leakage(splits, where=str(config.split))
    if config.subset not in splits:
        raise AlzmriError(f"split folder {config.split} has no {config.subset!r} split (has: {', '.join(splits)})")
    train = select_scans(cache, splits["train"], "train")
    classes = list(config.classes) if config.classes else [c for c in DIAGNOSES if c in set(train["diagnosis"])]
    if len(classes) < 2:
        raise AlzmriError(f"need at least two diagnoses to classify; the training split has {classes}")
    train = train[train["diagnosis"].isin(classes)].reset_index(drop=True)
    missing = [c for c in classes if c not in set(train["diagnosis"])]
    if missing:
        raise AlzmriError(f"the training split has no scans of class {', '.join(missing)}")
    return {"cache": cache, "preprocess": preprocess, "splits": splits, "train": train, "classes": classes}


def hashed_fields(config: BaselineConfig) -> dict[str, Any]:
    """The settings that change the result, as JSON types."""
    return config.model_dump(mode="json", exclude=_NOT_HASHED)


def run_name_for(config: BaselineConfig) -> str:
    """``<model>-<hash>`` of every setting that changes the result, the cache and the split folder."""
    payload = hashed_fields(config) | {"cache": str(Path(config.cache).resolve()), "split": str(Path(config.split).resolve())}
    return f"{config.model}-{hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]}"


def predict_splits(config: BaselineConfig, data: dict[str, Any], model: LinearBaseline) -> pd.DataFrame:
    """The predictions table of the threshold split and the evaluated split, in 'alzmri evaluate''s columns."""
    from alzmri.evaluation.predict import predictions_table

    classes = data["classes"]
    parts = []
    for name in dict.fromkeys([config.threshold_split, config.subset]):
        if name not in data["splits"]:
            continue
        scans = select_scans(data["cache"], data["splits"][name], name)
        scans = scans[scans["diagnosis"].isin(classes)].reset_index(drop=True)
        if scans.empty:
            if name == config.subset:
                raise AlzmriError(f"the {name} split of {config.split} has no scans of the classes {classes}")
            continue
        table = predictions_table(scans, model.predict_scans(scans), classes)
        table.insert(2, "split", name)
        table["image_hash"] = [content_digest(a) for a in scans["array"]]
        parts.append(table)
    return pd.concat(parts, ignore_index=True)


def _paths(metrics: dict[str, Any], run_dir: Path, subset: str) -> dict[str, Any]:
    out = run_dir / f"eval-{subset}"
    return {**metrics, "run": str(run_dir), "out": str(out), "report": str(out / "report.html")}


def baseline(config: BaselineConfig) -> dict[str, Any]:
    """Fit (or reuse) the baseline, predict the threshold and evaluated splits, write the report.

    Returns:
        The scan-level metrics of ``config.subset`` (``classification_metrics`` keys, as
        ``evaluate`` returns them, with ``intervals`` and ``clinical``), plus ``search`` (chosen
        hyper-parameters and inner-CV score), ``model``, ``run``, ``out`` (the eval folder),
        ``report`` and ``finished_before`` (True when an earlier run's result was reported).
    """
    from alzmri.evaluation.evaluate import duplicate_images, split_balance
    from alzmri.evaluation.report_html import write_report

    run_name = folder_name(config.run_name, "--run-name") if config.run_name else None
    data = load_data(config)
    run_dir = Path(config.out) / (run_name or run_name_for(config))
    record = {
        "baseline_config": config.model_dump(mode="json"),
        "hash_fields": hashed_fields(config),
        "model": config.model,
        "classes": data["classes"],
        "preprocess": data["preprocess"].model_dump(mode="json"),
        "n_train_scans": len(data["train"]),
        "n_train_subjects": int(data["train"]["participant_id"].nunique()),
    }
    claim_run_dir(run_dir, record)
    result_path = run_dir / "result.json"
    if result_path.is_file():
        print(f"baseline run {run_dir} is already finished; delete result.json to evaluate again")
        return _paths(json.loads(result_path.read_text()), run_dir, config.subset) | {"finished_before": True}
    if (run_dir / "model.npz").is_file() and (run_dir / "search.json").is_file():
        model, search = LinearBaseline.load(run_dir / "model.npz"), json.loads((run_dir / "search.json").read_text())
    else:
        model, search = fit_baseline(config, data["train"], data["classes"], run_dir)

    predictions = predict_splits(config, data, model)
    out = run_dir / f"eval-{config.subset}"
    write_manifest(predictions, out / "predictions.tsv")
    context = {"cache": str(config.cache), "split": str(config.split), "model": config.model, "search": search, "baseline_config": record["baseline_config"]}
    report = write_report(
        predictions, data["classes"], out, title=f"{config.model}: {config.subset} set",
        audit_extra={"images_in_several_splits": duplicate_images(data["cache"], data["splits"]),
                     "balance": split_balance(data["cache"], data["splits"], skip=set(predictions["split"]))},
        context=context, **config.report_options(),
    )  # fmt: skip
    metrics = dict(report["scan_level"])
    metrics.update(model=config.model, subset=config.subset, split=str(config.split), intervals=report["intervals"]["scan_level"],
                   clinical=report.get("clinical"), search=search)  # fmt: skip
    atomic_write_text(result_path, json.dumps(metrics, indent=2) + "\n")
    return _paths(metrics, run_dir, config.subset) | {"finished_before": False}
