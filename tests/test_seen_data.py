"""The checkpoint knows its training data; scoring commands catch scans it has seen; broken checkpoints are named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from alzmri.data.provenance import find_seen
from alzmri.io.bids import load_scans
from alzmri.io.checkpoint import read_checkpoint
from alzmri.utils.errors import AlzmriError

from conftest import save_nifti, train_config
from test_cli_errors import alzmri

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(prepared: dict[str, Path]) -> Path:
    from alzmri.training.fit import fit

    return fit(train_config(prepared, epochs=1, run_name="seen", trackers=[]))


def remade_split(prepared: dict[str, Path], folder: Path, moved: int = 3) -> list[str]:
    """A split folder whose test set also holds ``moved`` of the model's training subjects (its own audit passes)."""
    shutil.copytree(prepared["split"], folder)
    train = pd.read_csv(folder / "train.tsv", sep="\t")
    subjects = list(dict.fromkeys(train["participant_id"]))[:moved]
    leaving = train["participant_id"].isin(subjects)
    test = pd.read_csv(folder / "test.tsv", sep="\t")
    pd.concat([test, train[leaving]]).to_csv(folder / "test.tsv", sep="\t", index=False)
    train[~leaving].to_csv(folder / "train.tsv", sep="\t", index=False)
    return subjects


def test_the_checkpoint_stores_its_train_and_val_scans(prepared, run) -> None:
    record = read_checkpoint(run / "checkpoints" / "best-loss.ckpt")["hparams"]["training_data"]
    for part in ("train", "val"):
        split = pd.read_csv(prepared["split"] / f"{part}.tsv", sep="\t")
        assert sorted(record[part]["participant_id"]) == sorted(split["participant_id"])
        assert all(len(h) == 16 for h in record[part]["image_hash"])
        assert all(len(h) == 16 for h in record[part]["source_hash"]) or "source_hash" not in pd.read_csv(prepared["cache"] / "manifest.tsv", sep="\t")


def test_evaluate_refuses_a_remade_split_holding_training_subjects(prepared, run, tmp_path) -> None:
    subjects = remade_split(prepared, tmp_path / "split2")
    ckpt = run / "checkpoints" / "best-loss.ckpt"
    assert alzmri("audit", tmp_path / "split2").returncode == 0  # the split alone looks clean
    refused = alzmri("evaluate", ckpt, prepared["cache"], tmp_path / "split2", "--out", tmp_path / "eval")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "the model trained on" in refused.stderr and all(s in refused.stderr for s in subjects), refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    allowed = alzmri("evaluate", ckpt, prepared["cache"], tmp_path / "split2", "--out", tmp_path / "eval", "--allow-seen")
    assert allowed.returncode == 0, allowed.stderr
    assert "LEAKAGE" in allowed.stdout
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "LEAKAGE" in html and subjects[0] in html and "Leakage audit passed" not in html
    # the split it was trained with passes, and says the model's data was checked
    ok = alzmri("evaluate", ckpt, prepared["cache"], prepared["split"], "--out", tmp_path / "eval-ok")
    assert ok.returncode == 0, ok.stderr
    assert "none the model was trained or validated on" in (tmp_path / "eval-ok" / "report.html").read_text()
    # 'alzmri report --checkpoint' flags the same rows of a table made elsewhere
    table = pd.read_csv(tmp_path / "eval" / "predictions.tsv", sep="\t").drop(columns=["image_hash"])
    table.to_csv(tmp_path / "other-tool.tsv", sep="\t", index=False)
    flagged = alzmri("report", tmp_path / "other-tool.tsv", "--checkpoint", ckpt, "--out", tmp_path / "rep")
    assert flagged.returncode == 0 and "LEAKAGE" in flagged.stdout, flagged.stdout + flagged.stderr
    assert "LEAKAGE" not in alzmri("report", tmp_path / "other-tool.tsv", "--out", tmp_path / "rep2").stdout


def test_ids_alone_do_not_match_scans_of_another_cohort(run) -> None:
    record = read_checkpoint(run / "checkpoints" / "best-loss.ckpt")["hparams"]["training_data"]
    pid = record["train"]["participant_id"][0]
    other = pd.DataFrame({"participant_id": [pid], "session_id": ["ses-01"], "image_hash": ["0" * 16]})
    assert find_seen(record, other, cache="/elsewhere").empty  # another cohort's sub-001
    same_image = other.assign(image_hash=[record["train"]["image_hash"][0]], participant_id=["renamed"])
    assert list(find_seen(record, same_image)["seen_by"]) == ["image"]  # a copy under another id


def test_predict_marks_training_scans_and_skips_a_bad_one(prepared, run, tmp_path) -> None:
    scans = load_scans(prepared["bids"])
    record = read_checkpoint(run / "checkpoints" / "best-loss.ckpt")["hparams"]["training_data"]
    seen_path = scans[scans["participant_id"] == record["train"]["participant_id"][0]]["path"].iloc[0]
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    fresh = save_nifti(tmp_path / "fresh.nii.gz", torch.rand(24, 28, 22).numpy())
    result = alzmri("predict", run / "checkpoints" / "best-loss.ckpt", seen_path, bad, fresh, "--out", tmp_path / "p.tsv")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "1 of 3 scans could not be predicted" in result.stderr and "bad.nii.gz" in result.stderr
    table = pd.read_csv(tmp_path / "p.tsv", sep="\t", keep_default_na=False)
    assert len(table) == 2 and list(table["seen_in_training"]) == ["train", ""]
    assert "warning:" in result.stdout and "the model trained on" in result.stdout
    assert list(pd.read_csv(tmp_path / "p.failures.tsv", sep="\t")["path"]) == [str(bad)]


def test_broken_checkpoints_get_one_line_reasons(prepared, run, tmp_path) -> None:
    from alzmri.evaluation.predict import load_classifier

    source = run / "checkpoints" / "best-loss.ckpt"
    (tmp_path / "empty.ckpt").touch()
    with pytest.raises(AlzmriError, match=r"is empty \(0 bytes\)"):
        read_checkpoint(tmp_path / "empty.ckpt")
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    key = next(k for k in ckpt["state_dict"] if k.endswith("weight") and ckpt["state_dict"][k].ndim == 2)
    wrong = {**ckpt, "state_dict": {**ckpt["state_dict"], key: torch.zeros(7, 3)}}
    torch.save(wrong, tmp_path / "shape.ckpt")
    with pytest.raises(AlzmriError, match=rf"{key.removeprefix('model.')} has shape \[7, 3\] in the file but"):
        load_classifier(tmp_path / "shape.ckpt")
    missing = {**ckpt, "state_dict": {k: v for k, v in ckpt["state_dict"].items() if k != key}}
    torch.save(missing, tmp_path / "missing.ckpt")
    with pytest.raises(AlzmriError, match=rf"1 missing keys \({key.removeprefix('model.')}\)"):
        load_classifier(tmp_path / "missing.ckpt")
    hp = ckpt["hyper_parameters"]
    more = {**ckpt, "hyper_parameters": {**hp, "classes": ["CN", "MCI", "AD"]}}
    torch.save(more, tmp_path / "classes.ckpt")
    with pytest.raises(AlzmriError, match=r"names 3 classes .* but its model has 2 outputs"):
        load_classifier(tmp_path / "classes.ckpt")
    result = alzmri("evaluate", tmp_path / "shape.ckpt", prepared["cache"], prepared["split"], "--out", tmp_path / "e")
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_a_truncated_last_checkpoint_is_named_on_resume(prepared, run, tmp_path) -> None:
    copy = tmp_path / "runs" / "seen"
    shutil.copytree(run, copy)
    (copy / "result.json").unlink()
    (copy / "checkpoints" / "last.ckpt").write_bytes(b"")
    result = alzmri("train", "--resume", copy, "--no-progress")
    assert result.returncode != 0 and "is empty (0 bytes), so the run cannot resume from it" in result.stderr, result.stderr


def test_a_refused_start_leaves_no_run_folder(prepared, tmp_path) -> None:
    (tmp_path / "weights.pt").write_bytes(b"junk")
    result = alzmri("train", prepared["cache"], prepared["split"], "--out", tmp_path / "runs", "--run-name", "refused",
                    "--pretrained", tmp_path / "weights.pt", "--epochs", "1", "--no-progress", "--trackers", "")  # fmt: skip
    assert result.returncode != 0 and "cannot read weights" in result.stderr, result.stderr
    assert not (tmp_path / "runs" / "refused").exists()


def test_train_refuses_a_val_split_without_a_class_and_labels_that_differ_from_the_cache(prepared, tmp_path) -> None:
    no_ad = tmp_path / "no-ad"
    shutil.copytree(prepared["split"], no_ad)
    val = pd.read_csv(no_ad / "val.tsv", sep="\t")
    val[val["diagnosis"] != "AD"].to_csv(no_ad / "val.tsv", sep="\t", index=False)
    result = alzmri("train", prepared["cache"], no_ad, "--out", tmp_path / "runs", "--epochs", "1", "--no-progress", "--trackers", "")
    assert result.returncode != 0 and "the val split of" in result.stderr and "has no scans of class AD" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()
    relabelled = tmp_path / "relabelled"
    shutil.copytree(prepared["split"], relabelled)
    train = pd.read_csv(relabelled / "train.tsv", sep="\t")
    train.loc[0, "diagnosis"] = "AD" if train.loc[0, "diagnosis"] == "CN" else "CN"
    train.to_csv(relabelled / "train.tsv", sep="\t", index=False)
    result = alzmri("train", prepared["cache"], relabelled, "--out", tmp_path / "runs", "--epochs", "1", "--no-progress", "--trackers", "")
    assert result.returncode != 0 and "another diagnosis in the cache manifest" in result.stderr, result.stderr
