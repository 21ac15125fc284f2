"""Device choice, --resume, and what the trackers receive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alzmri.utils.errors import AlzmriError

from conftest import train_config


def test_device_auto_falls_back_to_cpu_and_refuses_missing_gpus(monkeypatch) -> None:
    import torch

    from alzmri.training.devices import resolve_accelerator, training_layout

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_accelerator("auto") == "cpu" and resolve_accelerator("cpu") == "cpu"
    with pytest.raises(AlzmriError, match="no CUDA GPU"):
        resolve_accelerator("cuda")
    with pytest.raises(AlzmriError, match="MPS|Metal"):
        resolve_accelerator("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_accelerator("auto") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_accelerator("auto") == "cuda"

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    layout = training_layout("cpu")
    assert (layout.devices, layout.num_nodes, layout.world_size) == (2, 2, 4)
    assert layout.strategy._process_group_backend == "gloo"


@pytest.mark.slow
def test_trackers_get_confusion_matrix_and_best_checkpoint(prepared: dict[str, Path]) -> None:
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from alzmri.training.fit import fit

    run_dir = fit(train_config(prepared, epochs=2, run_name="tracked"))
    result = json.loads((run_dir / "result.json").read_text())
    assert (run_dir / "confusion_matrix_val.png").stat().st_size > 1000

    events = EventAccumulator(result["tensorboard_dir"]).Reload()
    tags = events.Tags()
    assert "val/confusion_matrix" in tags["images"]
    assert {"val_loss", "val_acc", "train_loss"} <= set(tags["scalars"])
    assert any(t.startswith("lr-") for t in tags["scalars"])  # the learning rate, per epoch
    assert len(events.Scalars("val_loss")) == 2

    client = mlflow.tracking.MlflowClient(result["tracking_uri"])
    run = client.get_run(result["mlflow_run_id"])
    assert "lr" in run.data.params and "val_bacc" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix_val.png", "metrics.csv", "config.json", "checkpoints"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == ["checkpoints/best-loss.ckpt"]


def test_wandb_asked_for_but_not_installed_is_a_clear_error(prepared: dict[str, Path], monkeypatch) -> None:
    import importlib.util

    from alzmri.training.tracking import build_loggers

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(AlzmriError, match="pip install wandb"):
        build_loggers(train_config(prepared, trackers=["wandb"]), prepared["root"] / "runs" / "no-wandb")


@pytest.mark.slow
def test_resume_flag_checks_the_run_folder_and_its_settings(prepared: dict[str, Path], tmp_path: Path, capsys) -> None:
    from alzmri.training.config import TrainConfig
    from alzmri.training.fit import fit

    run_dir = fit(train_config(prepared, epochs=1, run_name="to-resume"))
    capsys.readouterr()
    assert fit(TrainConfig(resume=run_dir, progress=False)) == run_dir
    assert "already finished" in capsys.readouterr().out
    with pytest.raises(AlzmriError, match=r"--lr \(stored: 0.001\)"):
        fit(TrainConfig(resume=run_dir, lr=0.5))
    with pytest.raises(AlzmriError, match="not an alzmri run folder"):
        fit(TrainConfig(resume=tmp_path))
    with pytest.raises(AlzmriError, match="CACHE and SPLIT"):
        fit(TrainConfig(cache=prepared["cache"]))
