"""Subject-level splits: no overlap, every scan once, class ratios kept, seeded determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alzmri.data.splits import (
    SPLITS,
    format_summary,
    read_split_dir,
    round_robin_split,
    split_summary,
    stratified_group_kfold,
    subject_labels,
    write_kfold,
    write_splits,
)
from alzmri.utils.errors import AlzmriError

CLASS_SIZES = {"CN": 25, "MCI": 20, "AD": 15}


def synthetic_scans(seed: int = 7) -> pd.DataFrame:
    """60 subjects (25 CN, 20 MCI, 15 AD) with 1-3 sessions each."""
    rng = np.random.default_rng(seed)
    rows, n = [], 0
    for dx, size in CLASS_SIZES.items():
        for _ in range(size):
            n += 1
            for s in range(1, int(rng.integers(1, 4)) + 1):
                rows.append((f"sub-{n:03d}", f"ses-{s:02d}", dx, f"/data/sub-{n:03d}_ses-{s:02d}_T1w.nii.gz"))
    return pd.DataFrame(rows, columns=["participant_id", "session_id", "diagnosis", "path"])


def subjects(df: pd.DataFrame) -> set[str]:
    return set(df["participant_id"])


def test_round_robin_no_overlap_and_every_scan_once():
    scans = synthetic_scans()
    splits = round_robin_split(scans)
    assert set(splits) == set(SPLITS)
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not subjects(splits[a]) & subjects(splits[b]), (a, b)
    combined = pd.concat(splits.values())
    assert len(combined) == len(scans)
    assert sorted(combined["path"]) == sorted(scans["path"])


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (0.6, 0.2, 0.2), (0.7, 0.0, 0.3)])
def test_round_robin_class_ratios(ratios):
    scans = synthetic_scans()
    splits = round_robin_split(scans, ratios=ratios, seed=3)
    for dx in CLASS_SIZES:
        total = (scans["diagnosis"] == dx).sum()
        for name, ratio in zip(SPLITS, ratios, strict=True):
            got = (splits[name]["diagnosis"] == dx).sum()
            # A subject brings up to 3 scans, so a split can overshoot its target by at most 2.
            assert abs(got - ratio * total) <= 2.5, (dx, name, got, ratio * total)


def test_round_robin_deterministic_and_seed_dependent():
    scans = synthetic_scans()
    first, again = round_robin_split(scans, seed=11), round_robin_split(scans, seed=11)
    for name in SPLITS:
        pd.testing.assert_frame_equal(first[name], again[name])
    shuffled = round_robin_split(scans.sample(frac=1, random_state=0), seed=11)
    assert all(subjects(shuffled[n]) == subjects(first[n]) for n in SPLITS)
    others = [round_robin_split(scans, seed=s)["test"] for s in (12, 13)]
    assert any(subjects(o) != subjects(first["test"]) for o in others)


def test_round_robin_all_train_and_bad_ratios():
    scans = synthetic_scans()
    splits = round_robin_split(scans, ratios=(1.0, 0.0, 0.0))
    assert len(splits["train"]) == len(scans) and splits["val"].empty and splits["test"].empty
    for bad in [(0.5, 0.2, 0.2), (1.1, -0.05, -0.05), (0.5, 0.5)]:
        with pytest.raises(AlzmriError, match="ratios"):
            round_robin_split(scans, ratios=bad)


def test_mixed_diagnosis_subject_uses_last_session():
    scans = pd.DataFrame(
        {
            "participant_id": ["sub-1", "sub-1", "sub-1", "sub-2"],
            "session_id": ["ses-10", "ses-2", "ses-1", "ses-1"],
            "diagnosis": ["AD", "MCI", "CN", "CN"],
        }
    )
    assert subject_labels(scans).to_dict() == {"sub-1": "AD", "sub-2": "CN"}
    splits = round_robin_split(scans, ratios=(1.0, 0.0, 0.0))
    assert len(splits["train"]) == 4


def test_kfold_each_subject_tested_once_and_val_differs():
    scans = synthetic_scans()
    folds = stratified_group_kfold(scans, n_folds=5, seed=1)
    assert len(folds) == 5
    tested = [s for fold in folds for s in subjects(fold["test"])]
    assert sorted(tested) == sorted(subjects(scans))
    for k, fold in enumerate(folds):
        assert not subjects(fold["val"]) & subjects(fold["test"])
        assert not subjects(fold["train"]) & (subjects(fold["val"]) | subjects(fold["test"]))
        assert sum(len(fold[n]) for n in SPLITS) == len(scans)
        assert subjects(fold["val"]) == subjects(folds[(k + 1) % 5]["test"])


def test_kfold_stratified_and_deterministic():
    scans = synthetic_scans()
    overall = scans["diagnosis"].value_counts(normalize=True)
    folds = stratified_group_kfold(scans, n_folds=5, seed=1)
    for fold in folds:
        share = fold["test"]["diagnosis"].value_counts(normalize=True)
        for dx in CLASS_SIZES:
            assert abs(share.get(dx, 0.0) - overall[dx]) < 0.15, (dx, share.to_dict())
    again = stratified_group_kfold(scans, n_folds=5, seed=1)
    assert all(subjects(a["test"]) == subjects(b["test"]) for a, b in zip(folds, again, strict=True))
    other = stratified_group_kfold(scans, n_folds=5, seed=2)
    assert any(subjects(a["test"]) != subjects(b["test"]) for a, b in zip(folds, other, strict=True))


def test_kfold_errors():
    scans = synthetic_scans()
    with pytest.raises(AlzmriError, match="at least 3 folds"):
        stratified_group_kfold(scans, n_folds=2)
    with pytest.raises(AlzmriError, match="class AD has only 15 subjects"):
        stratified_group_kfold(scans, n_folds=16)


def test_summary_counts_and_format():
    scans = synthetic_scans()
    splits = round_robin_split(scans)
    summary = split_summary(splits)
    assert list(summary.columns) == ["split", "diagnosis", "scans", "subjects"]
    assert len(summary) == len(SPLITS) * (len(CLASS_SIZES) + 1)
    totals = summary[summary["diagnosis"] == "all"].set_index("split")
    for name in SPLITS:
        assert totals.loc[name, "scans"] == len(splits[name])
        assert totals.loc[name, "subjects"] == splits[name]["participant_id"].nunique()
    ad_train = summary[(summary["split"] == "train") & (summary["diagnosis"] == "AD")].iloc[0]
    assert ad_train["scans"] == (splits["train"]["diagnosis"] == "AD").sum()
    text = format_summary(summary)
    assert text.splitlines()[0].startswith(f"train: {len(splits['train'])} scans")
    assert "AD " in text and len(text.splitlines()) == 3


def test_write_and_read_split_dir(tmp_path):
    scans = synthetic_scans()
    splits = round_robin_split(scans)
    out = write_splits(splits, tmp_path / "split")
    assert sorted(p.name for p in out.iterdir()) == ["summary.tsv", "test.tsv", "train.tsv", "val.tsv"]
    back = read_split_dir(out)
    for name in SPLITS:
        pd.testing.assert_frame_equal(back[name], splits[name], check_dtype=False)
    summary = pd.read_csv(out / "summary.tsv", sep="\t")
    assert summary["scans"].sum() == 2 * len(scans)  # per-diagnosis rows plus the "all" rows


def test_write_kfold(tmp_path):
    scans = synthetic_scans()
    out = tmp_path / "kfold"
    write_kfold(stratified_group_kfold(scans, n_folds=4), out)
    write_kfold(stratified_group_kfold(scans, n_folds=3), out)
    assert sorted(p.name for p in out.iterdir()) == ["fold-0", "fold-1", "fold-2", "summary.tsv"]
    summary = pd.read_csv(out / "summary.tsv", sep="\t")
    assert list(summary.columns[:2]) == ["fold", "split"] and sorted(summary["fold"].unique()) == [0, 1, 2]
    assert "fold 0 train:" in format_summary(summary)
    assert len(pd.concat(read_split_dir(out / "fold-1").values())) == len(scans)


def test_read_split_dir_errors(tmp_path):
    with pytest.raises(AlzmriError, match="does not exist"):
        read_split_dir(tmp_path / "none")
    (tmp_path / "train.tsv").write_text("participant_id\nsub-1\n")
    (tmp_path / "val.tsv").write_text("participant_id\nsub-2\n")
    with pytest.raises(AlzmriError, match="has no test.tsv"):
        read_split_dir(tmp_path)
    (tmp_path / "test.tsv").write_text("subject\nsub-3\n")
    with pytest.raises(AlzmriError, match="test.tsv has no participant_id column"):
        read_split_dir(tmp_path)
