"""Tiny synthetic data for tests: ellipsoid 'brains' whose dark 'ventricles' grow with disease."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def brain_volume(shape: tuple[int, int, int] = (24, 28, 22), ventricle: float = 0.15, seed: int = 0) -> np.ndarray:
    """An ellipsoid 'brain' (bright) with a central dark 'ventricle' of relative radius ``ventricle``."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij"))
    r = np.sqrt((grid**2).sum(axis=0))
    vol = np.where(r < 0.8, 1.0, 0.0)
    vol[r < ventricle] = 0.25
    vol += rng.normal(0, 0.03, shape)
    return np.clip(vol, 0, None).astype(np.float32)


def save_nifti(path: Path, data: np.ndarray, zooms: tuple[float, float, float] = (2.0, 2.0, 2.0), flip_x: bool = False) -> Path:
    """Write a volume; ``flip_x`` stores it in LAS orientation to exercise reorientation."""
    affine = np.diag([*zooms, 1.0])
    if flip_x:
        data = data[::-1]
        affine[0, 0] = -zooms[0]
        affine[0, 3] = zooms[0] * (data.shape[0] - 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data), affine), str(path))
    return path


def write_tiny_bids(root: Path, n_per_class: int = 6, classes: tuple[str, ...] = ("CN", "AD"), seed: int = 0) -> Path:
    """A BIDS folder with 1–2 sessions per subject; AD subjects have larger 'ventricles'."""
    rng = np.random.default_rng(seed)
    rows = []
    k = 0
    for diagnosis in classes:
        for _ in range(n_per_class):
            k += 1
            sub = f"sub-{k:03d}"
            for s in range(1 + k % 2):
                ses = f"ses-{s + 1:02d}"
                radius = (0.42 if diagnosis == "AD" else 0.15) + rng.normal(0, 0.03)
                save_nifti(root / sub / ses / "anat" / f"{sub}_{ses}_T1w.nii.gz", brain_volume(ventricle=radius, seed=k * 10 + s), flip_x=bool(k % 3 == 0))
                rows.append({"participant_id": sub, "session_id": ses, "diagnosis": diagnosis, "age": 62.0 + 1.5 * k + 2 * s})
    pd.DataFrame(rows).to_csv(root / "labels.tsv", sep="\t", index=False)
    return root


@pytest.fixture(scope="session")
def tiny_bids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention tiny BIDS cohort shared by tests (copy before modifying)."""
    return write_tiny_bids(tmp_path_factory.mktemp("tiny") / "bids")


@pytest.fixture(scope="session")
def prepared(tiny_bids: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny cohort preprocessed to 16³ and split 50/25/25 by subject (shared by training tests)."""
    from alzmri.cli.commands.split import run_split
    from alzmri.data.config import SplitConfig
    from alzmri.io.bids import load_scans
    from alzmri.preprocessing.config import PreprocessConfig
    from alzmri.preprocessing.runner import preprocess_scans

    root = tmp_path_factory.mktemp("e2e")
    preprocess_scans(load_scans(tiny_bids), root / "cache", PreprocessConfig(size=16, spacing=2.0, skull_strip="none"), workers=2, progress=False, report=False)
    run_split(SplitConfig(source=tiny_bids, out=root / "split", ratios=(0.5, 0.25, 0.25), seed=0))
    return {"root": root, "cache": root / "cache", "split": root / "split", "bids": tiny_bids}


def train_config(p: dict[str, Path], **kw):
    """A fast TrainConfig on the ``prepared`` data; keyword arguments override."""
    from alzmri.training.config import TrainConfig

    base = dict(cache=p["cache"], split=p["split"], out=p["root"] / "runs", model="liu_cnn_compact", epochs=4, batch_size=4, lr=1e-3, progress=False, threads=1)
    return TrainConfig(**(base | kw))


@pytest.fixture(scope="session")
def prepared88(prepared: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The ``prepared`` cohort upsampled to 88³, the smallest input of the paper-geometry liu2022."""
    from scipy.ndimage import zoom

    from alzmri.preprocessing.cache import CONFIG_FILE, MANIFEST_FILE, read_cache, write_config

    root = tmp_path_factory.mktemp("e2e88")
    cache, config = read_cache(prepared["cache"])
    (root / "cache" / "arrays").mkdir(parents=True)
    relative = []
    for path in cache["array"]:
        name = f"arrays/{Path(path).name}"
        np.save(root / "cache" / name, zoom(np.load(path).astype(np.float32), 88 / config.size, order=1))
        relative.append(name)
    table = pd.read_csv(prepared["cache"] / MANIFEST_FILE, sep="\t", dtype=str)
    table["array"] = relative
    table.to_csv(root / "cache" / MANIFEST_FILE, sep="\t", index=False)
    write_config(root / "cache", config.model_copy(update={"size": 88}))
    assert (root / "cache" / CONFIG_FILE).is_file()
    return {"root": root, "cache": root / "cache", "split": prepared["split"], "bids": prepared["bids"]}
