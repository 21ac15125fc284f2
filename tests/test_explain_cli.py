"""``alzmri explain`` end to end on the tiny cohort, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
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
    # saliency: at 16³ the Grad-CAM layer is 1³, one number that a 4-epoch model can leave negative (an empty map)
    args = ["explain", str(trained), "--cache", str(prepared["cache"]), "--split", str(prepared["split"]), "--limit", "2", "--out", str(out),
            "--method", "saliency"]  # fmt: skip
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    table = pd.read_csv(out / "explain.tsv", sep="\t", dtype=str)
    test = pd.read_csv(prepared["split"] / "test.tsv", sep="\t", dtype=str)
    assert list(table["participant_id"]) == list(test["participant_id"][:2])
    for row in table.itertuples():
        folder = out / f"{row.participant_id}_{row.session_id}"
        for name in ("map.nii.gz", "overlay.png", "depth_profile.png", "sweep.gif"):
            assert (folder / name).stat().st_size > 100, name
        with Image.open(folder / "sweep.gif") as gif:  # axial, coronal and sagittal sweeps of a 16³ input, 60 ms a slice
            durations = []  # (Pillow merges identical neighbouring frames, such as empty edge slices, adding their times)
            for frame in range(gif.n_frames):
                gif.seek(frame)
                durations.append(gif.info["duration"])
            assert sum(durations) == 3 * 16 * 60 and 3 < gif.n_frames <= 3 * 16
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


# ------------------------------------------------------------------------------------------------
# Explanations that stay in the brain (issue 13, item 7): planted models, empty maps, MNI152 input.


class LooksAt(nn.Module):
    """Class 1's logit is the mean of one block of the input (class 0's its negative), through a 1³ convolution Grad-CAM can hook."""

    def __init__(self, block: tuple[slice, slice, slice]) -> None:
        super().__init__()
        self.features = nn.Conv3d(1, 1, 1)
        self.block = block
        with torch.no_grad():
            self.features.weight.fill_(1.0)
            self.features.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = self.features(x)[(slice(None), slice(None), *self.block)].mean((1, 2, 3, 4))
        return torch.stack([-evidence, evidence], dim=1)


class Dead(nn.Module):
    """Both logits fall as the (positive) activations of ``features`` grow: Grad-CAM's ReLU leaves nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.fill_(0.01)
            self.features[0].bias.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activation = self.features(x).mean((1, 2, 3, 4))
        return torch.stack([-activation, -2 * activation], dim=1)


def plant(monkeypatch: pytest.MonkeyPatch, trained: Path, model: nn.Module) -> None:
    """Have ``alzmri explain`` explain ``model`` (with the trained run's classes and preprocessing)."""
    import alzmri.explain.run as run

    _, hp = run.load_classifier(run.checkpoint_of(trained))
    monkeypatch.setattr(run, "load_classifier", lambda _path: (model.eval(), {**hp, "model_name": None}))


def explain_cache(trained: Path, cache: Path, split: Path, out: Path, *extra: str) -> tuple[str, pd.DataFrame]:
    args = ["explain", str(trained), "--cache", str(cache), "--split", str(split), "--no-sanity", "--no-gif", "--out", str(out), *extra]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    return done.output, pd.read_csv(out / "explain.tsv", sep="\t", dtype={"participant_id": str, "session_id": str})


def test_a_model_that_looks_at_the_background_is_flagged(prepared: dict[str, Path], trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plant(monkeypatch, trained, LooksAt((slice(0, 4),) * 3))  # the corner of the grid: background in every scan
    out = tmp_path / "corner"
    output, table = explain_cache(trained, prepared["cache"], prepared["split"], out, "--limit", "2", "--method", "saliency")
    assert (table["brain_mask"] == "preprocessing").all()  # the cache's stored masks
    assert table["evidence_outside_brain"].all() and (table["outside_brain_share"] > 0.99).all()
    names = [f"{p}_{s}" for p, s in zip(table["participant_id"], table["session_id"], strict=True)]
    warning = next(line for line in output.splitlines() if line.startswith("warning:"))
    assert "outside the brain" in warning and all(name in warning for name in names)
    assert output.count("MOSTLY OUTSIDE THE BRAIN") == 2
    summary = json.loads((out / names[0] / "summary.json").read_text())
    assert summary["evidence_outside_brain"] is True and summary["outside_brain_share"] > 0.99 and "MOSTLY OUTSIDE" in summary["note"]
    in_brain = np.asarray(nib.load(out / names[0] / "map.nii.gz").dataobj)
    assert not in_brain[:4, :4, :4].any()  # map.nii.gz keeps the brain only
    assert red_share(out / names[0] / "overlay.png") > 0.005  # the warning note is drawn
    # A model that looks at the middle of the brain is not flagged.
    plant(monkeypatch, trained, LooksAt((slice(6, 10),) * 3))
    output, table = explain_cache(trained, prepared["cache"], prepared["split"], tmp_path / "middle", "--limit", "2", "--method", "saliency")
    assert not table["evidence_outside_brain"].any() and (table["outside_brain_share"] < 0.01).all() and "warning:" not in output


def red_share(png: Path) -> float:
    """Share of the picture's pixels in the note's firebrick red."""
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=int)
    return float((np.abs(pixels - np.array([178, 34, 34])).sum(axis=2) < 40).mean())


def test_an_empty_gradcam_map_is_reported_as_empty(prepared: dict[str, Path], trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plant(monkeypatch, trained, Dead())
    out = tmp_path / "dead"
    output, table = explain_cache(trained, prepared["cache"], prepared["split"], out, "--limit", "2", "--method", "gradcam")
    assert table["map_empty"].all() and (table["note"] == "no positive evidence: the map is empty").all()
    assert table["top_component_share"].isna().all() and (table["kept_voxels"] == 0).all() and not table["evidence_outside_brain"].any()
    assert "nan" not in output.lower() and output.count("no positive evidence: the map is empty") == 2
    assert "2 of 2 maps are empty" in output
    first = f"{table['participant_id'][0]}_{table['session_id'][0]}"
    summary = json.loads((out / first / "summary.json").read_text())
    assert summary["map_empty"] is True and summary["outside_brain_share"] is None
    overlay = out / first / "overlay.png"
    assert red_share(overlay) > 0.005  # the "empty map" note
    grey = np.asarray(Image.open(overlay).convert("L"), dtype=float)
    assert (grey[grey < 250] > 60).mean() > 0.1  # the middle slices show the brain, not a black slice 0


def test_an_old_cache_without_masks_still_explains(prepared: dict[str, Path], trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_explain_brain import old_cache

    old = old_cache(prepared["cache"], tmp_path / "old-cache")
    output, table = explain_cache(trained, old, prepared["split"], tmp_path / "plain", "--limit", "2")
    assert (table["brain_mask"] == "estimated").all() and "estimated from the background for 2 of 2 scans" in output
    # The estimate survives the resize undershoot of these arrays: the background corner is not brain.
    plant(monkeypatch, trained, LooksAt((slice(0, 4),) * 3))
    _, table = explain_cache(trained, old, prepared["split"], tmp_path / "corner", "--limit", "2", "--method", "saliency")
    assert table["evidence_outside_brain"].all() and (table["outside_brain_share"] > 0.99).all()


@pytest.fixture(scope="module")
def mni_cache(prepared: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Scans already in MNI152 space (the 2 mm template's brain, as SPM or Clinica would hand them over), preprocessed like ``prepared``."""
    from alzmri.io.bids import load_scans
    from alzmri.io.templates import load_mni152
    from alzmri.preprocessing.cache import read_cache
    from alzmri.preprocessing.runner import preprocess_scans

    root = tmp_path_factory.mktemp("mni-input")
    mni = load_mni152()
    brain = (mni.t1 * mni.brain_mask)[::2, ::2, ::2].astype(np.float32)
    affine = mni.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    rng = np.random.default_rng(0)
    rows = []
    for k, diagnosis in enumerate(["CN", "AD", "CN"]):
        sub = f"sub-{k + 1:02d}"
        scan = brain * (1 + rng.normal(0, 0.02, brain.shape)).astype(np.float32)
        path = root / "bids" / sub / "ses-01" / "anat" / f"{sub}_ses-01_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(scan, affine), str(path))
        rows.append({"participant_id": sub, "session_id": "ses-01", "diagnosis": diagnosis})
    pd.DataFrame(rows).to_csv(root / "bids" / "labels.tsv", sep="\t", index=False)
    _, config = read_cache(prepared["cache"])  # the trained model's preprocessing, no 'register'
    preprocess_scans(load_scans(root / "bids"), root / "cache", config, workers=2, progress=False, report=False)
    (root / "split").mkdir()
    for name in ("train", "val", "test"):
        pd.DataFrame(rows).to_csv(root / "split" / f"{name}.tsv", sep="\t", index=False)
    return {"cache": root / "cache", "split": root / "split"}


def test_regions_on_scans_declared_in_mni152_space(mni_cache: dict[str, Path], trained: Path, tmp_path: Path) -> None:
    common = ["explain", str(trained), "--cache", str(mni_cache["cache"]), "--split", str(mni_cache["split"]), "--regions", "--method", "saliency",
              "--no-sanity", "--no-gif"]  # fmt: skip
    done = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "refused")])
    assert done.exit_code == 2 and "--input-space MNI152" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    out = tmp_path / "regions"
    done = CliRunner().invoke(app, [*common, "--input-space", "MNI152", "--out", str(out)])
    assert done.exit_code == 0, done.output
    assert "declared in MNI152 space" in done.output and "less than half" not in done.output
    table = pd.read_csv(out / "explain.tsv", sep="\t")
    assert (table["atlas_coverage"] > 0.7).all() and table["planted_regions_share"].notna().all()
    per_scan = pd.read_csv(out / "regions_per_scan.tsv", sep="\t")
    regions = per_scan[per_scan["kind"] == "region"]
    assert {"Left-Hippocampus", "Left-Lateral-Ventricle", "Right-Cerebral-White-Matter"} <= set(regions["name"])
    for _, scan in regions.groupby("scan"):
        assert scan["attribution_share"].sum() == pytest.approx(1.0, abs=1e-3)
