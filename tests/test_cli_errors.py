"""Bad input: one line on stderr, a non-zero exit, no traceback, the input folder untouched."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import brain_volume, save_nifti


def alzmri(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alzmri", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def make_manifest(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.tsv"
    pd.DataFrame(rows, columns=["participant_id", "session_id", "diagnosis", "path"]).to_csv(path, sep="\t", index=False)
    return path


def good_rows(folder: Path, n: int = 4) -> list[dict]:
    rows = []
    for i in range(n):
        save_nifti(folder / f"s{i}.nii.gz", brain_volume(seed=i))
        rows.append({"participant_id": f"sub-{i}", "session_id": "ses-01", "diagnosis": "CN" if i % 2 else "AD", "path": f"s{i}.nii.gz"})
    return rows


def corrupt(folder: Path, rows: list[dict]) -> None:
    (folder / "s1.nii.gz").write_bytes(b"\x1f\x8b\x08\x00\x00\x00 truncated")


def flat(folder: Path, rows: list[dict]) -> None:
    nib.save(nib.Nifti1Image(np.ones((12, 12), np.float32), np.eye(4)), str(folder / "s1.nii.gz"))


CASES = {
    "missing NIfTI": (lambda f, r: r[1].update(path="nope.nii.gz"), "nope.nii.gz"),
    "unknown diagnosis": (lambda f, r: r[2].update(diagnosis="Dementia"), "Dementia"),
    "empty manifest": (lambda f, r: r.clear(), "has no rows"),
    "duplicate scan": (lambda f, r: r.append(dict(r[0])), "sub-0"),
    "corrupt nii.gz": (corrupt, "s1.nii.gz"),
    "2D image": (flat, "not a 3D volume"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_error_and_leaves_input_alone(tmp_path: Path, case: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    rows = good_rows(data)
    mutate, expected = CASES[case]
    mutate(data, rows)
    manifest = make_manifest(data, rows)
    before = snapshot(data)
    result = alzmri("preprocess", manifest, tmp_path / "cache", "--size", "16", "--spacing", "2", "--skull-strip", "none", "--workers", "1", "--no-progress")
    assert result.returncode != 0
    err = result.stderr.strip()
    assert err.startswith("error:") and "\n" not in err, err
    assert expected in err
    assert "Traceback" not in result.stderr + result.stdout
    assert snapshot(data) == before


def test_invalid_option_value_is_one_line(tmp_path: Path) -> None:
    result = alzmri("split", tmp_path, tmp_path / "out", "--ratios", "0.5,0.5")
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error:") and "--ratios" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_command_has_help_with_an_example() -> None:
    listing = alzmri("--help")
    assert listing.returncode == 0
    for command in ("synth", "convert", "split", "audit", "preprocess", "train", "cv", "evaluate", "predict", "demo", "models list", "models info"):
        assert command.split()[0] in listing.stdout
        result = alzmri(*command.split(), "--help")
        assert result.returncode == 0, result.stderr
        assert "Examples" in result.stdout and f"alzmri {command}" in result.stdout


def test_audit_names_every_leaking_subject(tmp_path: Path) -> None:
    split = tmp_path / "split"
    split.mkdir()
    table = lambda subs: pd.DataFrame({"participant_id": subs, "session_id": "ses-01", "diagnosis": "CN", "path": [f"/x/{s}" for s in subs]})
    table(["sub-1", "sub-2", "sub-3"]).to_csv(split / "train.tsv", sep="\t", index=False)
    table(["sub-4"]).to_csv(split / "val.tsv", sep="\t", index=False)
    table(["sub-5", "sub-6"]).to_csv(split / "test.tsv", sep="\t", index=False)
    assert alzmri("audit", split).returncode == 0
    table(["sub-5", "sub-3"]).to_csv(split / "test.tsv", sep="\t", index=False)
    table(["sub-4", "sub-1"]).to_csv(split / "val.tsv", sep="\t", index=False)
    result = alzmri("audit", split)
    assert result.returncode != 0
    assert "sub-3" in result.stderr and "sub-1" in result.stderr and "sub-5" not in result.stderr
    assert "\n" not in result.stderr.strip()
