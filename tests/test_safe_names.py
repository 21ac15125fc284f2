"""Ids become file names only through safe_name: nothing any command writes lands outside its folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from alzmri.cli.main import app
from alzmri.utils.errors import AlzmriError
from alzmri.utils.names import check_distinct, folder_name, join_ids, safe_name
from conftest import brain_volume, save_nifti, train_config

EVIL = "../../../../x/ESCAPED"
TRICKY = [EVIL, "..", ".", ".hidden", "/abs/path", "C:\\win", "a_b", "a", "b_c", "c", "x%2Fy", "x/y", "tab\there", "nl\nx",
          "sp ace", "ünï", "*glob?[x]", "a" * 400, "a" * 399 + "b", "sub-001", "ses-M12"]


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_safe_name_keeps_bids_ids_and_makes_everything_else_one_distinct_component() -> None:
    assert safe_name("sub-001") == "sub-001" and safe_name("ses-M12") == "ses-M12" and safe_name("") == ""
    assert safe_name("002_S_0295") == "002_S_0295"  # ADNI ids stay readable
    names = [safe_name(t) for t in TRICKY]
    for text, name in zip(TRICKY, names, strict=True):
        assert "/" not in name and "\\" not in name and not name.startswith("."), (text, name)
        assert name not in ("", ".", "..") and name.isprintable() and len(name) <= 120, (text, name)
        assert not set(name) & set("*?[] \t\n"), (text, name)
    assert len(set(names)) == len(names)  # distinct ids, distinct names
    pairs = [("a_b", "c"), ("a", "b_c")]  # joined with '_', these two would meet: refused
    with pytest.raises(AlzmriError) as info:
        check_distinct(pairs, [join_ids(*p) for p in pairs], "preprocess")
    assert "would share the file name 'a_b_c'" in str(info.value) and "\n" not in str(info.value)
    check_distinct([("a", "1"), ("a", "1")], ["a_1", "a_1"], "x")  # the same scan twice is not a clash


def test_folder_name_refuses_paths() -> None:
    assert folder_name("run-1", "--run-name") == "run-1"
    for bad in ("", ".", "..", "../x", "a/b", "a\\b", ".hidden", "a\x00b"):
        with pytest.raises(AlzmriError) as info:
            folder_name(bad, "--run-name")
        assert "\n" not in str(info.value) and "--run-name" in str(info.value)


def test_preprocess_keeps_traversal_ids_inside_the_cache(tmp_path: Path) -> None:
    box = tmp_path / "l1" / "l2" / "l3" / "l4" / "box"  # deep enough that EVIL's '..'s would still land under tmp_path
    data = box / "data"
    save_nifti(data / "a.nii.gz", brain_volume(seed=1))
    save_nifti(data / "b.nii.gz", brain_volume(seed=2))
    rows = [{"participant_id": EVIL, "session_id": "../ses", "diagnosis": "CN", "path": "a.nii.gz"},
            {"participant_id": "/abs/x", "session_id": "ses-01", "diagnosis": "AD", "path": "b.nii.gz"}]
    pd.DataFrame(rows).to_csv(data / "scans.tsv", sep="\t", index=False)
    before = files_under(tmp_path)
    done = CliRunner().invoke(app, ["preprocess", str(data / "scans.tsv"), str(box / "cache"), "--size", "16", "--spacing", "2",
                                    "--skull-strip", "none", "-j", "1", "--no-progress"])
    assert done.exit_code == 0, done.output
    new = files_under(tmp_path) - before
    assert new and all((box / "cache") in p.parents for p in new), sorted(map(str, new - {p for p in new if (box / "cache") in p.parents}))
    manifest = pd.read_csv(box / "cache" / "manifest.tsv", sep="\t", dtype=str)
    assert sorted(manifest["participant_id"]) == sorted([EVIL, "/abs/x"])  # the ids themselves are kept
    assert all((box / "cache" / a).is_file() for a in manifest["array"])


def test_preprocess_refuses_ids_whose_files_would_meet(tmp_path: Path) -> None:
    save_nifti(tmp_path / "a.nii.gz", brain_volume(seed=1))
    save_nifti(tmp_path / "b.nii.gz", brain_volume(seed=2))
    rows = [{"participant_id": "a_b", "session_id": "c", "path": "a.nii.gz"}, {"participant_id": "a", "session_id": "b_c", "path": "b.nii.gz"}]
    pd.DataFrame(rows).to_csv(tmp_path / "scans.tsv", sep="\t", index=False)
    done = CliRunner().invoke(app, ["preprocess", str(tmp_path / "scans.tsv"), str(tmp_path / "cache"), "--size", "16", "--spacing", "2",
                                    "--skull-strip", "none", "-j", "1", "--no-progress"])
    assert done.exit_code == 2 and "would share the file name 'a_b_c'" in done.output


def test_train_refuses_a_run_name_that_is_a_path(prepared: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "runs"
    done = CliRunner().invoke(app, ["train", str(prepared["cache"]), str(prepared["split"]), "--out", str(out), "--run-name", "../escaped",
                                    "--epochs", "1", "--no-progress"])
    assert done.exit_code == 2 and "plain folder name" in done.output and "Traceback" not in done.output
    assert not (tmp_path / "escaped").exists() and not (out / "escaped").exists()
    with pytest.raises(AlzmriError):
        from alzmri.training.fit import fit

        fit(train_config(prepared, run_name="a/b", out=out))
    assert not (out / "a").exists()


@pytest.mark.slow
def test_explain_keeps_traversal_ids_inside_its_output(prepared: dict[str, Path], tmp_path: Path) -> None:
    from alzmri.training.fit import fit

    run = fit(train_config(prepared, epochs=1, run_name="named", out=tmp_path / "runs"))
    cache = tmp_path / "cache"
    shutil.copytree(prepared["cache"], cache)
    manifest = pd.read_csv(cache / "manifest.tsv", sep="\t", dtype=str, keep_default_na=False)
    test = pd.read_csv(prepared["split"] / "test.tsv", sep="\t", dtype=str, keep_default_na=False)
    first = (manifest["participant_id"] == test["participant_id"][0]) & (manifest["session_id"] == test["session_id"][0])
    manifest.loc[first, ["participant_id", "session_id"]] = [EVIL, "../ses"]
    manifest.to_csv(cache / "manifest.tsv", sep="\t", index=False)
    split = tmp_path / "split"
    split.mkdir()
    for name in ("train", "val", "test"):
        shutil.copyfile(prepared["split"] / f"{name}.tsv", split / f"{name}.tsv")
    test.loc[0, ["participant_id", "session_id"]] = [EVIL, "../ses"]
    test.to_csv(split / "test.tsv", sep="\t", index=False)
    out = tmp_path / "l1" / "l2" / "l3" / "l4" / "explain"  # EVIL's '..'s would still land under tmp_path
    before = files_under(tmp_path)
    done = CliRunner().invoke(app, ["explain", str(run), "--cache", str(cache), "--split", str(split), "--limit", "1", "--out", str(out)])
    assert done.exit_code == 0, done.output
    new = files_under(tmp_path) - before
    assert new and all(out in p.parents for p in new), sorted(str(p) for p in new if out not in p.parents)
    table = pd.read_csv(out / "explain.tsv", sep="\t", dtype=str)
    assert table["participant_id"].iloc[0] == EVIL
