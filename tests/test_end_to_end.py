"""One tiny preprocess → split → train → evaluate → predict run, plus training safeguards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from alzmri.evaluation.config import EvaluateConfig, PredictConfig
from alzmri.evaluation.evaluate import evaluate, predict
from alzmri.io.bids import load_scans
from alzmri.io.checkpoint import read_checkpoint
from alzmri.training.fit import fit
from alzmri.utils.errors import AlzmriError

from conftest import train_config
from test_cli_errors import alzmri

pytestmark = pytest.mark.slow


def test_train_evaluate_predict(prepared: dict[str, Path]) -> None:
    run_dir = fit(train_config(prepared))
    for name in ("config.json", "metrics.csv", "curves.png", "result.json", "checkpoints/last.ckpt", "checkpoints/best-acc.ckpt", "checkpoints/best-loss.ckpt"):
        assert (run_dir / name).is_file(), name
    history = pd.read_csv(run_dir / "metrics.csv")
    assert list(history["epoch"]) == [0, 1, 2, 3]
    assert history[["train_loss", "val_loss", "val_acc", "val_bacc"]].notna().all().all()
    assert (prepared["root"] / "runs" / "mlflow.db").is_file()

    ckpt = read_checkpoint(run_dir / "checkpoints" / "best-loss.ckpt")  # weights_only=True inside
    assert ckpt["hparams"]["classes"] == ["CN", "AD"]
    assert ckpt["hparams"]["preprocess"]["size"] == 16

    metrics = evaluate(EvaluateConfig(checkpoint=run_dir / "checkpoints" / "best-loss.ckpt", cache=prepared["cache"], split=prepared["split"]))
    out = Path(metrics["out"])
    for name in ("predictions.tsv", "metrics.json", "report.html", "confusion_matrix.png", "roc.png", "pr.png", "calibration.png", "predictive_values.png"):
        assert (out / name).is_file(), name
    preds = pd.read_csv(out / "predictions.tsv", sep="\t")
    split_subjects = {s: set(pd.read_csv(prepared["split"] / f"{s}.tsv", sep="\t")["participant_id"]) for s in ("val", "test")}
    assert {s: set(part["participant_id"]) for s, part in preds.groupby("split")} == split_subjects  # no training subject
    assert preds[["prob_CN", "prob_AD"]].sum(axis=1).round(4).eq(1).all() and preds["image_hash"].str.len().eq(16).all()
    stored = json.loads((out / "metrics.json").read_text())
    test = preds[preds["split"] == "test"]
    assert stored["n_scans"] == len(test) and sum(map(sum, stored["scan_level"]["confusion_matrix"])) == len(test)
    assert stored["scan_level"]["balanced_accuracy"] == pytest.approx(metrics["balanced_accuracy"])
    assert stored["intervals"]["scan_level"]["balanced_accuracy"]["n_resamples"] == 2000
    assert stored["clinical"]["threshold"]["chosen_on"].startswith("split 'val'") and not stored["audit"]["leaky"]
    assert stored["small_sample"] == {"CN": 2, "AD": 2}  # 4 test subjects: the report warns

    # predict needs only the checkpoint: raw NIfTI in, same preprocessing applied
    scan = load_scans(prepared["bids"])["path"].iloc[0]
    table = predict(PredictConfig(checkpoint=run_dir / "checkpoints" / "best-loss.ckpt", inputs=[Path(scan)], out=prepared["root"] / "p.tsv"))
    assert len(table) == 1 and table["predicted"].iloc[0] in ("CN", "AD")
    assert (prepared["root"] / "p.tsv").is_file()

    # the CLI takes any number of scans
    scans = list(load_scans(prepared["bids"])["path"].iloc[:3])
    result = alzmri("predict", run_dir / "checkpoints" / "best-loss.ckpt", *scans, "--out", prepared["root"] / "p3.tsv")
    assert result.returncode == 0, result.stderr
    assert len(pd.read_csv(prepared["root"] / "p3.tsv", sep="\t")) == 3


def test_training_is_repeatable_and_rerun_resumes(prepared: dict[str, Path]) -> None:
    a = fit(train_config(prepared, epochs=2, run_name="rep-a"))
    b = fit(train_config(prepared, epochs=2, run_name="rep-b"))
    cols = ["train_loss", "val_loss"]
    pd.testing.assert_frame_equal(pd.read_csv(a / "metrics.csv")[cols], pd.read_csv(b / "metrics.csv")[cols])
    mtime = (a / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    assert fit(train_config(prepared, epochs=2, run_name="rep-a")) == a  # finished: not retrained
    assert (a / "checkpoints" / "last.ckpt").stat().st_mtime_ns == mtime
    with pytest.raises(AlzmriError, match="other settings"):
        fit(train_config(prepared, epochs=3, run_name="rep-a"))


def test_train_refuses_a_leaky_split(prepared: dict[str, Path], tmp_path: Path) -> None:
    leaky = tmp_path / "leaky"
    shutil.copytree(prepared["split"], leaky)
    train = pd.read_csv(leaky / "train.tsv", sep="\t")
    test = pd.read_csv(leaky / "test.tsv", sep="\t")
    pd.concat([test, train.head(1)]).to_csv(leaky / "test.tsv", sep="\t", index=False)
    leaked = train["participant_id"].iloc[0]
    result = alzmri("train", prepared["cache"], leaky, "--out", tmp_path / "runs", "--epochs", "1", "--no-progress")
    assert result.returncode != 0
    assert leaked in result.stderr and "leak" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


def test_checkpoint_loading_rejects_foreign_files(tmp_path: Path) -> None:
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(AlzmriError, match="not an alzmri classifier checkpoint"):
        read_checkpoint(tmp_path / "foreign.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(AlzmriError, match="cannot read checkpoint"):
        read_checkpoint(tmp_path / "junk.ckpt")
