"""``alzmri explain`` end to end on the tiny cohort, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
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


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny alzmri synth cohort (with its ground truth), preprocessed without registration, and a 2-epoch model."""
    from alzmri.cli.commands.demo import DEMO_PREPROCESS
    from alzmri.cli.commands.split import run_split
    from alzmri.data.config import SplitConfig
    from alzmri.data.synth import SynthConfig, synthesize_cohort
    from alzmri.io.bids import load_scans
    from alzmri.preprocessing.runner import preprocess_scans
    from alzmri.training.fit import fit

    root = tmp_path_factory.mktemp("synth-explain")
    bids = synthesize_cohort(SynthConfig(subjects=8, classes=["CN", "AD"], sessions=(1, 1), voxel_size=4.0, atrophy_scale=3.0, workers=2), root / "bids", progress=False)
    preprocess_scans(load_scans(bids), root / "cache", DEMO_PREPROCESS.model_copy(update={"size": 16, "spacing": 4.0}), workers=2, progress=False, report=False)
    run_split(SplitConfig(source=bids, out=root / "split", ratios=(0.5, 0.25, 0.25), seed=0))
    paths = {"root": root, "cache": root / "cache", "split": root / "split", "truth": bids / "derivatives" / "synth"}
    return paths | {"run": fit(train_config(paths, epochs=2, batch_size=2, run_name="synth"))}


def test_explain_scores_true_anatomy_of_unregistered_synthetic_scans(synthetic_run: dict[str, Path], tmp_path: Path) -> None:
    p = synthetic_run
    out = tmp_path / "truth"
    args = ["explain", str(p["run"]), "--cache", str(p["cache"]), "--split", str(p["split"]), "--truth", str(p["truth"]), "--regions",
            "--target", "true", "--method", "saliency", "--smooth", "1", "--no-gif", "--out", str(out)]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "own Desikan-Killiany labels" in done.output and "hippocampus + entorhinal + lateral ventricles" in done.output
    table = pd.read_csv(out / "explain.tsv", sep="\t")
    assert (table["explained"] == table["diagnosis"]).all()  # --target true: every map explains the scan's own diagnosis
    assert table["planted_regions_enrichment"].notna().all() and np.isfinite(table["truth_enrichment"]).all()
    per_scan = pd.read_csv(out / "regions_per_scan.tsv", sep="\t")
    regions = per_scan[per_scan["kind"] == "region"]
    assert {"Left-Hippocampus", "Left-Lateral-Ventricle", "ctx-lh-entorhinal"} <= set(regions["name"])
    for _, scan in regions.groupby("scan"):
        assert scan["attribution_share"].sum() == pytest.approx(1.0, abs=1e-3)
    sanity = json.loads((out / "sanity.json").read_text())  # the sanity check maps what the run maps: smoothed, same class
    assert sanity["steps"] and all(np.isfinite(s["spearman"]) for s in sanity["steps"])
    # Smoothing spreads the map: more voxels above zero than the raw saliency of the same scan.
    raw = tmp_path / "raw"
    done = CliRunner().invoke(app, ["explain", str(p["run"]), "--cache", str(p["cache"]), "--split", str(p["split"]), "--target", "true",
                                    "--method", "saliency", "--no-gif", "--no-sanity", "--limit", "1", "--out", str(raw)])  # fmt: skip
    assert done.exit_code == 0, done.output
    first = f"{table['participant_id'][0]}_{table['session_id'][0]}"
    smoothed_map, raw_map = (np.asarray(nib.load(d / first / "map.nii.gz").dataobj) for d in (out, raw))
    assert (smoothed_map > 1e-6 * smoothed_map.max()).sum() > (raw_map > 1e-6 * raw_map.max()).sum()


def test_label_randomization_check(synthetic_run: dict[str, Path], tmp_path: Path) -> None:
    from alzmri.training.fit import fit

    p = synthetic_run
    shuffled = fit(train_config(p, epochs=2, batch_size=2, run_name="shuffled", shuffle_labels=True))
    common = ["explain", str(p["run"]), "--cache", str(p["cache"]), "--split", str(p["split"]), "--no-gif", "--no-sanity", "--method", "saliency"]
    done = CliRunner().invoke(app, [*common, "--label-randomized", str(shuffled), "--out", str(tmp_path / "lr")])
    assert done.exit_code == 0, done.output
    verdict = json.loads((tmp_path / "lr" / "label_randomization.json").read_text())
    table = pd.read_csv(tmp_path / "lr" / "explain.tsv", sep="\t")
    assert verdict["n_scans"] == len(table) == 2 and verdict["mean_spearman"] == pytest.approx(table["label_randomized_spearman"].mean(), abs=1e-3)
    assert "label randomisation" in done.output and verdict["message"].split(":")[0] in ("passed", "failed")
    # The same model compared with itself would correlate perfectly, so the check needs a --shuffle-labels run.
    done = CliRunner().invoke(app, [*common, "--label-randomized", str(p["run"]), "--out", str(tmp_path / "self")])
    assert done.exit_code == 2 and "was not trained with --shuffle-labels" in done.stderr


def test_shuffled_labels_keep_subjects_whole_and_class_counts() -> None:
    from alzmri.training.fit import shuffle_subject_labels

    scans = pd.DataFrame({"participant_id": [f"sub-{i // 2:02d}" for i in range(40)], "diagnosis": ["CN"] * 20 + ["AD"] * 20})
    shuffled = shuffle_subject_labels(scans, seed=0)
    assert shuffled.groupby("participant_id")["diagnosis"].nunique().eq(1).all()
    assert shuffled.drop_duplicates("participant_id")["diagnosis"].value_counts().to_dict() == {"CN": 10, "AD": 10}
    assert not shuffled["diagnosis"].equals(scans["diagnosis"]) and shuffled.equals(shuffle_subject_labels(scans, seed=0))
    assert scans["diagnosis"].iloc[0] == "CN"  # the input is not modified


def test_explain_target_errors_are_one_line(synthetic_run: dict[str, Path], tmp_path: Path) -> None:
    p = synthetic_run
    common = ["explain", str(p["run"]), "--cache", str(p["cache"]), "--split", str(p["split"]), "--limit", "1", "--no-gif", "--no-sanity", "--out", str(tmp_path)]
    done = CliRunner().invoke(app, [*common, "--occlusion-size", "4"])
    assert done.exit_code == 2 and "--occlusion-size applies to --method occlusion only" in done.stderr
    done = CliRunner().invoke(app, [*common, "--method", "occlusion", "--occlusion-size", "4", "--target", "AD"])
    assert done.exit_code == 0, done.output
    assert (pd.read_csv(tmp_path / "explain.tsv", sep="\t")["explained"] == "AD").all()
    done = CliRunner().invoke(app, [*common, "--target", "MCI"])
    assert done.exit_code == 2 and "--target 'MCI' is not a class of this model (CN, AD)" in done.stderr
    scan = next(iter(sorted((p["root"] / "bids").glob("sub-*/ses-*/anat/*_T1w.nii.gz"))))
    done = CliRunner().invoke(app, ["explain", str(p["run"]), "--scan", str(scan), "--target", "true", "--no-gif", "--no-sanity", "--out", str(tmp_path)])
    assert done.exit_code == 2 and "--target true needs each scan's diagnosis" in done.stderr
    first = pd.read_csv(p["split"] / "test.tsv", sep="\t", dtype=str).iloc[0]
    labels = next(iter(p["truth"].rglob(f"{first['participant_id']}_{first['session_id']}_desc-aparcaseg_dseg.nii.gz")))
    moved = tmp_path / "moved"
    labels.rename(moved)
    try:
        done = CliRunner().invoke(app, [*common, "--truth", str(p["truth"]), "--regions"])
        assert done.exit_code == 2 and "re-running the same 'alzmri synth' command" in done.stderr
    finally:
        moved.rename(labels)
