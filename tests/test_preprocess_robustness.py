"""The preprocess command on bad scans, DICOM folders, and when it is killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from conftest import brain_volume, save_nifti
from test_cli_errors import alzmri, snapshot
from test_dicom import write_series

FAST = ("--size", "16", "--spacing", "2", "--skull-strip", "none", "--no-progress")


def write_bad_inputs(data: Path) -> dict[str, tuple[str, str]]:
    """Scan name -> (path relative to ``data``, expected text in its error; "" = must succeed)."""
    data.mkdir(parents=True, exist_ok=True)
    save_nifti(data / "good.nii.gz", brain_volume(seed=1))
    (data / "notes.txt").write_text("not an image\n")
    nib.save(nib.Nifti1Image(np.ones((12, 12), np.float32), np.eye(4)), str(data / "flat.nii.gz"))
    four_d = np.stack([brain_volume(seed=2), brain_volume(seed=3)], axis=-1)
    nib.save(nib.Nifti1Image(four_d, np.diag([2.0, 2, 2, 1])), str(data / "fourd.nii.gz"))
    nan = brain_volume(seed=4)
    nan[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(nan, np.diag([2.0, 2, 2, 1])), str(data / "nan.nii.gz"))
    (data / "empty.nii.gz").write_bytes(b"")
    whole = (data / "good.nii.gz").read_bytes()
    (data / "truncated.nii.gz").write_bytes(whole[: len(whole) // 2])
    (data / "nodicom").mkdir()
    (data / "nodicom" / "README").write_text("no images here\n")
    write_series(data / "dicom", 24, rows=24, cols=28, gap=2.0, pixel_spacing=(2.0, 2.0))
    return {
        "good": ("good.nii.gz", ""),
        "fourd": ("fourd.nii.gz", ""),
        "dicom": ("dicom", ""),
        "text": ("notes.txt", "unknown scan format"),
        "flat": ("flat.nii.gz", "not a 3D volume"),
        "nan": ("nan.nii.gz", "NaN"),
        "empty": ("empty.nii.gz", "cannot read NIfTI file"),
        "truncated": ("truncated.nii.gz", "cannot read NIfTI file"),
        "nodicom": ("nodicom", "no convertible DICOM image series"),
    }


def test_bad_scans_fail_one_by_one_and_the_rest_is_cached(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cases = write_bad_inputs(data)
    manifest = data / "scans.tsv"
    pd.DataFrame([{"participant_id": f"sub-{name}", "session_id": "ses-01", "path": rel} for name, (rel, _) in cases.items()]).to_csv(
        manifest, sep="\t", index=False)  # no diagnosis column: unlabeled scans may be preprocessed
    before = snapshot(data)
    cache = tmp_path / "cache"
    result = alzmri("preprocess", manifest, cache, *FAST, "-j", "2")
    assert result.returncode == 2
    err = result.stderr.strip()
    assert err.startswith("error: 6 of 9 scans failed") and "\n" not in err, err
    assert "Traceback" not in result.stdout + result.stderr
    assert "3 done, 0 already cached, 6 failed" in result.stdout
    failures = pd.read_csv(cache / "failures.tsv", sep="\t").set_index("participant_id")["error"]
    for name, (_, expected) in cases.items():
        if expected:
            assert expected in failures[f"sub-{name}"] and "\n" not in failures[f"sub-{name}"], name
    cached = pd.read_csv(cache / "manifest.tsv", sep="\t", keep_default_na=False).set_index("participant_id")
    assert sorted(cached.index) == ["sub-dicom", "sub-fourd", "sub-good"]
    assert "4D input with 2 volumes: used the first" in cached.loc["sub-fourd", "warnings"]
    qc = pd.read_csv(cache / "qc.tsv", sep="\t")
    assert (qc["status"] == "failed").sum() == 6
    page = (cache / "qc.html").read_text()
    assert page.index("sub-nodicom") < page.index("sub-good")  # failures listed first
    assert snapshot(data) == before  # inputs never modified


def _arrays(folder: Path) -> list[Path]:
    """Finished arrays (pathlib's ``*`` also matches the ``.tmp-*`` files of writes in progress)."""
    return [p for p in folder.glob("*.npy") if not p.name.startswith(".")] if folder.is_dir() else []


def _default_sigint() -> None:
    # A shell running the tests in the background starts them with SIGINT ignored, and children
    # inherit that; give the command under test the terminal default, as an interactive user has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_run_resumes_without_recomputing(tmp_path: Path, how: signal.Signals) -> None:
    data = tmp_path / "data"
    rows = []
    for i in range(12):
        save_nifti(data / f"s{i}.nii.gz", brain_volume(shape=(40, 44, 36), seed=i), zooms=(1.0, 1.0, 1.0))
        rows.append({"participant_id": f"sub-{i:02d}", "session_id": "ses-01", "diagnosis": "CN", "path": f"s{i}.nii.gz"})
    manifest = data / "scans.tsv"
    pd.DataFrame(rows).to_csv(manifest, sep="\t", index=False)
    cache = tmp_path / "cache"
    # N4 at full resolution keeps each scan busy for a while, so the run is caught mid-way.
    args = [sys.executable, "-m", "alzmri", "preprocess", str(manifest), str(cache), "--size", "16", "--spacing", "1",
            "--skull-strip", "none", "--n4-grid-mm", "1", "-j", "1", "--no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_default_sigint)
    deadline = time.time() + 240
    while len(_arrays(cache / "arrays")) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, how) if how == signal.SIGKILL else proc.send_signal(how)
    _, stderr = proc.communicate(timeout=60)
    finished = {p.name: p.stat().st_mtime_ns for p in _arrays(cache / "arrays")}
    assert 2 <= len(finished) < len(rows), "the run was not interrupted mid-way"
    for path in _arrays(cache / "arrays"):
        assert np.load(path).shape == (16, 16, 16)  # every array that exists is complete
    if how == signal.SIGINT:
        assert proc.returncode == 130 and "interrupted; re-run the same command to resume" in stderr
        assert "Traceback" not in stderr

    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"{len(rows) - len(finished)} done, {len(finished)} already cached, 0 failed" in result.stdout
    after = {p.name: p.stat().st_mtime_ns for p in _arrays(cache / "arrays")}
    assert len(after) == len(rows) and all(after[name] == mtime for name, mtime in finished.items())
    assert not [p for p in cache.rglob(".tmp-*")]  # no leftovers of the killed run


def _busy_preprocess(tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """A ``preprocess -j 2`` caught mid-run, and its worker pids."""
    import psutil

    data = tmp_path / "data"
    rows = []
    for i in range(8):
        save_nifti(data / f"s{i}.nii.gz", brain_volume(shape=(40, 44, 36), seed=i), zooms=(1.0, 1.0, 1.0))
        rows.append({"participant_id": f"sub-{i:02d}", "session_id": "ses-01", "diagnosis": "CN", "path": f"s{i}.nii.gz"})
    pd.DataFrame(rows).to_csv(data / "scans.tsv", sep="\t", index=False)
    args = [sys.executable, "-m", "alzmri", "preprocess", str(data / "scans.tsv"), str(tmp_path / "cache"), "--size", "16", "--spacing", "1",
            "--skull-strip", "none", "--n4-grid-mm", "1", "-j", "2", "--no-progress"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    workers: list[int] = []
    while time.time() < deadline and proc.poll() is None:
        workers = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        if len(workers) >= 2 and len(_arrays(tmp_path / "cache" / "arrays")) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None and len(workers) >= 2, "the run was not caught with its workers busy"
    return proc, workers


def _gone(pids: list[int], within_s: float = 15.0) -> bool:
    import psutil

    deadline = time.time() + within_s
    while time.time() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def test_sigterm_stops_the_workers_and_says_how_to_resume(tmp_path: Path) -> None:
    proc, workers = _busy_preprocess(tmp_path)
    proc.send_signal(signal.SIGTERM)  # to the parent only, as `kill PID` does
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated (SIGTERM); re-run the same command to resume" in stderr and "Traceback" not in stderr
    assert _gone(workers), "workers outlived the terminated run"


def test_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    proc, workers = _busy_preprocess(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)  # the parent only: no clean-up can run in it
    proc.communicate(timeout=60)
    assert _gone(workers), "workers were orphaned by a killed parent"
