"""Preprocessing past one process: shards, a Dask cluster, two runs at once on one cache, --fail-on-qc."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alzmri.io.bids import load_scans
from alzmri.preprocessing.config import PreprocessConfig
from alzmri.preprocessing.runner import preprocess_scans, shard_indices
from alzmri.utils.atomic import _HOST, atomic_path, stale_temporaries
from alzmri.utils.errors import AlzmriError
from conftest import brain_volume, save_nifti
from test_cli_errors import alzmri

FAST = PreprocessConfig(size=16, spacing=2.0, skull_strip="none")
FAST_ARGS = ("--size", "16", "--spacing", "2", "--skull-strip", "none", "--no-progress", "-j", "1")


def write_scans(folder: Path, sessions: tuple[int, ...] = (2, 2, 1, 1), shape: tuple[int, int, int] = (24, 28, 22),
                zooms: tuple[float, float, float] = (2.0, 2.0, 2.0)) -> Path:
    """Tiny scans, ``sessions[k]`` sessions for subject k, listed out of (participant, session) order; the manifest's path."""
    rows = []
    for k, n in enumerate(sessions):
        for s in range(n):
            name = f"s{k}_{s}.nii.gz"
            save_nifti(folder / name, brain_volume(shape=shape, ventricle=0.15 + 0.05 * s, seed=10 * k + s), zooms=zooms)
            rows.append({"participant_id": f"sub-{k}", "session_id": f"ses-0{s + 1}", "diagnosis": "CN", "path": name})
    manifest = folder / "scans.tsv"
    pd.DataFrame(rows[::-1]).to_csv(manifest, sep="\t", index=False)  # reversed: shards must not depend on the file's order
    return manifest


def arrays(cache: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted((cache / "arrays").glob("*.npy")) if not p.name.startswith(".")}


def table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Six tiny scans and their single-run cache (no shards, no cluster)."""
    root = tmp_path_factory.mktemp("scale")
    manifest = write_scans(root / "data")
    scans = load_scans(manifest, labeled=False)
    preprocess_scans(scans, root / "A", FAST, workers=1, progress=False, report=False)
    return {"root": root, "manifest": manifest, "scans": scans, "cache": root / "A", "arrays": arrays(root / "A")}


# --- shards -----------------------------------------------------------------------------------------


def test_shards_together_equal_one_run(reference: dict, tmp_path: Path) -> None:
    scans, cache = reference["scans"], tmp_path / "B"
    assert len(scans) == 6 and len(reference["arrays"]) == 6
    order = sorted(zip(scans["participant_id"], scans["session_id"], strict=True))
    first = set(order[0::3])
    assert {(scans["participant_id"][i], scans["session_id"][i]) for i in shard_indices(scans.to_dict("records"), (1, 3))} == first

    preprocess_scans(scans, cache, FAST, workers=1, progress=False, report=False, shard=(1, 3))
    manifest = table(cache / "manifest.tsv")
    assert set(zip(manifest["participant_id"], manifest["session_id"], strict=True)) == first
    qc = table(cache / "qc.tsv")
    assert len(qc) == 6
    for pid, ses, status in zip(qc["participant_id"], qc["session_id"], qc["status"], strict=True):
        assert status == ("done" if (pid, ses) in first else "pending"), (pid, ses, status)
    assert len(arrays(cache)) == 2

    preprocess_scans(scans, cache, FAST, workers=1, progress=False, report=False, shard=(2, 3))
    assert len(table(cache / "manifest.tsv")) == 4 and (table(cache / "qc.tsv")["status"] == "pending").sum() == 2
    preprocess_scans(scans, cache, FAST, workers=1, progress=False, report=False, shard=(3, 3))

    whole, parts = table(reference["cache"] / "manifest.tsv"), table(cache / "manifest.tsv")
    pd.testing.assert_frame_equal(whole, parts)  # same scans, same order, same array names
    qc_a, qc_b = table(reference["cache"] / "qc.tsv"), table(cache / "qc.tsv")
    assert list(zip(qc_a["participant_id"], qc_a["session_id"])) == list(zip(qc_b["participant_id"], qc_b["session_id"]))
    last = {(p, s) for p, s in order[2::3]}
    for pid, ses, status in zip(qc_b["participant_id"], qc_b["session_id"], qc_b["status"], strict=True):
        assert status == ("done" if (pid, ses) in last else "cached"), (pid, ses, status)  # the others from their records
    assert (qc_a["brain_ml"] == qc_b["brain_ml"]).all()
    got = arrays(cache)
    assert sorted(got) == sorted(reference["arrays"])
    for name, array in reference["arrays"].items():
        assert np.array_equal(array, got[name]), name
    assert not list(cache.rglob(".tmp-*"))


@pytest.mark.parametrize("shard", ["0/3", "4/3", "x", "1/0"])
def test_bad_shard_is_a_one_line_error(reference: dict, tmp_path: Path, shard: str) -> None:
    result = alzmri("preprocess", reference["manifest"], tmp_path / "cache", *FAST_ARGS, "--shard", shard)
    assert result.returncode == 2, result.stdout + result.stderr
    err = result.stderr.strip()
    assert err.startswith("error: --shard") and "\n" not in err, err
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "cache" / "manifest.tsv").exists()


# --- Dask -------------------------------------------------------------------------------------------


@pytest.fixture
def cluster():
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


def test_dask_cluster_gives_the_same_arrays(reference: dict, cluster, tmp_path: Path) -> None:
    cache = tmp_path / "D"
    manifest = preprocess_scans(reference["scans"], cache, FAST, progress=False, report=False, scheduler=cluster.scheduler_address)
    assert len(manifest) == 6
    pd.testing.assert_frame_equal(table(reference["cache"] / "manifest.tsv"), table(cache / "manifest.tsv"))
    names = sorted(p.name for p in (cache / "arrays").glob("*.npy"))
    assert names == sorted(reference["arrays"])
    for name in names:
        assert (cache / "arrays" / name).read_bytes() == (reference["cache"] / "arrays" / name).read_bytes(), name


def test_unreachable_scheduler_is_a_one_line_error(reference: dict, tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(AlzmriError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:1") as info:
        preprocess_scans(reference["scans"], tmp_path / "cache", FAST, progress=False, report=False, scheduler="tcp://127.0.0.1:1")
    assert "\n" not in str(info.value)
    assert time.perf_counter() - start < 40  # Client(timeout=30): about 30 s
    assert not (tmp_path / "cache" / "arrays").exists()  # nothing ran


# --- two runs at once on one cache ------------------------------------------------------------------


def test_two_runs_at_once_on_one_cache(tmp_path: Path) -> None:
    manifest = write_scans(tmp_path / "data", sessions=(2, 2, 2), shape=(40, 40, 40), zooms=(1.0, 1.0, 1.0))
    settings = ("--size", "16", "--spacing", "0.5", "--n4-grid-mm", "1", "--skull-strip", "none", "-j", "1", "--no-progress")
    cache = tmp_path / "cache"
    args = [sys.executable, "-m", "alzmri", "preprocess", str(manifest), str(cache), *settings]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err
        assert "Traceback" not in out + err
    done = [int(re.search(r"preprocess: 6 scans: (\d+) done", out).group(1)) for out, _ in outputs]
    assert sum(done) > 6, f"the two runs did not overlap (done: {done})"  # both worked on some scan at the same time

    scans = load_scans(manifest, labeled=False)
    config = PreprocessConfig(size=16, spacing=0.5, n4_grid_mm=1.0, skull_strip="none")
    preprocess_scans(scans, tmp_path / "single", config, workers=1, progress=False, report=False)
    single = arrays(tmp_path / "single")
    listed = table(cache / "manifest.tsv")
    assert sorted(zip(listed["participant_id"], listed["session_id"])) == sorted(zip(scans["participant_id"], scans["session_id"]))
    assert sorted(Path(a).name for a in listed["array"]) == sorted(single)
    got = arrays(cache)
    assert sorted(got) == sorted(single)
    for name, array in single.items():
        assert got[name].shape == (16, 16, 16) and np.array_equal(got[name], array), name
    assert set(table(cache / "qc.tsv")["status"]) <= {"done", "cached"}
    assert not list(cache.rglob(".tmp-*"))


def test_stale_temporaries_spares_live_writers(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = tmp_path / f".tmp-x~{_HOST}~{os.getpid()}~y.npy"
    gone = tmp_path / f".tmp-x~{_HOST}~{dead.pid}~y.npy"
    legacy = tmp_path / ".tmp-x-abc.npy"
    foreign_new = tmp_path / ".tmp-x~otherhost~12345~y.npy"
    foreign_old = tmp_path / ".tmp-z~otherhost~12345~y.npy"
    for path in (live, gone, legacy, foreign_new, foreign_old):
        path.write_bytes(b"")
    two_days = time.time() - 2 * 24 * 3600
    os.utime(foreign_old, (two_days, two_days))
    assert sorted(stale_temporaries(tmp_path)) == sorted([gone, legacy, foreign_old])
    # The names atomic_path gives carry this host and process: a write in progress is never stale.
    with atomic_path(tmp_path / "out.npy") as tmp:
        tmp.write_bytes(b"x")
        assert tmp.name.startswith(".tmp-") and tmp not in stale_temporaries(tmp_path)
    assert (tmp_path / "out.npy").read_bytes() == b"x"


# --- --fail-on-qc -----------------------------------------------------------------------------------


def too_big_brain(shape: tuple[int, int, int] = (40, 40, 40)) -> np.ndarray:
    """A bright 'brain' filling the field of view to its edges (only the corners are dark)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    r = np.sqrt((grid**2).sum(axis=0))
    vol = np.where(r < 1.25, 1.0, 0.0)
    vol[r < 0.15] = 0.25
    vol += np.random.default_rng(7).normal(0, 0.03, shape)
    return np.clip(vol, 0, None).astype(np.float32)


def test_fail_on_qc(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rows = []
    for k in (1, 2, 3):
        if k == 2:  # 160 mm cube, nearly all 'brain': ~3,000 ml
            save_nifti(data / "s2.nii.gz", too_big_brain(), zooms=(4.0, 4.0, 4.0))
        else:  # an ellipsoid of ~1,440 ml: inside the intracranial range, no warning
            save_nifti(data / f"s{k}.nii.gz", brain_volume(shape=(36, 36, 36), seed=k), zooms=(5.0, 5.0, 5.0))
        rows.append({"participant_id": f"sub-{k}", "session_id": "ses-01", "diagnosis": "CN", "path": f"s{k}.nii.gz"})
    manifest = data / "scans.tsv"
    pd.DataFrame(rows).to_csv(manifest, sep="\t", index=False)
    cache = tmp_path / "cache"

    strict = alzmri("preprocess", manifest, cache, *FAST_ARGS, "--fail-on-qc")
    assert strict.returncode == 2, strict.stdout + strict.stderr
    err = strict.stderr.strip()
    assert err.startswith("error: 1 of 3 scans failed to preprocess; first: sub-2 ses-01: QC (--fail-on-qc): ") and "\n" not in err, err
    assert "Traceback" not in strict.stdout + strict.stderr
    assert "QC warnings: 1 scan (failed by --fail-on-qc)" in strict.stdout
    assert list(table(cache / "manifest.tsv")["participant_id"]) == ["sub-1", "sub-3"]
    failures = table(cache / "failures.tsv")
    assert list(failures["participant_id"]) == ["sub-2"]
    error = failures["error"][0]
    assert error.startswith("QC (--fail-on-qc): ") and "mask volume" in error and "outside the adult intracranial range" in error, error
    page = (cache / "qc.html").read_text()
    assert page.index("sub-2") < page.index("sub-1") < page.index("sub-3")

    lenient = alzmri("preprocess", manifest, cache, *FAST_ARGS)  # the same cache: all three cached now
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    assert "0 done, 3 already cached, 0 failed, 1 with QC warnings" in lenient.stdout
    assert "QC warnings: 1 scan (listed first in qc.html" in lenient.stdout
    assert re.search(r"^  sub-2 ses-01: mask volume \d+ ml outside", lenient.stdout, re.M), lenient.stdout
    listed = table(cache / "manifest.tsv").set_index("participant_id")
    assert sorted(listed.index) == ["sub-1", "sub-2", "sub-3"]
    assert "mask volume" in listed.loc["sub-2", "warnings"] and listed.loc["sub-1", "warnings"] == listed.loc["sub-3", "warnings"] == ""
    assert not (cache / "failures.tsv").exists()  # the earlier run's failures are gone
    page = (cache / "qc.html").read_text()
    assert page.index("sub-2") < page.index("sub-1") < page.index("sub-3")
