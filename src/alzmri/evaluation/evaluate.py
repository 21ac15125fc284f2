"""``evaluate(config)`` and ``predict(config)``: checkpoint → predictions table → metrics and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from alzmri.data.audit import assert_no_leakage
from alzmri.data.dataset import select_scans
from alzmri.data.splits import read_split_dir
from alzmri.evaluation.config import EvaluateConfig, PredictConfig
from alzmri.evaluation.predict import checkpoint_preprocess, load_classifier, predict_cached, predictions_table, uses_age
from alzmri.io.bids import load_scans
from alzmri.io.manifest import write_manifest
from alzmri.preprocessing.cache import read_cache
from alzmri.utils.errors import AlzmriError
from alzmri.utils.hashing import content_digest

_PREDICT_BATCH = 8


def default_eval_dir(checkpoint: Path, subset: str) -> Path:
    """``RUN/eval-SUBSET`` for a checkpoint in ``RUN/checkpoints/``."""
    parent = checkpoint.resolve().parent
    run = parent.parent if parent.name == "checkpoints" else parent
    return run / f"eval-{subset}"


def evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """Predict on the validation and test scans of a cache; write predictions.tsv and the report.

    The validation rows are predicted too because the binary operating threshold is chosen on
    them; the metrics are computed on ``config.subset`` only. Every cached image of every split
    (training included) is hashed, so the report also flags one image filed under two splits.

    Returns:
        The scan-level metrics of ``config.subset`` (``classification_metrics`` keys) plus
        ``subset``, ``checkpoint``, ``split``, ``out``, ``report`` (HTML path) and ``intervals``.
    """
    from alzmri.evaluation.report_html import write_report

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
    parts = []
    for name in dict.fromkeys([config.threshold_split, config.subset]):
        if name not in splits:
            continue
        scans = select_scans(cache, splits[name], name)
        scans = scans[scans["diagnosis"].isin(classes)].reset_index(drop=True)
        if scans.empty:
            if name == config.subset:
                raise AlzmriError(f"the {name} split of {config.split} has no scans of the model's classes {classes}")
            continue
        table = predict_cached(model, classes, scans, config.batch_size)
        table.insert(2, "split", name)
        table["image_hash"] = [content_digest(a) for a in scans["array"]]
        parts.append(table)
    predictions = pd.concat(parts, ignore_index=True)

    out = Path(config.out) if config.out else default_eval_dir(Path(config.checkpoint), config.subset)
    out.mkdir(parents=True, exist_ok=True)
    write_manifest(predictions, out / "predictions.tsv")
    context = {
        "checkpoint": str(config.checkpoint),
        "cache": str(config.cache),
        "split": str(config.split),
        "model": hp["model_name"],
        "model_kwargs": hp["model_kwargs"],
        "train_config": hp.get("train_config", {}),
    }
    report = write_report(
        predictions, classes, out, title=f"{hp['model_name']}: {config.subset} set",
        audit_extra={"images_in_several_splits": duplicate_images(cache, splits), "balance": split_balance(cache, splits, skip=set(predictions["split"]))},
        context=context, **config.report_options(),
    )  # fmt: skip
    metrics = dict(report["scan_level"])
    metrics.update(checkpoint=str(config.checkpoint), subset=config.subset, split=str(config.split), out=str(out),
                   report=str(out / "report.html"), intervals=report["intervals"]["scan_level"], clinical=report.get("clinical"))  # fmt: skip
    return metrics


def split_balance(cache: pd.DataFrame, splits: dict[str, pd.DataFrame], skip: set[str]) -> list[dict[str, Any]]:
    """Subjects and scans per class of the splits that were not predicted (e.g. train), for the report."""
    from alzmri.evaluation.report import class_balance

    return [class_balance(name, select_scans(cache, split, name)) for name, split in splits.items() if name not in skip]


def duplicate_images(cache: pd.DataFrame, splits: dict[str, pd.DataFrame]) -> list[dict[str, Any]]:
    """Identical cached images (by content hash) filed under more than one split."""
    seen: dict[str, set[str]] = {}
    for name, split in splits.items():
        for path in select_scans(cache, split, name)["array"]:
            seen.setdefault(content_digest(path), set()).add(name)
    return [{"image_hash": h, "splits": sorted(s)} for h, s in seen.items() if len(s) > 1]


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
    """Scan files become rows named after the file; a manifest or BIDS folder keeps its IDs and labels."""
    from alzmri.io.volumes import SUPPORTED, scan_format, scan_stem

    rows: list[dict[str, Any]] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir() or item.suffix.lower() in (".tsv", ".csv"):
            rows += load_scans(item).to_dict("records")
        elif scan_format(item) is not None:
            if not item.is_file():
                raise AlzmriError(f"scan file not found: {item}")
            rows.append({"participant_id": scan_stem(item), "session_id": "", "path": item})
        else:
            raise AlzmriError(f"cannot predict on {item}: expected scan files ({SUPPORTED}), a manifest .tsv/.csv, or a BIDS folder")
    if not rows:
        raise AlzmriError("no scans to predict on")
    return rows
