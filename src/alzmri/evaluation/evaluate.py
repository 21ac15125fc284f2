"""``evaluate(config)`` and ``predict(config)``: checkpoint → predictions table → metrics and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alzmri.data.audit import check_split
from alzmri.data.dataset import select_scans
from alzmri.data.inputs import read_inputs, same_inputs, spatial_dims
from alzmri.data.provenance import describe_seen, find_seen, image_hashes
from alzmri.data.splits import read_split_dir
from alzmri.evaluation.config import EvaluateConfig, PredictConfig
from alzmri.evaluation.predict import checkpoint_genetics, checkpoint_preprocess, load_classifier, predict_cached, predictions_table
from alzmri.io.bids import load_scans
from alzmri.io.manifest import write_manifest
from alzmri.models import model_info
from alzmri.utils.errors import AlzmriError, first_line
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
    cache, cache_preprocess = read_inputs(config.cache)
    if not same_inputs(cache_preprocess, checkpoint_preprocess(hp)):
        raise AlzmriError(
            f"cache {config.cache} was made differently from the model's training data "
            f"({cache_preprocess.model_dump_json()} vs {checkpoint_preprocess(hp).model_dump_json()})"
        )
    splits = read_split_dir(config.split)
    level = check_split(splits, config.split)
    if config.subset not in splits:
        raise AlzmriError(f"split folder {config.split} has no {config.subset!r} split (has: {', '.join(splits)})")
    classes = list(hp["classes"])
    genetics = checkpoint_genetics(hp, config.genetics)
    scored: dict[str, pd.DataFrame] = {}
    for name in dict.fromkeys([config.threshold_split, config.subset]):
        if name not in splits:
            continue
        scans = select_scans(cache, splits[name], name)
        scans = scans[scans["diagnosis"].isin(classes)].reset_index(drop=True)
        if genetics is not None:
            try:
                scans = genetics.select(scans, name)
            except AlzmriError:
                if name == config.subset:
                    raise
                print(f"note: no participant of the {name} split has genetics; the threshold is not chosen on it")
                continue
        if scans.empty:
            if name == config.subset:
                raise AlzmriError(f"the {name} split of {config.split} has no scans of the model's classes {classes}")
            continue
        scored[name] = scans.assign(image_hash=image_hashes(scans))
    # Before any prediction: a refusal should not cost an inference pass.
    seen_rows = _check_seen({name: find_seen(hp.get("training_data"), scans, config.cache) for name, scans in scored.items()}, config)
    parts = []
    for name, scans in scored.items():
        table = predict_cached(model, classes, scans, config.batch_size, genetics)
        table.insert(2, "split", name)
        table["image_hash"] = scans["image_hash"].to_numpy()
        parts.append(table)
    predictions = pd.concat(parts, ignore_index=True)
    if level == "slice":
        predictions["split_level"] = "slice"  # so that 'alzmri report' on this table shows the banner too

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
        "split_level": level,
    }
    if genetics is not None:
        context["genetics"] = {k: v for k, v in genetics.record.items() if k != "encoder"}
    report = write_report(
        predictions, classes, out, title=f"{hp['model_name']}: {config.subset} set",
        audit_extra={"images_in_several_splits": duplicate_images(cache, splits), "balance": split_balance(cache, splits, skip=set(predictions["split"])),
                     "seen_by_model": seen_rows, "model_checked": hp.get("training_data") is not None},
        context=context, **config.report_options(),
    )  # fmt: skip
    metrics = dict(report["scan_level"])
    metrics.update(checkpoint=str(config.checkpoint), subset=config.subset, split=str(config.split), out=str(out),
                   report=str(out / "report.html"), intervals=report["intervals"]["scan_level"], clinical=report.get("clinical"), audit=report["audit"],
                   not_computed=report.get("not_computed", {}), unit=report["unit"], subjects_unknown=report["subjects_unknown"],
                   subject_level=report["subject_level"], subject_intervals=report["intervals"]["subject_level"], split_level=level)  # fmt: skip
    return metrics


def _check_seen(seen: dict[str, pd.DataFrame], config: EvaluateConfig) -> list[dict[str, Any]]:
    """Refuse (or, with ``allow_seen``, list for the banner) scored scans the model has seen.

    Evaluated rows must be neither training nor validation data of the model; rows of the
    threshold split must not be training data (the model's own validation set is the usual,
    sound place to choose the threshold).
    """
    bad = []
    for name, rows in seen.items():
        if name != config.subset:
            rows = rows[rows["seen_in"] == "train"]
        if not rows.empty:
            bad.append((name, rows))
    if bad and not config.allow_seen:
        name, rows = bad[0]
        raise AlzmriError(
            f"the {name} split of {config.split} holds {describe_seen(rows)}: its results would not be held out. "
            "Evaluate on the split the model was trained with, or pass --allow-seen to report them under a LEAKAGE banner"
        )
    return [{**row, "split": name} for name, rows in bad for row in rows.drop(columns="position").to_dict("records")]


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


class PartlyPredicted(AlzmriError):
    """Some scans failed; ``table`` holds the predictions of the others (already written)."""

    def __init__(self, message: str, table: pd.DataFrame) -> None:
        super().__init__(message)
        self.table = table


def predict(config: PredictConfig) -> pd.DataFrame:
    """Preprocess raw scans exactly as the model's training data, then predict; writes a TSV.

    A scan that cannot be read or preprocessed is skipped and listed in
    ``<out>.failures.tsv``; the others are predicted, then the command fails naming the first.
    Scans whose file content the model trained or was validated on are marked in the
    ``seen_in_training`` column and a warning is printed.
    """
    from alzmri.evaluation.engines import load_engine
    from alzmri.preprocessing.pipeline import preprocess_image

    engine = load_engine(config.checkpoint, config.engine, config.threads)
    hp = engine.hparams
    preprocess = checkpoint_preprocess(hp)
    fusion = model_info(hp["model_name"]).uses_genetics
    if fusion and spatial_dims(preprocess) == 2:
        raise AlzmriError(f"predicting images with a 2D fusion model ({hp['model_name']}) is not supported yet; use 'alzmri evaluate' on a slice cache")
    if spatial_dims(preprocess) == 2:
        from alzmri.evaluation.predict_slices import predict_images

        scans, probs, failures = predict_images(engine, hp, list(config.inputs), preprocess)
        total = len(scans) + len(failures)
        record_failures(Path(config.out), failures, total, len(scans) > 0, "inputs")
        table = file_predictions(scans, probs, list(hp["classes"]), hp, Path(config.out))
        raise_if_partial(Path(config.out), failures, total, table, "inputs")
        return table
    classes = list(hp["classes"])
    rows = _predict_inputs(config.inputs)
    ages = _ages(rows) if engine.uses_age else None
    probs, done, failures = [], [], []
    genetics = checkpoint_genetics(hp, config.genetics) if fusion else None  # an image model trained with --genetics needs no table here
    inputs = genetics.inputs([r["participant_id"] for r in rows]) if genetics is not None else None
    if inputs is not None and not inputs[1].any() and not genetics.drops_missing:
        print(f"warning: no input's participant_id is in the genetic table {genetics.table.source}: every scan is predicted with the "
              "missing-genetics token (scan files are named by file; predict from a manifest or BIDS folder to match participants)")  # fmt: skip
    skip = set(np.flatnonzero(~inputs[1]).tolist()) if inputs is not None and genetics.drops_missing else set()
    for i in sorted(skip):  # the model never saw a participant without genetics
        failures.append({"participant_id": rows[i]["participant_id"], "session_id": rows[i].get("session_id", ""), "path": str(rows[i]["path"]),
                         "error": f"participant {rows[i]['participant_id']} has no row in the genetic table (the model was trained with --missing-genetics drop)"})  # fmt: skip
    for start in range(0, len(rows), _PREDICT_BATCH):  # bounded memory for long input lists
        arrays, kept = [], []
        for i in range(start, min(start + _PREDICT_BATCH, len(rows))):
            if i in skip:
                continue
            try:
                arrays.append(preprocess_image(rows[i]["path"], preprocess)[0])
            except Exception as exc:  # one unreadable scan must not stop the others
                failures.append({"participant_id": rows[i]["participant_id"], "session_id": rows[i].get("session_id", ""),
                                 "path": str(rows[i]["path"]), "error": first_line(exc)})  # fmt: skip
                continue
            kept.append(i)
        if not kept:
            continue
        extra = [np.array([ages[i] for i in kept], np.float32)] if ages is not None else []
        if inputs is not None:
            extra = [inputs[0][kept], inputs[1][kept]]
        probs.append(engine.probabilities(np.stack(arrays)[:, None], *extra))
        done += kept
    out = Path(config.out)
    record_failures(out, failures, len(rows), bool(done), "scans")
    table = file_predictions(pd.DataFrame([rows[i] for i in done]), np.concatenate(probs), classes, hp, out)
    raise_if_partial(out, failures, len(rows), table, "scans")
    return table


def _failure_path(out: Path) -> Path:
    return out.with_name(out.name.split(".")[0] + ".failures.tsv")


def record_failures(out: Path, failures: list[dict[str, Any]], total: int, any_done: bool, noun: str) -> None:
    """Write the inputs that failed next to ``out`` (or remove an earlier run's list); refuse when none succeeded."""
    fail_path = _failure_path(out)
    if failures:
        write_manifest(pd.DataFrame(failures), fail_path)
    else:
        fail_path.unlink(missing_ok=True)  # an earlier run's list, now stale
    if not any_done:
        raise AlzmriError(f"none of the {total} {noun} could be predicted; first: {failures[0]['path']}: {failures[0]['error']} (all in {fail_path})")


def raise_if_partial(out: Path, failures: list[dict[str, Any]], total: int, table: pd.DataFrame, noun: str) -> None:
    """PartlyPredicted when some inputs failed (the others' table is already written)."""
    if failures:
        first = failures[0]
        raise PartlyPredicted(f"{len(failures)} of {total} {noun} could not be predicted (the others are in {out}); "
                              f"first: {first['path']}: {first['error']} (all listed in {_failure_path(out)})", table)  # fmt: skip


def file_predictions(scans: pd.DataFrame, probs: np.ndarray, classes: list[str], hp: dict[str, Any], out: Path) -> pd.DataFrame:
    """The predictions table of input files (``path`` column), their content hashes and whether the model saw them; written to ``out``."""
    scans = scans.assign(source_hash=[content_digest(p) for p in scans["path"]])
    table = predictions_table(scans, probs, classes)
    table.insert(2, "path", [str(p) for p in scans["path"]])
    seen = find_seen(hp.get("training_data"), scans)
    table["source_hash"] = scans["source_hash"].to_numpy()  # lets 'report --checkpoint' match content, not ids
    table["seen_in_training"] = ""
    table.loc[seen["position"].to_numpy(dtype=int), "seen_in_training"] = seen["seen_in"].to_numpy()
    if not seen.empty:
        print(f"warning: {describe_seen(seen)}; their predictions are not held-out results (column seen_in_training)")
    write_manifest(table, out)
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
