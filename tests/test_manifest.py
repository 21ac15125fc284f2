"""Manifest and BIDS readers: valid inputs load normalised; every bad input names file and row."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from alzmri.io.bids import load_scans, read_bids
from alzmri.io.manifest import COLUMNS, read_manifest, validate_scans, write_manifest
from alzmri.utils.errors import AlzmriError

HEADER = "participant_id\tsession_id\tdiagnosis\tpath\tage\tsex"


def nifti(path: Path) -> Path:
    """Write a tiny 8^3 NIfTI volume at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), dtype=np.float32), np.eye(4)), path)
    return path


def manifest(tmp_path: Path, lines: list[str], name: str = "manifest.tsv", header: str = HEADER) -> Path:
    """Write a manifest with scans scans/a.nii.gz and scans/b.nii.gz available next to it."""
    nifti(tmp_path / "scans" / "a.nii.gz")
    nifti(tmp_path / "scans" / "b.nii.gz")
    path = tmp_path / name
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def error(func, *args) -> str:
    with pytest.raises(AlzmriError) as info:
        func(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_valid_tsv_is_normalised(tmp_path):
    path = manifest(tmp_path, ["001\tses-01\tcn\tscans/a.nii.gz\t71\tf", "002\tses-01\tAd\tscans/b.nii.gz\t\t"])
    df = read_manifest(path)
    assert list(df.columns) == list(COLUMNS)
    assert list(df["participant_id"]) == ["001", "002"]  # not parsed as integers
    assert list(df["diagnosis"]) == ["CN", "AD"]
    assert list(df["sex"]) == ["F", ""]
    assert df["age"].iloc[0] == 71.0 and math.isnan(df["age"].iloc[1])
    assert df["path"].iloc[0] == str((tmp_path / "scans" / "a.nii.gz").resolve())


def test_csv_and_sniffed_separator_and_absolute_path(tmp_path):
    absolute = nifti(tmp_path / "elsewhere" / "c.nii")
    header = "participant_id,session_id,diagnosis,path"
    csv = manifest(tmp_path, [f"sub-1,ses-1,MCI,{absolute}"], name="m.csv", header=header)
    assert read_manifest(csv)["path"].tolist() == [str(absolute)]
    txt = manifest(tmp_path, ["sub-1;ses-1;MCI;scans/a.nii.gz"], name="m.txt", header=header.replace(",", ";"))
    df = read_manifest(txt)
    assert df["diagnosis"].tolist() == ["MCI"] and "age" in df.columns


def test_missing_file_and_folder(tmp_path):
    assert "does not exist" in error(read_manifest, tmp_path / "nope.tsv")
    assert "nope.tsv" in error(read_manifest, tmp_path / "nope.tsv")
    assert "is not a file" in error(read_manifest, tmp_path)


def test_empty_manifest(tmp_path):
    blank = tmp_path / "blank.tsv"
    blank.write_text("")
    assert "blank.tsv is empty" in error(read_manifest, blank)
    assert "has no rows" in error(read_manifest, manifest(tmp_path, []))


def test_missing_columns_are_named(tmp_path):
    path = manifest(tmp_path, ["sub-1\tses-1"], header="participant_id\tsession_id")
    message = error(read_manifest, path)
    assert "manifest.tsv" in message and "diagnosis, path" in message


def test_row_with_too_many_cells_names_line(tmp_path):
    header = "participant_id,session_id,diagnosis,path"
    path = manifest(tmp_path, ["sub-1,ses-1,CN,scans/a.nii.gz,extra"], name="m.csv", header=header)
    assert "m.csv row 1 (line 2): 5 cells but the header has 4" in error(read_manifest, path)


def test_empty_required_cell_names_row_and_subject(tmp_path):
    path = manifest(tmp_path, ["sub-1\tses-1\tCN\tscans/a.nii.gz\t\t", "sub-2\tses-1\t\tscans/b.nii.gz\t\t"])
    message = error(read_manifest, path)
    assert "row 2 (line 3)" in message and "sub-2/ses-1" in message and "empty diagnosis" in message


def test_unknown_diagnosis_names_value_and_allowed(tmp_path):
    path = manifest(tmp_path, ["sub-1\tses-1\tCN\tscans/a.nii.gz\t\t", "sub-2\tses-1\tDementia\tscans/b.nii.gz\t\t"])
    message = error(read_manifest, path)
    assert "row 2" in message and "sub-2/ses-1" in message
    assert "'Dementia'" in message and "CN, MCI, AD" in message


def test_duplicate_scan_names_both_rows(tmp_path):
    path = manifest(
        tmp_path,
        [
            "sub-1\tses-1\tCN\tscans/a.nii.gz\t\t",
            "sub-2\tses-1\tAD\tscans/b.nii.gz\t\t",
            "sub-1\tses-1\tCN\tscans/b.nii.gz\t\t",
        ],
    )
    message = error(read_manifest, path)
    assert "sub-1/ses-1" in message and "row 1 (line 2)" in message and "row 3 (line 4)" in message


def test_missing_scan_file_names_row_and_path(tmp_path):
    path = manifest(tmp_path, ["sub-1\tses-1\tCN\tscans/a.nii.gz\t\t", "sub-2\tses-1\tAD\tscans/gone.nii.gz\t\t"])
    message = error(read_manifest, path)
    assert "row 2" in message and "sub-2/ses-1" in message
    assert str(tmp_path / "scans" / "gone.nii.gz") in message and "does not exist" in message


def test_bad_age_and_sex(tmp_path):
    age = manifest(tmp_path, ["sub-1\tses-1\tCN\tscans/a.nii.gz\tseventy\tM"])
    assert "row 1" in error(read_manifest, age) and "'seventy'" in error(read_manifest, age)
    sex = manifest(tmp_path, ["sub-1\tses-1\tCN\tscans/a.nii.gz\t70\tX"], name="sex.tsv")
    message = error(read_manifest, sex)
    assert "sub-1/ses-1" in message and "sex 'X'" in message


def test_validate_scans_uses_given_row_labels(tmp_path):
    df = pd.DataFrame({"participant_id": ["s"], "session_id": ["t"], "diagnosis": ["??"], "path": [""]})
    message = error(lambda: validate_scans(df, "src", where=["labels.tsv row 7 (line 8)"]))
    assert message.startswith("labels.tsv row 7 (line 8), s/t: empty path")


def test_validate_scans_accepts_non_string_cells(tmp_path):
    scan = nifti(tmp_path / "x.nii.gz")
    row = {"participant_id": 1, "session_id": "ses-1", "diagnosis": "mci", "path": str(scan), "age": 70, "sex": None}
    out = validate_scans(pd.DataFrame([row]), "table")
    expected = {**row, "participant_id": "1", "diagnosis": "MCI", "age": 70.0, "sex": ""}
    assert out.iloc[0].to_dict() == expected


def test_write_manifest_round_trip(tmp_path):
    df = read_manifest(manifest(tmp_path, ["007\tses-01\tCN\tscans/a.nii.gz\t70.5\tM"]))
    out = write_manifest(df, tmp_path / "out" / "copy.tsv")
    assert out.read_text().splitlines()[0] == "\t".join(COLUMNS)
    assert not list(out.parent.glob(".tmp-*"))
    pd.testing.assert_frame_equal(read_manifest(out), df)


# --- BIDS -------------------------------------------------------------------------------------


def bids(tmp_path: Path, sessions: dict[str, list[str]]) -> Path:
    """A BIDS tree; a subject with an empty session list has no session level."""
    root = tmp_path / "bids"
    for sub, sess in sessions.items():
        for ses in sess:
            nifti(root / sub / ses / "anat" / f"{sub}_{ses}_T1w.nii.gz")
        if not sess:
            nifti(root / sub / "anat" / f"{sub}_T1w.nii")
    return root


def test_bids_with_labels_tsv(tmp_path):
    root = bids(tmp_path, {"sub-01": ["ses-01", "ses-02"], "sub-02": []})
    (root / "labels.tsv").write_text(
        "participant_id\tsession_id\tdiagnosis\tage\n"
        "sub-01\tses-01\tcn\t70\nsub-01\tses-02\tMCI\t72\n02\tses-01\tAD\t80\n"
    )
    df = read_bids(root)
    assert df[["participant_id", "session_id", "diagnosis"]].values.tolist() == [
        ["sub-01", "ses-01", "CN"],
        ["sub-01", "ses-02", "MCI"],
        ["sub-02", "ses-01", "AD"],
    ]
    assert df["path"].iloc[2] == str((root / "sub-02" / "anat" / "sub-02_T1w.nii").resolve())
    assert list(df.columns) == list(COLUMNS)
    pd.testing.assert_frame_equal(load_scans(root), df)


def test_bids_participants_tsv_labels_every_session(tmp_path):
    root = bids(tmp_path, {"sub-01": ["ses-01", "ses-02"], "sub-02": ["ses-01"]})
    (root / "participants.tsv").write_text("participant_id\tsex\tdiagnosis\nsub-01\tmale\tAD\nsub-02\tF\tCN\n")
    df = read_bids(root)
    assert df["diagnosis"].tolist() == ["AD", "AD", "CN"] and df["sex"].tolist() == ["M", "M", "F"]


def test_bids_explicit_labels_win(tmp_path):
    root = bids(tmp_path, {"sub-01": ["ses-01"]})
    (root / "labels.tsv").write_text("participant_id\tsession_id\tdiagnosis\nsub-01\tses-01\tCN\n")
    other = tmp_path / "mine.csv"
    other.write_text("participant_id,session_id,diagnosis\nsub-01,ses-01,AD\n")
    assert read_bids(root, other)["diagnosis"].tolist() == ["AD"]
    assert load_scans(root, other)["diagnosis"].tolist() == ["AD"]


def test_bids_errors(tmp_path):
    root = bids(tmp_path, {"sub-01": ["ses-01"], "sub-02": ["ses-01"]})
    assert "no diagnoses" in error(read_bids, root)
    (root / "participants.tsv").write_text("participant_id\tage\nsub-01\t70\n")
    assert "missing required column(s) diagnosis" in error(read_bids, root)

    (root / "labels.tsv").write_text("participant_id\tsession_id\tdiagnosis\nsub-01\tses-01\tCN\n")
    message = error(read_bids, root)
    assert "sub-02/ses-01" in message and "sub-02_ses-01_T1w.nii.gz" in message and "no diagnosis" in message

    (root / "labels.tsv").write_text(
        "participant_id\tsession_id\tdiagnosis\nsub-01\tses-01\tCN\nsub-02\tses-01\tAD\nsub-03\tses-02\tAD\n"
    )
    message = error(read_bids, root)
    assert "row 3 (line 4)" in message and "sub-03/ses-02" in message and "no T1w scan" in message

    (root / "labels.tsv").write_text(
        "participant_id\tsession_id\tdiagnosis\nsub-01\tses-01\tCN\nsub-02\tses-01\tXYZ\n"
    )
    message = error(read_bids, root)
    assert "labels.tsv row 2" in message and "sub-02/ses-01" in message and "'XYZ'" in message

    nifti(root / "sub-02" / "ses-01" / "anat" / "sub-02_ses-01_run-2_T1w.nii.gz")
    message = error(read_bids, root)
    assert "more than one T1w for sub-02/ses-01" in message
    assert "sub-02_ses-01_T1w.nii.gz" in message and "sub-02_ses-01_run-2_T1w.nii.gz" in message


def test_bids_without_scans_and_load_scans_dispatch(tmp_path):
    (tmp_path / "empty" / "sub-01" / "anat").mkdir(parents=True)
    assert "no T1w images" in error(read_bids, tmp_path / "empty")
    assert "does not exist" in error(load_scans, tmp_path / "missing")
    other = tmp_path / "scans.json"
    other.write_text("{}")
    assert "neither a BIDS folder nor a .tsv/.csv manifest" in error(load_scans, other)
    path = manifest(tmp_path, ["sub-1\tses-1\tCN\tscans/a.nii.gz\t\t"])
    assert load_scans(path)["participant_id"].tolist() == ["sub-1"]
    assert "only applies to a BIDS folder" in error(load_scans, path, tmp_path / "labels.tsv")


# --- issue 13: repeated columns, conflicting diagnoses, one file in two rows -------------------


def test_duplicated_column_is_named_from_the_header(tmp_path):
    path = manifest(tmp_path, ["sub-1\tses-1\tCN\tscans/a.nii.gz\tAD"], header="participant_id\tsession_id\tdiagnosis\tpath\tdiagnosis")
    assert error(read_manifest, path) == f"manifest {path} has the column 'diagnosis' twice (columns 3 and 5); keep one"
    # Column names are case-insensitive, so Diagnosis and diagnosis are the same column.
    csv = manifest(tmp_path, ["sub-1,ses-1,CN,scans/a.nii.gz,CN,CN"], name="m.csv",
                   header="participant_id,session_id,Diagnosis,path,diagnosis,DIAGNOSIS")
    assert error(read_manifest, csv) == f"manifest {csv} has the column 'diagnosis' 3 times (columns 3, 5 and 6); keep one"


def test_duplicated_column_in_a_labels_file_and_a_table_from_code(tmp_path):
    root = bids(tmp_path, {"sub-01": ["ses-01"]})
    (root / "labels.tsv").write_text("participant_id\tsession_id\tdiagnosis\tage\tage\nsub-01\tses-01\tCN\t70\t71\n")
    assert error(read_bids, root) == f"labels file {root / 'labels.tsv'} has the column 'age' twice (columns 4 and 5); keep one"
    df = pd.DataFrame([["s", "t", "CN", "", "CN"]], columns=["participant_id", "session_id", "diagnosis", "path", "diagnosis"])
    assert error(lambda: validate_scans(df, "table")) == "table has the column 'diagnosis' twice (columns 3 and 5); keep one"


def test_empty_header_cells_are_not_a_repeated_column(tmp_path):
    path = manifest(tmp_path, ["sub-1\tses-1\tCN\tscans/a.nii.gz\t\t"], header="participant_id\tsession_id\tdiagnosis\tpath\t\t")
    assert read_manifest(path)["diagnosis"].tolist() == ["CN"]


def test_two_diagnoses_for_one_session_names_subject_session_and_rows(tmp_path):
    path = manifest(tmp_path, ["sub-1\tses-1\tCN\tscans/a.nii.gz\t\t", "sub-1\tses-1\tad\tscans/b.nii.gz\t\t"])
    assert error(read_manifest, path) == (
        f"sub-1/ses-1 has two different diagnoses, CN ({path} row 1 (line 2)) and ad ({path} row 2 (line 3)); fix the wrong row"
    )


def test_subject_level_labels_with_two_diagnoses_point_to_session_id(tmp_path):
    root = bids(tmp_path, {"sub-01": ["ses-01", "ses-02"]})
    (root / "participants.tsv").write_text("participant_id\tdiagnosis\nsub-01\tCN\nsub-01\tAD\n")
    labels = root / "participants.tsv"
    assert error(read_bids, root) == (
        f"sub-01 has two different diagnoses, CN ({labels} row 1 (line 2)) and AD ({labels} row 2 (line 3)); "
        "add a session_id column if the diagnosis changed between sessions"
    )


def test_one_scan_file_for_two_subjects_names_file_and_both_rows(tmp_path):
    path = manifest(tmp_path, ["sub-1\tses-1\tCN\tscans/a.nii.gz\t\t", "sub-2\tses-1\tAD\tscans/b.nii.gz\t\t",
                               "sub-3\tses-1\tAD\tscans/a.nii.gz\t\t"])
    scan = (tmp_path / "scans" / "a.nii.gz").resolve()
    assert error(read_manifest, path) == (
        f"scan {scan} is listed twice: {path} row 1 (line 2) (sub-1/ses-1) and {path} row 3 (line 4) (sub-3/ses-1); "
        "every row needs its own scan file"
    )


def test_one_scan_file_twice_for_one_subject_also_through_a_link(tmp_path):
    path = manifest(tmp_path, ["sub-1\tses-1\tCN\tscans/a.nii.gz\t\t", "sub-1\tses-2\tCN\tscans/b.nii.gz\t\t"])
    assert len(read_manifest(path)) == 2
    (tmp_path / "scans" / "b.nii.gz").unlink()
    (tmp_path / "scans" / "b.nii.gz").symlink_to(tmp_path / "scans" / "a.nii.gz")
    message = error(read_manifest, path)
    assert message.startswith(f"scan {(tmp_path / 'scans' / 'b.nii.gz').absolute()} is listed twice: {path} row 1 (line 2) (sub-1/ses-1)")
    assert f"{path} row 2 (line 3) (sub-1/ses-2)" in message
