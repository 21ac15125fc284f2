"""``fit(config)``: train one model on a cache + split; everything lands in one run folder.

Run folder (``OUT/RUN_NAME``)::

    config.json        resolved TrainConfig, classes, model kwargs, preprocessing config
    metrics.csv        one row per epoch (train/val loss, val accuracy, val balanced accuracy)
    curves.png         learning curves
    checkpoints/       last.ckpt, best-acc.ckpt (val accuracy), best-loss.ckpt (val loss)
    result.json        written last: best scores, their epochs, checkpoint files relative to the
                       run folder (its presence = finished; delete it and re-run to redo the
                       end-of-run files from last.ckpt)

The folder is relocatable: nothing in it stores its own absolute path. Every checkpoint also
holds the ids and content hashes of the train and val scans (``training_data``), which
``evaluate``, ``predict``, ``report`` and ``explain`` check the scans they score against.

The default run name hashes the config, so re-running the same command resumes from
``last.ckpt`` (or reports the finished run) instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alzmri.data.audit import check_split
from alzmri.data.dataset import CachedVolumeDataset, select_scans
from alzmri.data.inputs import input_channels, read_inputs, spatial_dims
from alzmri.data.label_checks import check_training_splits, compare_labels
from alzmri.data.provenance import training_record
from alzmri.data.splits import read_split_dir
from alzmri.io.manifest import DIAGNOSES, write_manifest
import alzmri.fusion  # noqa: F401  (registers the fusion models)
from alzmri.models import model_info
from alzmri.training.config import SLICE_AUGMENTATIONS, TrainConfig
from alzmri.utils.atomic import atomic_write_text
from alzmri.utils.errors import AlzmriError
from alzmri.utils.names import folder_name
from alzmri.utils.run_folder import claim_run_dir

# Settings that do not change the trained weights (a run may resume with other values).
_NOT_HASHED = {"progress", "num_workers", "threads", "run_name", "out", "resume", "device", "trackers", "tracking_uri", "experiment", "register_model"}
# Settings added after runs existed: left out of the hash at their default, so those runs keep their names.
_ADDED_LATER = {"shuffle_labels": False, "head": None, "phases": None, "genetics": None, "encoder": None, "encoder_layer": None, "fusion_dropout": None, "missing_genetics": "drop",
                "shuffle_genetics": False, "freeze_encoder": None}  # fmt: skip


def hashed_fields(config: TrainConfig) -> dict[str, Any]:
    """The settings that change the trained weights, as JSON types."""
    payload = config.model_dump(mode="json", exclude=_NOT_HASHED)
    if payload.get("head") is not None and payload["head"] == model_info(config.model).defaults.get("head"):
        payload["head"] = None  # naming the model's own head is the same run as leaving it out
    return {k: v for k, v in payload.items() if not (k in _ADDED_LATER and v == _ADDED_LATER[k])}


def run_name_for(config: TrainConfig) -> str:
    """``<model>-<hash>`` of every setting that changes the result."""
    payload = hashed_fields(config)
    payload["cache"] = str(Path(config.cache).resolve())
    payload["split"] = str(Path(config.split).resolve())
    for option in ("genetics", "freeze_encoder"):
        if getattr(config, option) is not None:
            payload[option] = str(Path(getattr(config, option)).resolve())
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:8]
    return f"{config.model}-{digest}"


def _check_phase_modules(config: TrainConfig) -> None:
    """Refuse a phase's ``freeze_until`` that is not a top-level module of the model (before any phase trains)."""
    import torch

    from alzmri.models import create_model

    with torch.device("meta"):
        children = [name for name, _ in create_model(config.model).named_children()]
    for k, phase in enumerate(config.phases or [], start=1):
        if phase.freeze_until and phase.freeze_until not in children:
            raise AlzmriError(f"phase {k}: freeze_until {phase.freeze_until!r} is not a top-level module of {config.model}; choose one of {', '.join(children)}")


def known_order(present: set[str], order: Sequence[str]) -> list[str]:
    """The classes present, in the data's clinical order (CN/MCI/AD or the OASIS stages; unknown names last, sorted)."""
    from alzmri.data.slices.classes import ordered_classes

    rest = present - set(order)
    try:
        rest_ordered = ordered_classes(sorted(rest))
    except AlzmriError:  # stage families mixed
        rest_ordered = sorted(rest)
    return [c for c in order if c in present] + rest_ordered


def class_weights(labels: pd.Series, classes: list[str]) -> list[float]:
    """Inverse-frequency weights ``N / (C * n_c)`` from the training counts."""
    counts = labels.value_counts()
    missing = [c for c in classes if counts.get(c, 0) == 0]
    if missing:
        raise AlzmriError(f"the training split has no scans of class {', '.join(missing)}")
    return [len(labels) / (len(classes) * int(counts[c])) for c in classes]


def shuffle_subject_labels(scans: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The scans with diagnoses permuted across subjects (Adebayo et al.'s data randomisation).

    Each subject's label (that of its first scan) goes to another subject, drawn by a seeded
    permutation, and holds for all of that subject's scans; the class counts over subjects stay
    the same. A model trained on this can only memorise.
    """
    first = scans.drop_duplicates("participant_id")
    permuted = np.random.default_rng(seed).permutation(first["diagnosis"].to_numpy())
    mapping = dict(zip(first["participant_id"], permuted, strict=True))
    return scans.assign(diagnosis=scans["participant_id"].map(mapping))


def prepare(config: TrainConfig) -> dict[str, Any]:
    """Everything ``fit`` needs, checked before any training: data, classes, model kwargs."""
    cache, preprocess = read_inputs(config.cache)
    splits = read_split_dir(config.split)
    level = check_split(splits, config.split)
    train = select_scans(cache, splits["train"], "train")
    val = select_scans(cache, splits["val"], "val")
    for name in ("train", "val"):  # training reads the cache's labels: they must be the split's
        compare_labels(splits[name], cache, name)
    present = set(train["diagnosis"])
    if config.classes:  # as the data spells them (class names compare case-insensitively)
        spelling = {dx.upper(): dx for dx in present | set(val["diagnosis"])}
        classes = [spelling.get(c.upper(), c) for c in config.classes]
    else:
        classes = known_order(present, getattr(preprocess, "classes", DIAGNOSES))
    if len(classes) < 2:
        raise AlzmriError(f"need at least two diagnoses to classify; the training split has {classes}")
    for warning in check_training_splits(train, val, classes, where=str(config.split)):
        print(f"warning: {warning}")
    train = train[train["diagnosis"].isin(classes)].reset_index(drop=True)
    val = val[val["diagnosis"].isin(classes)].reset_index(drop=True)
    if config.shuffle_labels:
        train = shuffle_subject_labels(train, config.seed)
    info = model_info(config.model)
    if config.phases:
        _check_phase_modules(config)
    dims = spatial_dims(preprocess)
    genetics = None
    if config.genetics is not None or info.uses_genetics:
        genetics, train, val = prepare_genetics(config, cache, train, val)
    image_info = image_model(config, info, dims)
    if image_info.spatial_dims not in (0, dims):
        kind = ("slices", "a 2D model (small_cnn_2d, resnet18_2d, efficientnet_b4_2d)") if dims == 2 else ("volumes", "a 3D model")
        name = f"encoder {image_info.name}" if image_info is not info else f"model {config.model}"
        raise AlzmriError(f"{name} is {image_info.spatial_dims}D but the cache holds {kind[0]}; pick {kind[1]} (see 'alzmri models list')")
    min_size = max(info.min_input_size, image_info.min_input_size)
    if preprocess.size < min_size:
        power, remake = ("² pixels", "import or cut the slices with --size") if dims == 2 else ("³ voxels", "preprocess with --size")
        raise AlzmriError(
            f"model {config.model} needs inputs of at least {min_size}{power}; the cache holds "
            f"{preprocess.size}{power[0]} ({remake} {min_size} or more, or pick another model)"
        )
    model_kwargs: dict[str, Any] = {"num_classes": len(classes), "input_size": preprocess.size, "dropout": config.dropout,
                                    "in_channels": input_channels(preprocess)}  # fmt: skip
    for option in ("width", "head"):
        if getattr(config, option) is not None:
            if option not in info.defaults:
                raise AlzmriError(f"model {config.model} has no {option} setting; leave --{option} out")
            model_kwargs[option] = getattr(config, option)
    if config.age_encoding:
        if "age_encoding" not in info.defaults:
            raise AlzmriError(f"model {config.model} has no age input; leave --age-encoding out (liu2022 and liu_cnn_compact have one)")
        model_kwargs["age_encoding"] = True
        for part in (train, val):  # a missing age fails here, before any run folder is made
            CachedVolumeDataset(part, classes, with_age=True)
    if genetics is not None:
        model_kwargs["groups"] = [len(g) for g in genetics["encoder"].groups.values()]
        model_kwargs["encoder"] = image_info.name
        if config.fusion_dropout is not None:
            model_kwargs["fusion_dropout"] = config.fusion_dropout
        if config.encoder_layer is not None:
            if "feature_layer" not in info.defaults:
                raise AlzmriError(f"model {config.model} has no image encoder; leave --encoder-layer out")
            model_kwargs["feature_layer"] = config.encoder_layer
    # Models without an input-size or dropout argument (global pooling) simply do not get one.
    model_kwargs = {k: v for k, v in model_kwargs.items() if k in model_info(config.model).defaults}
    return {
        "train": train,
        "val": val,
        "classes": classes,
        "preprocess": preprocess,
        "model_kwargs": model_kwargs,
        "weights": class_weights(train["diagnosis"], classes) if config.class_weights else None,
        "split_level": level,
        "genetics": genetics,
    }


def image_model(config: TrainConfig, info: Any, dims: int) -> Any:
    """The registry entry of the network that reads the image: the model, or a fusion model's ``--encoder``."""
    if config.encoder is not None and "encoder" not in info.defaults:
        raise AlzmriError(f"model {config.model} has no image encoder; leave --encoder out (fusion_xattn and fusion_concat have one)")
    if "encoder" not in info.defaults:
        return info
    from alzmri.fusion.registry import DEFAULT_ENCODER

    encoder = model_info(config.encoder or DEFAULT_ENCODER[dims])
    if encoder.uses_genetics:
        raise AlzmriError(f"--encoder {encoder.name} is a fusion model; the encoder must be an image model (see 'alzmri models list')")
    return encoder


def prepare_genetics(config: TrainConfig, cache: pd.DataFrame, train: pd.DataFrame, val: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Read, align by participant_id and encode the genetic table (fitted on the training participants only).

    Returns the genetics record (table, encoder, alignment, settings) and the train and val scans,
    without the participants lacking genetics under ``--missing-genetics drop``.
    """
    from alzmri.data.genetics import GeneticEncoder, align, keep_with_genetics, shuffled
    from alzmri.io.genetics import read_genetics

    if config.genetics is None:
        raise AlzmriError(f"model {config.model} fuses genetics with the image: give --genetics TABLE (a TSV/CSV/Parquet keyed by participant_id)")
    table = read_genetics(config.genetics)
    if config.shuffle_genetics:
        table = shuffled(table, config.seed)
    alignment = align(cache["participant_id"], table)
    print(alignment.summary())
    if config.missing_genetics == "drop":
        train, val = keep_with_genetics(train, table, "train"), keep_with_genetics(val, table, "val")
    encoder = GeneticEncoder.fit(table, sorted(set(train["participant_id"].astype(str))))
    record = {"source": str(Path(config.genetics).resolve()), "shuffled": config.shuffle_genetics, "seed": config.seed, "missing": config.missing_genetics,
              "alignment": {"matched": len(alignment.matched), "imaging_only": len(alignment.imaging_only), "genetics_only": len(alignment.genetics_only)}}  # fmt: skip
    return {"table": table, "encoder": encoder, "alignment": alignment, "record": record}, train, val


def for_inputs(config: TrainConfig, inputs: Any) -> TrainConfig:
    """The config with the defaults that depend on the kind of input filled in (recorded in the run).

    Slices get the 2D augmentations (flip, ±15° rotation, brightness/contrast; no flip for sagittal
    slices, where left-right is not in the image) unless ``--augmentations`` was given.
    """
    if spatial_dims(inputs) == 2 and "augmentations" not in config.model_fields_set:
        names = [n for n in SLICE_AUGMENTATIONS if not (n == "flip" and inputs.plane == "sagittal")]
        return config.model_copy(update={"augmentations": names})
    return config


def _remove_unstarted(run_dir: Path) -> None:
    """Remove a run folder made by a start that was refused before any checkpoint was written."""
    if not (run_dir / "checkpoints").exists():
        shutil.rmtree(run_dir, ignore_errors=True)  # never mask the error that refused the start


def resume_config(config: TrainConfig) -> TrainConfig:
    """The stored config of the run folder ``config.resume``, with the options that may change.

    Raises:
        AlzmriError: not a run folder, or a result-changing option differs from the stored run.
    """
    run_dir = Path(config.resume)
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise AlzmriError(f"{run_dir} is not an alzmri run folder (it has no config.json); pass the folder 'alzmri train' printed")
    stored = TrainConfig.model_validate({**json.loads(cfg_path.read_text())["train_config"], "resume": None})
    given = config.model_fields_set - {"resume"}
    clashes = sorted(k for k in given - _NOT_HASHED if getattr(config, k) != getattr(stored, k))
    if clashes:
        shown = ", ".join(f"--{k.replace('_', '-')} (stored: {getattr(stored, k)})" for k in clashes)
        raise AlzmriError(f"--resume continues {run_dir} with its stored settings; these differ: {shown}. Start a new run instead")
    changes = {k: getattr(config, k) for k in given & _NOT_HASHED}
    return stored.model_copy(update={**changes, "out": run_dir.parent, "run_name": run_dir.name})


def fit(config: TrainConfig) -> Path:
    """Train and return the run folder (see module docstring for its contents).

    Under ``torchrun`` every process calls this; only rank 0 writes the run folder's files.
    """
    from alzmri.training.devices import is_rank_zero

    if config.resume is not None:
        config = resume_config(config)
    elif config.cache is None or config.split is None:
        raise AlzmriError("give CACHE and SPLIT, or --resume RUN_FOLDER (see 'alzmri train --help')")
    run_name = folder_name(config.run_name, "--run-name") if config.run_name else None
    data = prepare(config)
    config = for_inputs(config, data["preprocess"])
    out = Path(config.out)
    run_dir = out / (run_name or run_name_for(config))
    record = {
        "train_config": config.model_dump(mode="json"),
        "hash_fields": hashed_fields(config),
        "classes": data["classes"],
        "model": config.model,
        "model_kwargs": data["model_kwargs"],
        "class_weights": data["weights"],
        "preprocess": data["preprocess"].model_dump(mode="json"),
        "n_train_scans": len(data["train"]),
        "n_val_scans": len(data["val"]),
        "split_level": data["split_level"],
    }
    if data["genetics"] is not None:
        record["genetics"] = data["genetics"]["record"]
    created = claim_run_dir(run_dir, record) if is_rank_zero() else False
    if data["genetics"] is not None and is_rank_zero():
        write_manifest(data["genetics"]["alignment"].table(), run_dir / "genetics_alignment.tsv")
    result_path = run_dir / "result.json"
    if result_path.is_file():
        print(f"run {run_dir} is already finished; delete result.json to train again")
        return run_dir

    from alzmri.training.trainer import train_model

    try:
        data["training_data"] = training_record(data["train"], data["val"], config.cache)
        result = train_model(config, data, run_dir, record)
    except (AlzmriError, KeyboardInterrupt, OSError):
        if created:  # a refused or interrupted start leaves no half-made run folder behind
            _remove_unstarted(run_dir)
        raise
    if is_rank_zero():
        atomic_write_text(result_path, json.dumps(result, indent=2) + "\n")
    return run_dir
