"""A crashed, killed or moved run resumes to exactly the files of an uninterrupted run."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import train_config

# Every source of randomness, and early stopping that ends the run before --epochs.
# On the tiny cohort this stops after epoch 3, whose val loss is above epoch 2's.
SETTINGS = dict(augment=True, dropout=0.3, scheduler="cosine", cosine_t0=2, epochs=12, patience=2, lr=0.003, trackers=[])
CHECKPOINTS = ("last.ckpt", "best-acc.ckpt", "best-loss.ckpt")


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_run(a: Path, b: Path) -> None:
    """Same checkpoints (weights, epoch, callback state), metrics.csv and result.json; figures made."""
    for name in CHECKPOINTS:
        ca, cb = _state(a / "checkpoints" / name), _state(b / "checkpoints" / name)
        assert ca["epoch"] == cb["epoch"], name
        assert ca["callbacks"] == cb["callbacks"], name  # best scores, early stopping, metric rows
        for key, value in ca["state_dict"].items():
            torch.testing.assert_close(cb["state_dict"][key], value, rtol=0, atol=0, msg=f"{name}: {key}")
    pd.testing.assert_frame_equal(pd.read_csv(a / "metrics.csv"), pd.read_csv(b / "metrics.csv"))
    assert json.loads((a / "result.json").read_text()) == json.loads((b / "result.json").read_text())
    for figure in ("curves.png", "confusion_matrix_val.png"):
        assert (b / figure).is_file(), figure
    assert not list(b.rglob(".tmp-*"))


def crashed_run(prepared: dict[str, Path], name: str, epoch: int) -> Path:
    """The run folder of a run that crashed at the start of ``epoch`` (after that epoch's predecessor was checkpointed)."""
    from alzmri.data.dataset import EpochSeededSampler
    from alzmri.training.fit import fit

    original = EpochSeededSampler.set_epoch

    def crash(self, e):
        if e == epoch:
            raise RuntimeError("simulated crash")
        original(self, e)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpochSeededSampler, "set_epoch", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            fit(train_config(prepared, run_name=name, **SETTINGS))
    return prepared["root"] / "runs" / name


@pytest.fixture(scope="module")
def whole(prepared: dict[str, Path]) -> Path:
    from alzmri.training.fit import fit

    run = fit(train_config(prepared, run_name="exact-whole", **SETTINGS))
    result = json.loads((run / "result.json").read_text())
    # The settings must exercise early stopping and a best epoch before the last one.
    assert result["epochs_trained"] < SETTINGS["epochs"], result
    assert result["best_val_loss_epoch"] < result["epochs_trained"] - 1, result
    return run


@pytest.mark.slow
@pytest.mark.parametrize("crash_epoch", [1, 3])
def test_a_crash_at_any_epoch_resumes_to_identical_files(prepared, whole, crash_epoch) -> None:
    from alzmri.training.fit import fit

    run = crashed_run(prepared, f"exact-crash-{crash_epoch}", crash_epoch)
    assert_same_run(whole, fit(train_config(prepared, run_name=run.name, **SETTINGS)))


@pytest.mark.slow
def test_a_run_killed_after_its_last_checkpoint_finishes_its_files_on_rerun(prepared, whole, monkeypatch) -> None:
    from alzmri.training.callbacks import BestValidationConfusion
    from alzmri.training.fit import fit

    def killed(self):
        raise RuntimeError("killed while drawing")

    monkeypatch.setattr(BestValidationConfusion, "draw", killed)
    with pytest.raises(RuntimeError, match="killed while drawing"):
        fit(train_config(prepared, run_name="exact-end", **SETTINGS))
    monkeypatch.undo()
    run = prepared["root"] / "runs" / "exact-end"
    assert not (run / "result.json").exists()
    assert_same_run(whole, fit(train_config(prepared, run_name="exact-end", **SETTINGS)))
    # A finished run whose result.json was deleted redoes its end-of-run files (no TypeError).
    (run / "result.json").unlink()
    (run / "curves.png").unlink()
    assert_same_run(whole, fit(train_config(prepared, run_name="exact-end", **SETTINGS)))


@pytest.mark.slow
def test_a_moved_run_resumes_with_its_best_checkpoints(prepared, whole, tmp_path) -> None:
    from alzmri.training.config import TrainConfig
    from alzmri.training.fit import fit

    moved = tmp_path / "elsewhere" / "exact-moved"
    shutil.move(crashed_run(prepared, "exact-moved", 3), moved)
    assert_same_run(whole, fit(TrainConfig(resume=moved, progress=False, threads=1)))
    assert str(prepared["root"] / "runs") not in (moved / "result.json").read_text()  # nothing points back


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_killed_mid_training_resumes_to_identical_files(prepared, whole, tmp_path, how) -> None:
    """A real SIGKILL (no clean-up can run) or SIGTERM of 'alzmri train', then the same command again."""
    cmd = [sys.executable, "-m", "alzmri", "train", str(prepared["cache"]), str(prepared["split"]), "--out", str(tmp_path),
           "--run-name", "killed", "--model", "liu_cnn_compact", "--batch-size", "4", "--lr", "0.003", "--threads", "1", "--no-progress", "--trackers", "",
           "--augment", "--dropout", "0.3", "--scheduler", "cosine", "--cosine-t0", "2", "--epochs", "12", "--patience", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(how)
    _, stderr = proc.communicate(timeout=120)
    assert last.is_file() and not (tmp_path / "killed" / "result.json").exists(), "the run ended before it could be killed"
    if how == signal.SIGTERM:
        assert proc.returncode == 143 and "terminated (SIGTERM); re-run the same command to resume" in stderr, stderr[-1000:]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert_same_run(whole, tmp_path / "killed")


@pytest.mark.slow
def test_a_run_checkpointed_by_the_older_callbacks_resumes_to_identical_files(prepared, whole) -> None:
    """last.ckpt of a run started before RunCheckpoints: ModelCheckpoint scores inside, metric rows only in metrics.csv."""
    from alzmri.training.fit import fit

    crashed_run(prepared, "exact-old", 3)
    last = prepared["root"] / "runs" / "exact-old" / "checkpoints" / "last.ckpt"
    ckpt = _state(last)
    states = ckpt["callbacks"]
    best = states.pop("RunCheckpoints")["best"]
    states.pop("EpochMetricsWriter")
    for metric, name, mode in (("val_acc", "best_acc", "max"), ("val_loss", "best_loss", "min")):
        states[f"ModelCheckpoint{{'monitor': '{metric}', 'mode': '{mode}', 'every_n_train_steps': 0}}"] = {
            "monitor": metric, "best_model_score": torch.tensor(best[name]["score"]), "best_model_path": f"/old/place/{name}.ckpt"}  # fmt: skip
    torch.save(ckpt, last)
    assert_same_run(whole, fit(train_config(prepared, run_name="exact-old", **SETTINGS)))
