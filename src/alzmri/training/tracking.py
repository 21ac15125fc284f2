"""Experiment trackers: MLflow (local SQLite store by default), TensorBoard and Weights & Biases.

Lightning sends every tracker the hyper-parameters, the per-epoch metrics and (through
``LearningRateMonitor``) the learning rate. After training, :func:`log_run_files` adds what
Lightning does not: the run folder's files, the validation confusion-matrix image and the best
checkpoint.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from alzmri.training.config import TrainConfig
from alzmri.utils.atomic import atomic_write_text
from alzmri.utils.errors import AlzmriError

RUN_FILES = ("config.json", "metrics.csv", "curves.png", "confusion_matrix_val.png")


def quiet_libraries() -> None:
    """Keep the console to our per-epoch lines: Lightning and MLflow set their log levels on import."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero", "alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for message in (".*does not have many workers.*", ".*smaller than the logging interval.*", ".*LeafSpec.*"):
        warnings.filterwarnings("ignore", message=message)
    warnings.filterwarnings("ignore", category=FutureWarning)


def mlflow_logger(config: TrainConfig, run_dir: Path) -> Any:
    """MLflow on ``sqlite:///OUT/mlflow.db`` by default; one MLflow run per run folder (a resumed run continues it)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow  # noqa: F401  (configures its loggers on import; quieten them before the store is created)
    from lightning.pytorch.loggers import MLFlowLogger

    quiet_libraries()
    out = Path(config.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    uri = config.tracking_uri or f"sqlite:///{out / 'mlflow.db'}"
    id_file = run_dir / "mlflow_run_id.txt"
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    logger = MLFlowLogger(
        experiment_name=config.experiment,
        run_name=run_dir.name,
        tracking_uri=uri,
        artifact_location=(out / "mlartifacts").as_uri(),
        run_id=run_id,
    )
    if run_id is None:
        atomic_write_text(id_file, logger.run_id + "\n")
    quiet_libraries()  # mlflow configures its loggers when first used
    return logger


def tensorboard_logger(run_dir: Path) -> Any:
    """Event files in ``RUN/tensorboard`` (view with ``tensorboard --logdir OUT``)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)


def wandb_logger(config: TrainConfig, run_dir: Path) -> Any:
    """Weights & Biases, only when the package is installed; the run id is kept so a resume continues it."""
    if importlib.util.find_spec("wandb") is None:
        raise AlzmriError("--trackers wandb needs the wandb package (pip install wandb), or leave wandb out of --trackers")
    from lightning.pytorch.loggers import WandbLogger

    id_file = run_dir / "wandb_run_id.txt"
    run_id = id_file.read_text().strip() if id_file.is_file() else None
    # log_model=False: Lightning's upload hooks only see ModelCheckpoint; log_run_files uploads ours.
    logger = WandbLogger(project=config.experiment, name=run_dir.name, save_dir=str(run_dir), id=run_id, resume="allow", log_model=False)
    if run_id is None:
        atomic_write_text(id_file, logger.experiment.id + "\n")
    return logger


def build_loggers(config: TrainConfig, run_dir: Path, rank_zero: bool = True) -> list[Any]:
    """The trackers named in ``config.trackers``, in rank 0 only (other DDP processes log nothing:
    two processes creating the same MLflow SQLite store race on its schema)."""
    if not rank_zero:
        return []
    loggers: list[Any] = []
    for name in dict.fromkeys(config.trackers):  # unique, in order
        if name == "mlflow":
            loggers.append(mlflow_logger(config, run_dir))
        elif name == "tensorboard":
            loggers.append(tensorboard_logger(run_dir))
        elif name == "wandb":
            loggers.append(wandb_logger(config, run_dir))
    return loggers


def log_run_files(loggers: list[Any], run_dir: Path, best_checkpoint: str | None) -> dict[str, Any]:
    """Send the run folder's files, the confusion-matrix image and the best checkpoint to each tracker.

    Returns:
        Where each tracker put things (for result.json).
    """
    from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger

    files = [run_dir / name for name in RUN_FILES if (run_dir / name).is_file()]
    figure = run_dir / "confusion_matrix_val.png"
    record: dict[str, Any] = {}
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            for path in files:
                logger.experiment.log_artifact(logger.run_id, str(path))
            if best_checkpoint:
                logger.experiment.log_artifact(logger.run_id, best_checkpoint, artifact_path="checkpoints")
            record.update(mlflow_run_id=logger.run_id, tracking_uri=logger._tracking_uri)
        elif isinstance(logger, TensorBoardLogger):
            writer = logger.experiment
            if figure.is_file():
                import numpy as np
                from PIL import Image

                writer.add_image("val/confusion_matrix", np.asarray(Image.open(figure).convert("RGB")), dataformats="HWC")
            if best_checkpoint:
                writer.add_text("best_checkpoint", best_checkpoint)
            writer.flush()
            record["tensorboard_dir"] = logger.log_dir
        elif type(logger).__name__ == "WandbLogger":
            if figure.is_file():
                logger.log_image(key="val/confusion_matrix", images=[str(figure)])
            if best_checkpoint:
                import wandb

                artifact = wandb.Artifact(f"model-{logger.experiment.id}", type="model")
                artifact.add_file(best_checkpoint, name="best-loss.ckpt")
                logger.experiment.log_artifact(artifact, aliases=["best"])
            record["wandb_run_id"] = logger.experiment.id
    return record
