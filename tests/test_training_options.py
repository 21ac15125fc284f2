"""Optimisers, schedules, precision and early stopping of the trainer."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from alzmri.training.callbacks import EarlyStoppingOnLossOrAccuracy
from alzmri.training.config import TrainConfig
from alzmri.training.module import build_schedule

from conftest import train_config


def lrs(settings: dict, warmup: int, epochs: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    out = build_schedule(optimizer, settings, warmup)
    scheduler = out["lr_scheduler"]["scheduler"] if isinstance(out, dict) else None
    values = []
    for _ in range(epochs):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return values


def test_schedules() -> None:
    assert lrs({"scheduler": "none"}, 0, 3) == [1.0, 1.0, 1.0]
    warm = lrs({"scheduler": "none"}, 2, 4)
    assert warm[0] == pytest.approx(0.1) and warm[2:] == [pytest.approx(1.0)] * 2
    cosine = lrs({"scheduler": "cosine", "cosine_t0": 5}, 0, 16)
    assert cosine[0] == 1.0 and cosine[4] < 0.2 and cosine[5] == pytest.approx(1.0)  # restart after 5 epochs
    assert cosine[15] == pytest.approx(1.0)  # the second cycle lasts 10 epochs
    steps = lrs({"scheduler": "multistep", "milestones": [3, 5], "lr_gamma": 0.1}, 1, 7)
    assert steps[0] == pytest.approx(0.1) and steps[2] == pytest.approx(1.0)
    assert steps[3] == pytest.approx(0.1) and steps[5] == pytest.approx(0.01)
    plateau = build_schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), {"scheduler": "plateau"}, 0)
    assert plateau["lr_scheduler"]["monitor"] == "val_loss"


def test_plateau_with_warmup_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="warmup"):
        TrainConfig(cache=tmp_path, split=tmp_path, scheduler="plateau", warmup_epochs=2)


def test_early_stopping_waits_for_both_loss_and_accuracy() -> None:
    stopper = EarlyStoppingOnLossOrAccuracy(patience=2)
    trainer = SimpleNamespace(sanity_checking=False, should_stop=False, callback_metrics={})
    history = [(1.0, 0.5), (0.9, 0.5), (0.95, 0.6), (0.95, 0.6), (0.96, 0.55), (0.97, 0.5)]
    stopped_at = None
    for epoch, (loss, acc) in enumerate(history):
        trainer.callback_metrics = {"val_loss": torch.tensor(loss), "val_acc": torch.tensor(acc)}
        stopper.on_validation_end(trainer, None)
        if trainer.should_stop and stopped_at is None:
            stopped_at = epoch
    # loss stops improving after epoch 1, accuracy after epoch 2: both stale for 2 epochs at epoch 4.
    assert stopped_at == 4
    assert EarlyStoppingOnLossOrAccuracy(2).state_dict()["since_loss"] == 0


@pytest.mark.slow
def test_sgd_cosine_smoothing_clipping_accumulation_bf16(prepared: dict[str, Path]) -> None:
    from alzmri.training.fit import fit

    run_dir = fit(train_config(prepared, epochs=2, optimizer="sgd", scheduler="cosine", cosine_t0=1, label_smoothing=0.1,
                               grad_clip=1.0, accumulate=2, batch_size=2, precision="bf16-mixed", warmup_epochs=1, run_name="options"))
    history = pd.read_csv(run_dir / "metrics.csv")
    assert list(history["epoch"]) == [0, 1] and history["train_loss"].notna().all()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["compact-augment-dropout-cosine", "liu2022-88"])
def test_crashed_run_resumes_to_the_same_weights(request, monkeypatch, variant) -> None:
    from alzmri.data.dataset import EpochSeededSampler
    from alzmri.io.checkpoint import read_checkpoint
    from alzmri.training.fit import fit

    # Every source of randomness at once: shuffling, augmentation, dropout, and a schedule.
    settings = dict(augment=True, dropout=0.3, scheduler="cosine", cosine_t0=2, epochs=4)
    if variant.startswith("liu2022"):  # the paper's geometry (instance norm, dilations) at its smallest input
        prepared = request.getfixturevalue("prepared88")
        settings |= dict(model="liu2022", width=1, epochs=3, age_encoding=True)
    else:
        prepared = request.getfixturevalue("prepared")
    reference = read_checkpoint(fit(train_config(prepared, run_name=f"whole-{variant}", **settings)) / "checkpoints" / "last.ckpt")["state_dict"]

    original = EpochSeededSampler.set_epoch

    def crash_at_epoch_2(self, epoch):
        if epoch == 2:
            raise RuntimeError("simulated crash")
        original(self, epoch)

    monkeypatch.setattr(EpochSeededSampler, "set_epoch", crash_at_epoch_2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(train_config(prepared, run_name=f"crashed-{variant}", **settings))
    run_dir = prepared["root"] / "runs" / f"crashed-{variant}"
    assert not (run_dir / "result.json").exists() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    monkeypatch.setattr(EpochSeededSampler, "set_epoch", original)
    if variant.startswith("liu2022"):  # 'alzmri train --resume RUN': the stored settings, optimiser, schedule, epoch, RNG
        from alzmri.training.config import TrainConfig

        again = TrainConfig(resume=run_dir, progress=False, threads=1)
    else:  # re-running the same command
        again = train_config(prepared, run_name=f"crashed-{variant}", **settings)
    resumed = read_checkpoint(fit(again) / "checkpoints" / "last.ckpt")["state_dict"]
    assert list(pd.read_csv(run_dir / "metrics.csv")["epoch"]) == list(range(settings["epochs"]))
    for key, value in reference.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)


def test_named_augmentations_keep_shape_and_are_seeded() -> None:
    from alzmri.training.augment import training_transform
    from alzmri.training.config import Augmentation

    names = list(Augmentation.__args__)
    transform = training_transform(True, names)
    assert [type(t).__name__ for t in transform.transforms][:3] == ["RandomNoise", "RandomGamma", "RandomFlip"]
    volume = torch.randn(1, 20, 20, 20)
    torch.manual_seed(0)
    a = transform(volume)
    torch.manual_seed(0)
    b = transform(volume)
    assert a.shape == volume.shape and torch.equal(a, b) and torch.isfinite(a).all()
    assert training_transform(False, names) is None and training_transform(True, []) is None
    with pytest.raises(ValidationError, match="augmentations"):
        TrainConfig(cache=Path("c"), split=Path("s"), augmentations=["mixup"])


@pytest.mark.slow
def test_age_encoding_trains_evaluates_and_needs_ages(prepared: dict[str, Path], tmp_path: Path) -> None:
    from alzmri.evaluation.config import EvaluateConfig
    from alzmri.evaluation.evaluate import evaluate
    from alzmri.preprocessing.cache import MANIFEST_FILE
    from alzmri.training.fit import fit
    from alzmri.utils.errors import AlzmriError

    run_dir = fit(train_config(prepared, epochs=1, age_encoding=True, run_name="age"))
    metrics = evaluate(EvaluateConfig(checkpoint=run_dir / "checkpoints" / "last.ckpt", cache=prepared["cache"], split=prepared["split"], out=tmp_path / "eval"))
    assert metrics["n_scans"] > 0 and 0.0 <= metrics["balanced_accuracy"] <= 1.0

    # The same cache without ages: refused before training, with the reason.
    import shutil

    no_age = tmp_path / "cache"
    shutil.copytree(prepared["cache"], no_age)
    table = pd.read_csv(no_age / MANIFEST_FILE, sep="\t", dtype=str)
    table["age"] = ""
    table.to_csv(no_age / MANIFEST_FILE, sep="\t", index=False)
    with pytest.raises(AlzmriError, match="uses age but .* have none"):
        fit(train_config(prepared, cache=no_age, epochs=1, age_encoding=True, run_name="no-age"))
    with pytest.raises(AlzmriError, match="has no age input"):
        fit(train_config(prepared, model="r3d_18", epochs=1, age_encoding=True, run_name="r3d-age"))


@pytest.mark.slow
def test_nan_batch_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(prepared: dict[str, Path], monkeypatch) -> None:
    from typer.testing import CliRunner

    from alzmri.cli.main import app
    from alzmri.data.dataset import CachedVolumeDataset
    from alzmri.io.checkpoint import read_checkpoint

    original = CachedVolumeDataset.__getitem__

    def nan_from_epoch_1(self, key):
        volume, *rest = original(self, key)
        if isinstance(key, tuple) and key[1] >= 1:  # training items carry their epoch
            volume = torch.full_like(volume, float("nan"))
        return (volume, *rest)

    monkeypatch.setattr(CachedVolumeDataset, "__getitem__", nan_from_epoch_1)
    out = prepared["root"] / "runs"
    args = ["train", str(prepared["cache"]), str(prepared["split"]), "--out", str(out), "--run-name", "nan", "--epochs", "3",
            "--batch-size", "4", "--threads", "1", "--no-progress", "--trackers", "mlflow"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 2
    last = out / "nan" / "checkpoints" / "last.ckpt"
    message = done.stderr.strip()
    assert message.startswith("error: training loss is nan at epoch 1, step ") and len(message.splitlines()) == 1
    assert f"the last good checkpoint is {last} (end of epoch 0)" in message
    state = read_checkpoint(last)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert not (out / "nan" / "result.json").exists()
