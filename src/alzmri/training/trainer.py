"""The Lightning part of training: loaders, callbacks, loggers, ``Trainer.fit``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar
from torch.utils.data import DataLoader

from alzmri.data.dataset import CachedVolumeDataset, EpochSeededSampler
from alzmri.data.genetics import WithGenetics
from alzmri.data.inputs import spatial_dims
from alzmri.models.registry import count_parameters, model_info
from alzmri.training.augment import training_transform
from alzmri.training.callbacks import BestValidationConfusion, EarlyStoppingOnLossOrAccuracy, EpochMetricsWriter
from alzmri.training.checkpoint_io import AtomicCheckpointIO
from alzmri.training.config import TrainConfig
from alzmri.training.devices import global_rank, training_layout
from alzmri.training.frozen_encoder import load_frozen_encoder, with_encoder_data
from alzmri.training.module import Classifier, NonFiniteLossError
from alzmri.training.run_checkpoints import RunCheckpoints
from alzmri.training.tracking import build_loggers, log_run_files, quiet_libraries
from alzmri.utils.atomic import stale_temporaries
from alzmri.utils.errors import AlzmriError, Terminated, first_line


def background_pad(inputs: Any) -> float | str:
    """What spatial augmentations fill with: 0 where the background is 0 (slices, ``zero_background``), else the image minimum."""
    return 0.0 if spatial_dims(inputs) == 2 or getattr(inputs, "zero_background", False) else "minimum"


def train_model(config: TrainConfig, data: dict[str, Any], run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Fit with Lightning and return the result record."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    quiet_libraries()
    pl.seed_everything(config.seed, workers=True, verbose=False)
    if config.threads:
        torch.set_num_threads(config.threads)
    layout = training_layout(config.device)
    rank = global_rank()
    classes = data["classes"]
    with_age = config.age_encoding
    train_ds = CachedVolumeDataset(data["train"], classes, training_transform(config.augment, config.augmentations, spatial_dims(data["preprocess"]), pad=background_pad(data["preprocess"])), seed=config.seed, with_age=with_age)
    val_ds = CachedVolumeDataset(data["val"], classes, with_age=with_age)
    genetics = data.get("genetics")
    if genetics is not None and model_info(config.model).uses_genetics:
        train_ds, val_ds = (WithGenetics(ds, *genetics["encoder"].transform(genetics["table"], list(data[name]["participant_id"])))
                            for ds, name in ((train_ds, "train"), (val_ds, "val")))  # fmt: skip
    # Each process trains on its shard; every process validates on the whole val set (small).
    sampler = EpochSeededSampler(len(train_ds), config.seed, num_replicas=layout.world_size, rank=rank)
    train_loader = DataLoader(train_ds, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers, drop_last=len(sampler) > config.batch_size)
    val_loader = DataLoader(val_ds, batch_size=config.batch_size, num_workers=config.num_workers)

    module = Classifier(
        model_name=config.model,
        model_kwargs=data["model_kwargs"],
        classes=classes,
        class_weights=data["weights"],
        optimizer=config.optimizer,
        lr=config.lr,
        weight_decay=config.weight_decay,
        preprocess=record["preprocess"],
        train_config=record["train_config"],
        freeze_until=config.freeze_until,
        freeze=config.freeze,
        # with --phases each phase's rate is the head's too (a head-only phase at 1e-3 trains at 1e-3)
        head_lr_mult=config.head_lr_mult if config.head_lr_mult is not None else (10.0 if config.pretrained and not config.phases else 1.0),
        warmup_epochs=config.warmup_epochs,
        training_data=with_encoder_data(data.get("training_data"), config.freeze_encoder) if config.freeze_encoder else data.get("training_data"),
        genetics={**genetics["record"], "encoder": genetics["encoder"].to_dict()} if genetics is not None else None,
    )
    tokens = getattr(getattr(module.model, "image", None), "grid", None)
    if rank == 0 and tokens is not None and hasattr(module.model, "genetic_to_image") and int(np.prod(tokens)) < 8:
        print(f"warning: the encoder's feature map is {'x'.join(map(str, tokens))} at this input size: the genetic tokens attend over "
              f"{int(np.prod(tokens))} image token(s), next to a fixed map; pick an earlier --encoder-layer (e.g. layer3 or layer2 of a ResNet) or a larger input")  # fmt: skip
    if config.freeze_encoder is not None:
        for note in load_frozen_encoder(module, config.freeze_encoder):
            print(f"--freeze-encoder: {note}")
    if config.pretrained:
        from alzmri.models.weights import load_weights

        for note in load_weights(module.model, config.pretrained, adapt=model_info(config.model).adapt_weights):
            print(f"pretrained weights: {note}")
        print(f"pretrained weights: loaded from {config.pretrained}")
    trainable, frozen = count_parameters(module.model)
    if rank == 0:
        processes = f", {layout.world_size} processes (DDP), {config.batch_size} scans per process and step" if layout.world_size > 1 else ""
        frozen_text = f" ({len(module.frozen)} tensors, up to {config.freeze_until or module.frozen[-1]})" if module.frozen else ""
        print(f"device: {layout.accelerator}{processes}")
        print(f"parameters: {trainable:,} trainable, {frozen:,} frozen{frozen_text}; head lr x{module.hparams.head_lr_mult:g}")
    ckpt_dir = run_dir / "checkpoints"
    if rank == 0:  # temporaries of a killed run (never those of a live process)
        for folder in (run_dir, ckpt_dir):
            for tmp in stale_temporaries(folder) if folder.is_dir() else ():
                tmp.unlink(missing_ok=True)
    checkpoints = RunCheckpoints(ckpt_dir)
    metrics_writer = EpochMetricsWriter(run_dir, echo=config.progress)
    confusion = BestValidationConfusion(run_dir, classes)
    callbacks: list[pl.Callback] = [EarlyStoppingOnLossOrAccuracy(config.patience), metrics_writer, confusion, checkpoints]
    loggers = build_loggers(config, run_dir, rank_zero=rank == 0)  # Lightning logs the module's hyper-parameters to them
    if loggers:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))  # lr per epoch into every tracker
    show_bar = config.progress and sys.stderr.isatty()  # a bar in a log file is thousands of lines
    if show_bar:
        callbacks.append(TQDMProgressBar(leave=False))
    if layout.world_size > 1 and model_info(config.model).uses_genetics:  # encoder layers after the token layer get no gradient
        raise AlzmriError(f"{config.model} does not run under DDP (torchrun) yet: train it on one device")
    if config.phases and layout.world_size > 1:  # DDP needs the set of trained parameters fixed for the whole run
        raise AlzmriError("--phases does not run under DDP (torchrun) yet: train the phases on one device")
    if config.precision == "16-mixed" and layout.accelerator == "cpu":
        raise AlzmriError("--precision 16-mixed needs a GPU; on CPU use bf16-mixed or 32")
    trainer = pl.Trainer(
        max_epochs=config.epochs,
        accelerator=layout.accelerator,
        devices=layout.devices,
        num_nodes=layout.num_nodes,
        strategy=layout.strategy,
        use_distributed_sampler=False,  # EpochSeededSampler shards itself (and keeps exact resume)
        logger=loggers or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO(), *layout.plugins],
        deterministic=True,
        precision=config.precision,
        gradient_clip_val=config.grad_clip,
        accumulate_grad_batches=config.accumulate,
        log_every_n_steps=1,
        enable_progress_bar=show_bar,
        enable_model_summary=False,
        default_root_dir=run_dir,
    )
    last = ckpt_dir / "last.ckpt"
    if last.is_file():
        _check_resumable(last)
    try:
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if last.is_file() else None)
    except SystemExit:
        # Lightning turns Ctrl-C and SIGTERM into sys.exit(1); give the command line its own
        # "interrupted; re-run the same command to resume" and exit code back.
        if not trainer.interrupted:
            raise
        raise (Terminated() if getattr(trainer._signal_connector, "received_sigterm", False) else KeyboardInterrupt()) from None
    except NonFiniteLossError as exc:
        if last.is_file():
            epoch = torch.load(last, map_location="cpu", weights_only=True).get("epoch", "?")
            good = f"the last good checkpoint is {last} (end of epoch {epoch}); re-running resumes from it"
        else:
            good = "no checkpoint had been saved yet"
        raise AlzmriError(f"{exc}: training stopped; {good}. Check the inputs for NaN voxels or lower --lr") from None

    # End-of-run files come from the callbacks' state, which a resumed run restored from
    # last.ckpt: a run killed after its last epoch writes them on re-run, identical.
    if not trainer.is_global_zero:
        return {}
    table = metrics_writer.write()
    confusion.draw()
    summary = checkpoints.summary()
    result = {"epochs_trained": len(table), **summary, "device": layout.accelerator, "processes": layout.world_size}
    best_loss = run_dir / summary["checkpoints"]["best_loss"] if "best_loss" in summary["checkpoints"] else None
    result.update(log_run_files(loggers, run_dir, str(best_loss) if best_loss else None))
    if config.register_model and best_loss is not None and "mlflow_run_id" in result:  # rank 0, where MLflow logs
        from alzmri.training.registry import register_checkpoint

        result.update(register_checkpoint(config.register_model, best_loss, result["mlflow_run_id"], result["tracking_uri"],
                                          {"preprocess": record["preprocess"], "model_name": config.model, "classes": classes}))  # fmt: skip
        print(f"registered as {result['model_uri']}  (serve it: alzmri serve {result['model_uri']} --tracking-uri {result['tracking_uri']})")
    return result


def _check_resumable(last: Path) -> None:
    """A one-line error for a ``last.ckpt`` that cannot be resumed from (truncated, foreign)."""
    hint = f"delete {last} to start this run over, or pass another --run-name"
    if last.stat().st_size == 0:
        raise AlzmriError(f"{last} is empty (0 bytes), so the run cannot resume from it; {hint}")
    try:
        state = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AlzmriError(f"cannot resume from {last}: {first_line(exc)}; {hint}") from None
    if not isinstance(state, dict) or "state_dict" not in state or "loops" not in state:
        raise AlzmriError(f"{last} is not a training checkpoint of this run; {hint}")
