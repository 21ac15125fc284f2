"""``evaluate(config)`` and ``predict(config)``: checkpoint → predictions table → metrics and plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from alzmri.data.audit import assert_no_leakage
from alzmri.data.dataset import select_scans
from alzmri.data.splits import read_split_dir
from alzmri.evaluation.config import EvaluateConfig, PredictConfig
from alzmri.evaluation.metrics import classification_metrics
from alzmri.evaluation.plots import plot_confusion_matrix, plot_roc
from alzmri.evaluation.predict import checkpoint_preprocess, load_classifier, predict_cached, predictions_table, uses_age
from alzmri.io.bids import load_scans
from alzmri.io.manifest import write_manifest
from alzmri.preprocessing.cache import read_cache
from alzmri.utils.atomic import atomic_write_text
from alzmri.utils.errors import AlzmriError

_PREDICT_BATCH = 8


def default_eval_dir(checkpoint: Path, subset: str) -> Path:
    """``RUN/eval-SUBSET`` for a checkpoint in ``RUN/checkpoints/``."""
    parent = checkpoint.resolve().parent
    run = parent.parent if parent.name == "checkpoints" else parent
    return run / f"eval-{subset}"


def evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """Predict on one split of a cache and write predictions.tsv, metrics.json, confusion_matrix.png, roc.png."""
    model, hp = load_classifier(config.checkpoint)
    cache, cache_preprocess = read_cache(config.cache)
    if cache_preprocess != checkpoint_preprocess(hp):
        raise AlzmriError(
            f"cache {config.cache} was preprocessed differently from the model's training data "
            f"({cache_preprocess.model_dump_json()} vs {checkpoint_preprocess(hp).model_dump_json()})"
        )
    splits = read_split_dir(config.split)
    assert_no_leakage(splits, where=str(config.split))
    if config.subset not in splits:
        raise AlzmriError(f"split folder {config.split} has no {config.subset!r} split (has: {', '.join(splits)})")
    classes = list(hp["classes"])
    scans = select_scans(cache, splits[config.subset], config.subset)
    scans = scans[scans["diagnosis"].isin(classes)].reset_index(drop=True)
    predictions = predict_cached(model, classes, scans, config.batch_size)
    metrics = classification_metrics(predictions, classes)
    metrics.update(checkpoint=str(config.checkpoint), subset=config.subset, split=str(config.split))

    out = Path(config.out) if config.out else default_eval_dir(Path(config.checkpoint), config.subset)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(predictions, out / "predictions.tsv")
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    title = f"{config.subset} set: {metrics['n_scans']} scans, {metrics['n_subjects']} subjects"
    plot_confusion_matrix(metrics["confusion_matrix"], classes, out / "confusion_matrix.png", title)
    plot_roc(predictions, classes, out / "roc.png", title)
    metrics["out"] = str(out)
    return metrics


def predict(config: PredictConfig) -> pd.DataFrame:
    """Preprocess raw scans exactly as the model's training data, then predict; writes a TSV."""
    from alzmri.preprocessing.pipeline import preprocess_image

    model, hp = load_classifier(config.checkpoint)
    preprocess = checkpoint_preprocess(hp)
    classes = list(hp["classes"])
    rows = _predict_inputs(config.inputs)
    ages = _ages(rows) if uses_age(model) else None
    probs = []
    for start in range(0, len(rows), _PREDICT_BATCH):  # bounded memory for long input lists
        arrays = [preprocess_image(r["path"], preprocess)[0] for r in rows[start : start + _PREDICT_BATCH]]
        extra = [torch.tensor(ages[start : start + _PREDICT_BATCH])] if ages is not None else []
        with torch.no_grad():
            probs.append(torch.softmax(model(torch.from_numpy(np.stack(arrays)[:, None]), *extra), dim=1).numpy())
    table = predictions_table(pd.DataFrame(rows), np.concatenate(probs), classes)
    table.insert(2, "path", [str(r["path"]) for r in rows])
    write_manifest(table, Path(config.out))
    return table


def _ages(rows: list[dict[str, Any]]) -> list[float]:
    """Each scan's age, for models with an age input; a clear error when one is missing."""
    ages = [float(r.get("age", float("nan"))) for r in rows]
    missing = [r for r, a in zip(rows, ages, strict=True) if not np.isfinite(a)]
    if missing:
        raise AlzmriError(
            f"this model uses age but {len(missing)} scans have none (e.g. {missing[0]['participant_id']}); "
            "predict from a manifest or BIDS folder with an age column"
        )
    return ages


def _predict_inputs(inputs: list[Path]) -> list[dict[str, Any]]:
    """NIfTI files become rows named after the file; a manifest or BIDS folder keeps its IDs and labels."""
    rows: list[dict[str, Any]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir() or item.suffix.lower() in (".tsv", ".csv"):
            rows += load_scans(item).to_dict("records")
        elif item.name.endswith((".nii", ".nii.gz")):
            if not item.is_file():
                raise AlzmriError(f"NIfTI file not found: {item}")
            rows.append({"participant_id": item.name.split(".nii")[0], "session_id": "", "path": item})
        else:
            raise AlzmriError(f"cannot predict on {item}: expected .nii/.nii.gz files, a manifest .tsv/.csv, or a BIDS folder")
    if not rows:
        raise AlzmriError("no scans to predict on")
    return rows
