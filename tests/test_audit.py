"""Leakage audit: clean splits pass; a subject or scan in two splits is found and named."""

from __future__ import annotations

import pandas as pd
import pytest

from alzmri.data.audit import Leak, assert_no_leakage, audit_split_dir, find_leaks
from alzmri.data.splits import round_robin_split, stratified_group_kfold, write_kfold, write_splits
from alzmri.utils.errors import AlzmriError


def table(*rows: tuple[str, str]) -> pd.DataFrame:
    """Scan rows from (participant_id, path) pairs."""
    return pd.DataFrame(
        [(pid, f"ses-{i}", "CN", path) for i, (pid, path) in enumerate(rows)],
        columns=["participant_id", "session_id", "diagnosis", "path"],
    )


def scans(n_subjects: int = 30) -> pd.DataFrame:
    rows = []
    for n in range(n_subjects):
        for s in range(1 + n % 2):
            rows.append((f"sub-{n:03d}", f"ses-{s}", ("CN", "MCI", "AD")[n % 3], f"/d/{n}_{s}.nii.gz"))
    return pd.DataFrame(rows, columns=["participant_id", "session_id", "diagnosis", "path"])


def test_clean_split_passes(tmp_path):
    splits = round_robin_split(scans())
    assert find_leaks(splits) == []
    assert_no_leakage(splits, "memory")
    assert audit_split_dir(write_splits(splits, tmp_path / "split")) == []


def test_subject_in_train_and_test_is_found_and_named(tmp_path):
    splits = {
        "train": table(("sub-001", "/a1"), ("sub-003", "/a3")),
        "val": table(("sub-002", "/a2"), ("sub-010", "/b10")),
        "test": table(("sub-003", "/c3"), ("sub-010", "/c10"), ("sub-004", "/a4")),
    }
    assert find_leaks(splits) == [Leak("sub-003", ("train", "test")), Leak("sub-010", ("val", "test"))]
    with pytest.raises(AlzmriError) as info:
        assert_no_leakage(splits, "runs/split")
    assert str(info.value) == (
        "leaky split in runs/split: subject sub-003 is in train and test; subject sub-010 is in val and test"
    )
    write_splits(splits, tmp_path / "leaky")
    assert [leak.participant_id for leak in audit_split_dir(tmp_path / "leaky")] == ["sub-003", "sub-010"]


def test_same_scan_under_two_subjects_is_a_leak():
    splits = {
        "train": table(("sub-001", "/scan.nii.gz")),
        "val": table(("sub-002", "/other.nii.gz")),
        "test": table(("sub-009", "/./scan.nii.gz")),
    }
    assert find_leaks(splits) == [Leak("sub-001,sub-009", ("train", "test"), "/scan.nii.gz")]
    with pytest.raises(AlzmriError, match=r"scan /scan.nii.gz \(subjects sub-001,sub-009\) is in train and test"):
        assert_no_leakage(splits, "x")


def test_kfold_folder_audit(tmp_path):
    out = write_kfold(stratified_group_kfold(scans(), n_folds=3, seed=0), tmp_path / "kfold")
    assert audit_split_dir(out) == []
    val = pd.read_csv(out / "fold-1" / "val.tsv", sep="\t", dtype=str)
    train = pd.read_csv(out / "fold-1" / "train.tsv", sep="\t", dtype=str)
    pd.concat([train, val.iloc[:1]]).to_csv(out / "fold-1" / "train.tsv", sep="\t", index=False)
    leaks = audit_split_dir(out)
    assert leaks == [Leak(val["participant_id"].iloc[0], ("fold-1/train", "fold-1/val"))]


def test_audit_missing_folder(tmp_path):
    with pytest.raises(AlzmriError, match="does not exist"):
        audit_split_dir(tmp_path / "nothing")
