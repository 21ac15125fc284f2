"""Subject-level splits: no overlap, every scan once, class ratios kept, seeded determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alzmri.data.splits import (
    SPLITS,
    diagnosis_change_warning,
    diagnosis_changes,
    format_summary,
    missing_class_warnings,
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
    (tmp_path / "test.tsv").write_text("participant_id\tdiagnosis\tdiagnosis\nsub-3\tCN\tAD\n")
    with pytest.raises(AlzmriError) as info:
        read_split_dir(tmp_path)
    assert str(info.value) == f"split file {tmp_path / 'test.tsv'} has the column 'diagnosis' twice (columns 2 and 3); keep one"


# --- issue 13: checks that speak ---------------------------------------------------------------


def cohort(sizes: dict[str, int], scans_per_subject: int = 1) -> pd.DataFrame:
    """``sizes[dx]`` subjects per diagnosis, each with ``scans_per_subject`` sessions."""
    rows, n = [], 0
    for dx, size in sizes.items():
        for _ in range(size):
            n += 1
            rows += [(f"sub-{n:03d}", f"ses-{s:02d}", dx) for s in range(1, scans_per_subject + 1)]
    return pd.DataFrame(rows, columns=["participant_id", "session_id", "diagnosis"])


def test_subject_whose_diagnosis_changed_is_split_as_one_group_and_warned_about():
    scans = synthetic_scans()
    scans.loc[(scans["participant_id"] == "sub-001") & (scans["session_id"] == "ses-01"), "diagnosis"] = "MCI"
    extra = pd.DataFrame([("sub-001", "ses-10", "AD", "/x"), ("sub-001", "ses-9", "AD", "/y")], columns=scans.columns)
    scans = pd.concat([scans, extra], ignore_index=True)
    assert diagnosis_changes(scans) == {"sub-001": ["MCI", "CN", "AD"]}
    assert subject_labels(scans)["sub-001"] == "AD"
    assert diagnosis_change_warning(scans) == (
        "1 subject has different diagnoses in different sessions (sub-001: MCI→CN→AD); "
        "each is split as one subject, stratified by its last diagnosis"
    )
    splits = round_robin_split(scans)
    assert [name for name in SPLITS if "sub-001" in subjects(splits[name])] in (["train"], ["val"], ["test"])
    assert sum(len(s) for s in splits.values()) == len(scans)
    assert diagnosis_change_warning(synthetic_scans()) is None


def test_diagnosis_change_warning_names_five_and_counts_the_rest():
    scans = cohort({"CN": 7}, scans_per_subject=2)
    scans.loc[scans["session_id"] == "ses-02", "diagnosis"] = "AD"
    message = diagnosis_change_warning(scans)
    assert message.startswith("7 subjects have different diagnoses in different sessions (sub-001: CN→AD, sub-002: CN→AD, ")
    assert "sub-005: CN→AD, and 2 more); each is split" in message and "sub-006" not in message


def test_a_small_class_keeps_a_subject_in_train():
    # One AD subject with 5 scans: the plain round robin dealt it to test (train had no AD at all).
    scans = pd.concat([cohort({"CN": 20}), cohort({"AD": 1}, scans_per_subject=5).assign(participant_id="sub-AD")])
    splits = round_robin_split(scans)
    assert subjects(splits["train"]) >= {"sub-AD"}
    assert missing_class_warnings(splits) == [
        "no AD scans in val, test (only 1 subject has AD scans); add AD subjects, or leave AD out with "
        "'alzmri train --classes' (training refuses a train or val split without a class)"
    ]
    assert missing_class_warnings(round_robin_split(synthetic_scans())) == []


def test_too_few_subjects_for_the_ratios_is_an_error_with_ratios_that_work():
    scans = cohort({"CN": 3, "AD": 3})
    with pytest.raises(AlzmriError) as info:
        round_robin_split(scans, ratios=(0.8, 0.1, 0.1))
    assert str(info.value) == (
        "6 subjects cannot fill train/val/test at ratios 0.8,0.1,0.1: val and test would be empty; "
        "give more subjects or --ratios 0.6,0.2,0.2"
    )
    suggested = round_robin_split(scans, ratios=(0.6, 0.2, 0.2))
    assert all(not suggested[name].empty for name in SPLITS)


def test_an_empty_test_split_may_be_dropped_but_an_empty_val_split_never():
    scans = cohort({"CN": 3, "AD": 3})
    with pytest.raises(AlzmriError) as info:
        round_robin_split(scans, ratios=(0.6, 0.35, 0.05))
    assert str(info.value).endswith(": test would be empty; give more subjects or --ratios 0.65,0.35,0")
    with pytest.raises(AlzmriError) as info:
        round_robin_split(cohort({"CN": 2, "AD": 2}), ratios=(0.5, 0.25, 0.25))
    assert str(info.value) == (
        "4 subjects cannot fill train/val/test at ratios 0.5,0.25,0.25: val would be empty; give more subjects "
        "(subjects are dealt within a class, so a class needs 3 or more for train/val/test to get one each)"
    )


def test_two_subjects_cannot_fill_three_splits():
    with pytest.raises(AlzmriError) as info:
        round_robin_split(cohort({"CN": 1, "AD": 1}, scans_per_subject=2))
    assert str(info.value) == (
        "2 subjects cannot fill train/val/test at ratios 0.8,0.1,0.1: val and test would be empty; give more subjects "
        "(subjects are dealt within a class, so a class needs 3 or more for train/val/test to get one each)"
    )
    # A split with ratio 0 may stay empty.
    splits = round_robin_split(cohort({"CN": 1, "AD": 1}), ratios=(1.0, 0.0, 0.0))
    assert len(splits["train"]) == 2 and splits["val"].empty and splits["test"].empty


def test_kfold_with_fewer_subjects_than_folds_names_class_and_remedy():
    with pytest.raises(AlzmriError) as info:
        stratified_group_kfold(cohort({"CN": 4, "AD": 6}), n_folds=5)
    assert str(info.value) == (
        "cannot make 5 folds of 10 subjects: class CN has only 4 subjects and every fold's test set needs one "
        "of each class; use --folds 4 or fewer, or add CN subjects"
    )
    with pytest.raises(AlzmriError) as info:
        stratified_group_kfold(cohort({"CN": 6, "AD": 2}), n_folds=3)
    assert str(info.value).endswith(
        "class AD has only 2 subjects and every fold's test set needs one of each class; "
        "add AD subjects (k-fold needs at least 3 per class)"
    )


def test_missing_class_warnings_name_every_lacking_split():
    splits = {"fold 0 train": cohort({"CN": 2, "AD": 2}), "fold 0 val": cohort({"CN": 1}), "fold 0 test": cohort({"MCI": 1}),
              "empty": cohort({"CN": 1}).iloc[:0]}
    assert [m.split(" (")[0] for m in missing_class_warnings(splits)] == [
        "no CN scans in fold 0 test", "no MCI scans in fold 0 train, fold 0 val", "no AD scans in fold 0 val, fold 0 test"
    ]


# --- through the command line ------------------------------------------------------------------


def write_manifest_file(folder: Path, rows: list[tuple[str, str, str, str]], header: str = "participant_id\tsession_id\tdiagnosis\tpath") -> Path:
    """A manifest whose scan files (the last cell of each row) exist, empty: ``split`` never opens them."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        (folder / row[3]).touch()
    path = folder / "manifest.tsv"
    path.write_text("\n".join([header, *("\t".join(r) for r in rows)]) + "\n")
    return path


def cli(*args: object):
    from typer.testing import CliRunner

    from alzmri.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, expected: str) -> str:
    assert result.exit_code != 0
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert expected in err, err
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # run_guarded's clean exit, not an escaped exception
    return err


def many_rows(n: int) -> list[tuple[str, str, str, str]]:
    return [(f"sub-{i:02d}", "ses-01", "CN" if i % 2 else "AD", f"s{i}.nii.gz") for i in range(n)]


def test_cli_split_warns_about_changed_diagnoses_and_splits_them_as_one(tmp_path: Path):
    rows = many_rows(20) + [("sub-00", "ses-02", "CN", "s0b.nii.gz"), ("sub-03", "ses-02", "AD", "s3b.nii.gz")]
    result = cli("split", write_manifest_file(tmp_path / "data", rows), tmp_path / "split")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stdout.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: 2 subjects have different diagnoses in different sessions (sub-00: AD→CN, sub-03: CN→AD); "
                        "each is split as one subject, stratified by its last diagnosis"]
    back = read_split_dir(tmp_path / "split")
    assert len([name for name in SPLITS if "sub-03" in set(back[name]["participant_id"])]) == 1
    assert sum(len(df) for df in back.values()) == len(rows)


def test_cli_split_too_small_is_one_line_and_writes_nothing(tmp_path: Path):
    result = cli("split", write_manifest_file(tmp_path / "data", many_rows(2)), tmp_path / "split")
    assert_one_line_error(result, "2 subjects cannot fill train/val/test at ratios 0.8,0.1,0.1: val and test would be empty")
    assert not (tmp_path / "split").exists()


def test_cli_kfold_too_few_subjects_is_one_line(tmp_path: Path):
    result = cli("split", write_manifest_file(tmp_path / "data", many_rows(6)), tmp_path / "folds", "--method", "kfold", "--folds", "5")
    assert_one_line_error(result, "cannot make 5 folds of 6 subjects: class AD has only 3 subjects")


def test_cli_split_duplicated_column_is_one_line(tmp_path: Path):
    rows = [(*r, r[2]) for r in many_rows(10)]  # the diagnosis again in a fifth column
    manifest = write_manifest_file(tmp_path / "data", rows, header="participant_id\tsession_id\tdiagnosis\tpath\tdiagnosis")
    split = cli("split", manifest, tmp_path / "split")
    assert_one_line_error(split, f"manifest {manifest} has the column 'diagnosis' twice (columns 3 and 5); keep one")
    preprocess = cli("preprocess", manifest, tmp_path / "cache", "--workers", "1", "--no-progress")
    assert_one_line_error(preprocess, f"manifest {manifest} has the column 'diagnosis' twice")


def test_cli_split_one_file_for_two_subjects_is_one_line(tmp_path: Path):
    rows = many_rows(10)
    rows[7] = (rows[7][0], rows[7][1], rows[7][2], rows[2][3])
    manifest = write_manifest_file(tmp_path / "data", rows)
    result = cli("split", manifest, tmp_path / "split")
    assert_one_line_error(result, f"scan {(tmp_path / 'data' / 's2.nii.gz').resolve()} is listed twice: {manifest} row 3 (line 4) (sub-02/ses-01) "
                                  f"and {manifest} row 8 (line 9) (sub-07/ses-01)")


def test_cli_split_two_diagnoses_for_one_session_is_one_line(tmp_path: Path):
    rows = many_rows(10) + [("sub-04", "ses-01", "CN", "extra.nii.gz")]
    result = cli("split", write_manifest_file(tmp_path / "data", rows), tmp_path / "split")
    assert_one_line_error(result, "sub-04/ses-01 has two different diagnoses, AD (")


def test_cli_split_warns_about_a_class_missing_from_val(tmp_path: Path):
    rows = [(f"sub-{i:02d}", "ses-01", "CN", f"s{i}.nii.gz") for i in range(12)] + [("sub-ad", "ses-01", "AD", "ad.nii.gz")]
    result = cli("split", write_manifest_file(tmp_path / "data", rows), tmp_path / "split")
    assert result.exit_code == 0, result.output
    assert "warning: no AD scans in val, test (only 1 subject has AD scans)" in result.stdout
    assert "sub-ad" in set(read_split_dir(tmp_path / "split")["train"]["participant_id"])


def test_cli_split_on_a_full_disk_is_one_line(tmp_path: Path, monkeypatch):
    import errno

    def no_space(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    manifest = write_manifest_file(tmp_path / "data", many_rows(20))
    monkeypatch.setattr(pd.DataFrame, "to_csv", no_space)
    result = cli("split", manifest, tmp_path / "split")
    err = assert_one_line_error(result, f"no space left on device writing {tmp_path / 'split' / 'train.tsv'} (")
    assert " free on " in err and not list((tmp_path / "split").iterdir())
