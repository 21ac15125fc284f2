"""``alzmri explain`` end to end on the tiny cohort, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from alzmri.cli.main import app

from conftest import train_config


@pytest.fixture(scope="module")
def trained(prepared: dict[str, Path]) -> Path:
    from alzmri.training.fit import fit

    return fit(train_config(prepared, epochs=2, run_name="explained"))


@pytest.mark.slow
def test_explain_writes_maps_pictures_table_and_sanity(prepared: dict[str, Path], trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "explain"
    args = ["explain", str(trained), "--cache", str(prepared["cache"]), "--split", str(prepared["split"]), "--limit", "2", "--out", str(out)]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    table = pd.read_csv(out / "explain.tsv", sep="\t", dtype=str)
    test = pd.read_csv(prepared["split"] / "test.tsv", sep="\t", dtype=str)
    assert list(table["participant_id"]) == list(test["participant_id"][:2])
    for row in table.itertuples():
        folder = out / f"{row.participant_id}_{row.session_id}"
        for name in ("map.nii.gz", "overlay.png", "depth_profile.png", "sweep.gif"):
            assert (folder / name).stat().st_size > 100, name
        with Image.open(folder / "sweep.gif") as gif:
            assert gif.n_frames == 3 * 16  # axial, coronal and sagittal sweeps of a 16³ input
    assert (table["kept_voxels"].astype(int) > 0).all() and table["predicted"].isin(["CN", "AD"]).all()
    sanity = json.loads((out / "sanity.json").read_text())
    assert len(sanity["steps"]) >= 4 and "passed" in sanity and "Spearman" in done.output


def test_explain_errors_are_one_line(prepared: dict[str, Path], trained: Path, tmp_path: Path) -> None:
    def error(*args: str) -> str:
        done = CliRunner().invoke(app, ["explain", *map(str, args)])
        assert done.exit_code == 2, done.output
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
        return lines[0]

    common = ("--cache", prepared["cache"], "--split", prepared["split"], "--limit", "1", "--no-sanity", "--no-gif", "--out", tmp_path / "e")
    message = error(trained, *common, "--layer", "features.99")
    assert "no layer 'features.99'" in message and "features." in message.split("layers with feature-map outputs")[1]
    (tmp_path / "empty-run").mkdir()
    assert "has no checkpoints/best-loss.ckpt" in error(tmp_path / "empty-run", *common)
    assert "preprocessed differently" in error(trained, "--cache", prepared88_cache(prepared, tmp_path), "--split", prepared["split"], "--no-sanity")
    assert "give --scan" in error(trained)


def prepared88_cache(prepared: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the cache whose config claims another input size (arrays untouched)."""
    import shutil

    from alzmri.preprocessing.cache import read_cache, write_config

    copy = tmp_path / "other-cache"
    shutil.copytree(prepared["cache"], copy)
    _, config = read_cache(copy)
    write_config(copy, config.model_copy(update={"size": 20}))
    return copy


def test_explain_a_raw_scan_preprocessed_like_the_training_data(prepared: dict[str, Path], trained: Path, tmp_path: Path) -> None:
    from alzmri.io.bids import load_scans

    scan = load_scans(prepared["bids"])["path"].iloc[0]
    done = CliRunner().invoke(app, ["explain", str(trained), "--scan", str(scan), "--method", "integrated_gradients", "--no-sanity", "--no-gif",
                                    "--out", str(tmp_path / "raw")])  # fmt: skip
    assert done.exit_code == 0, done.output
    table = pd.read_csv(tmp_path / "raw" / "explain.tsv", sep="\t", dtype=str)
    assert len(table) == 1 and table["participant_id"].iloc[0] == Path(scan).name.split(".nii")[0]
    import nibabel as nib

    folder = tmp_path / "raw" / table["participant_id"].iloc[0]
    assert nib.load(folder / "map.nii.gz").shape == (16, 16, 16)
    back = nib.load(folder / "map_scan_space.nii.gz")  # the map on the scan's own grid
    assert back.shape == nib.load(scan).shape and np.allclose(back.affine, nib.load(scan).affine)


@pytest.mark.slow
def test_explain_regions_needs_mni_and_reports_the_planted_regions(prepared: dict[str, Path], trained: Path, tmp_path: Path) -> None:
    from alzmri.io.bids import load_scans
    from alzmri.preprocessing.config import PreprocessConfig
    from alzmri.preprocessing.runner import preprocess_scans
    from alzmri.training.fit import fit

    # Without registration the grid is not in MNI space: refused with the reason.
    done = CliRunner().invoke(app, ["explain", str(trained), "--cache", str(prepared["cache"]), "--split", str(prepared["split"]), "--regions", "--limit", "1"])
    assert done.exit_code == 2 and "registered to MNI152" in done.stderr

    config = PreprocessConfig(size=16, spacing=2.0, skull_strip="none", steps=("reorient", "resample", "skull_strip", "register", "crop", "resize", "normalize"))
    preprocess_scans(load_scans(prepared["bids"]), tmp_path / "mni-cache", config, workers=2, progress=False, report=False)
    run = fit(train_config(prepared, cache=tmp_path / "mni-cache", epochs=1, run_name="mni", out=tmp_path / "runs"))
    out = tmp_path / "regions"
    done = CliRunner().invoke(app, ["explain", str(run), "--cache", str(tmp_path / "mni-cache"), "--split", str(prepared["split"]), "--regions",
                                    "--limit", "3", "--method", "saliency", "--no-gif", "--no-sanity", "--out", str(out)])  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "hippocampus + entorhinal + lateral ventricles" in done.output
    per_scan = pd.read_csv(out / "regions_per_scan.tsv", sep="\t")
    regions = per_scan[per_scan["kind"] == "region"]
    for _, scan in regions.groupby("scan"):
        assert scan["attribution_share"].sum() == pytest.approx(1.0, abs=1e-3) and scan["volume_share"].sum() == pytest.approx(1.0, abs=1e-3)
    assert {"Left-Hippocampus", "Right-Lateral-Ventricle"} <= set(regions["name"])
    assert (out / "regions.png").stat().st_size > 1000 and (out / "regions_by_class.tsv").is_file()
    table = pd.read_csv(out / "explain.tsv", sep="\t")
    assert table["planted_regions_enrichment"].notna().all()
