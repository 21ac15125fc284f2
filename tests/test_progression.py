"""Progression generators: networks, ROI-weighted losses, metrics against scikit-image, FID, resume, the chain, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from alzmri.cli.main import app
from alzmri.data.slices.store import ARRAY_DIR, SliceSetConfig, save_slice, write_slice_cache
from alzmri.data.splits import write_splits
from alzmri.evaluation.progression.features import fid
from alzmri.evaluation.progression.image_metrics import image_metrics, ms_ssim_scales
from alzmri.generate.config import ProgressionConfig
from alzmri.generate.fit import train_progression
from alzmri.generate.losses import patch_bce, patch_weights
from alzmri.generate.run import load_run
from alzmri.models.progression import StageDiscriminator, StageGenerator
from alzmri.utils.errors import AlzmriError

STAGES = ["NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented"]


def _toy_image(rng: np.random.Generator, size: int, ventricle: float, shift: tuple[int, int]) -> np.ndarray:
    """A z-scored 'brain' disc (background exactly 0) with a dark 'ventricle' disc of the given radius."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    yy, xx = yy - shift[0], xx - shift[1]
    brain = np.hypot(yy, xx) < size * 0.4
    image = np.where(brain, 1.0 + 0.1 * rng.standard_normal((size, size)), 0.0)
    image[np.hypot(yy, xx) < ventricle] = -1.5
    return image[None].astype(np.float32)


def toy_settings(size: int = 16, origin: str = "volumes") -> SliceSetConfig:
    return SliceSetConfig(origin=origin, size=size, channels=1, classes=STAGES, normalization="volume" if origin == "volumes" else "z-score")


def make_toy_cache(root: Path, subjects: int = 9, size: int = 16, longitudinal: bool = True, seed: int = 0, origin: str = "volumes") -> tuple[Path, Path]:
    """A slice cache of subjects whose ventricle grows by a subject's own rate per stage, and a subject-level split (``origin`` images: as if imported)."""
    rng = np.random.default_rng(seed)
    cache = root / f"slices{size}{'' if longitudinal else '-cross'}"
    rows = []
    for i in range(subjects):
        pid = f"sub-{i + 1:02d}"
        rate, shift = rng.uniform(0.6, 1.2), tuple(int(v) for v in rng.integers(-1, 2, size=2))
        visits = range(len(STAGES)) if longitudinal else [i % len(STAGES)]
        for k in visits:
            sid = f"ses-{k + 1:02d}"
            array = f"{ARRAY_DIR}/{pid}_{sid}_axial-008.npy"
            save_slice(cache / array, _toy_image(rng, size, 1.5 + rate * k, shift))
            rows.append({"participant_id": pid, "session_id": sid, "slice_id": "axial-008", "slice_index": "8", "diagnosis": STAGES[k],
                         "subject_known": True, "plane": "axial", "array": array, "source": "", "source_hash": ""})  # fmt: skip
    write_slice_cache(cache, rows, toy_settings(size, origin))
    table = pd.DataFrame(rows)[["participant_id", "session_id", "diagnosis"]]
    people = sorted(table["participant_id"].unique())
    parts = {"train": people[: len(people) - 4], "val": people[-4:-2], "test": people[-2:]}
    split = root / f"split{size}{'' if longitudinal else '-cross'}"
    write_splits({name: table[table["participant_id"].isin(ids)].reset_index(drop=True) for name, ids in parts.items()}, split)
    return cache, split


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("progression")
    cache, split = make_toy_cache(root)
    return {"root": root, "cache": cache, "split": split}


def _config(toy: dict[str, Path], **kw) -> ProgressionConfig:
    settings = {"cache": toy["cache"], "split": toy["split"], "out": toy["root"] / "runs", "width": 4, "batch_size": 4, "epochs": 2,
                "progress": False, "mlflow": False, "samples": 2}  # fmt: skip
    settings.update(kw)
    return ProgressionConfig(**settings)


def test_generator_and_discriminator_shapes_and_tanh_range() -> None:
    torch.manual_seed(0)
    x2 = torch.rand(3, 1, 32, 32) * 2 - 1
    x3 = torch.rand(2, 1, 16, 16, 16) * 2 - 1
    for residual in (True, False):
        g2, g3 = StageGenerator(2, 1, 4, residual).eval(), StageGenerator(3, 1, 4, residual).eval()
        with torch.no_grad():
            y2, y3 = g2(x2 * 5), g3(x3)  # inputs beyond [-1, 1] still map into it
        assert y2.shape == x2.shape and y3.shape == x3.shape
        assert float(y2.abs().max()) <= 1.0 and float(y3.abs().max()) <= 1.0
    assert torch.allclose(StageGenerator(2, 1, 4, residual=True).eval()(x2), x2.clamp(-0.999, 0.999), atol=1e-5)  # starts as the identity
    seed_widths = [m.out_channels for m in StageGenerator(2, 1, 64).encoder if isinstance(m, torch.nn.Conv2d)]
    assert seed_widths == [64, 128, 256]
    d = StageDiscriminator(2, 1, 4)
    with torch.no_grad():
        assert d(x2).shape == (3, 1, 4, 4) and 0 < float(d.score(x2).min()) and float(d.score(x2).max()) < 1
    assert StageDiscriminator(3, 1, 4)(x3).shape == (2, 1, 2, 2, 2)
    with pytest.raises(AlzmriError, match="multiples of 8"):
        StageGenerator(2, 1, 4)(torch.zeros(1, 1, 20, 20))


def test_roi_weights_count_only_the_brain_patches() -> None:
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:24, 8:24] = 1  # the brain covers the central 2 x 2 of the 4 x 4 patches
    weights = patch_weights(mask, (4, 4))
    assert weights.shape == (2, 1, 4, 4) and float(weights[0, 0, 1, 1]) == 1.0 and float(weights[0, 0, 0, 0]) == 0.0
    logits = torch.randn(2, 1, 4, 4)
    outside, inside = logits.clone(), logits.clone()
    outside[:, :, 0, :] += 5.0  # patches without brain
    inside[:, :, 1, 1] += 5.0
    for real in (True, False):
        base = patch_bce(logits, real, weights)
        assert torch.isclose(patch_bce(outside, real, weights), base)
        assert not torch.isclose(patch_bce(inside, real, weights), base)
        assert not torch.isclose(patch_bce(outside, real), patch_bce(logits, real))  # without ROI the background counts
    brain = weights > 0
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[brain], torch.ones(int(brain.sum())))
    assert torch.isclose(patch_bce(logits, True, weights), expected)


def test_image_metrics_match_scikit_image() -> None:
    from scipy.ndimage import gaussian_filter
    from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

    rng = np.random.default_rng(1)
    truth = np.stack([gaussian_filter(rng.normal(0, 0.4, (1, 48, 48)), (0, 1.5, 1.5)) for _ in range(3)]).clip(-1, 1).astype(np.float32)
    pred = (truth + rng.normal(0, 0.05, truth.shape)).clip(-1, 1).astype(np.float32)
    mask = np.zeros_like(truth)
    mask[:, :, 10:40, 5:30] = 1
    values = image_metrics(pred, truth, mask)
    for i in range(3):
        t, p = truth[i, 0].astype(float), pred[i, 0].astype(float)
        assert np.isclose(values["mse"][i], mean_squared_error(t, p), rtol=1e-4)
        assert np.isclose(values["psnr"][i], peak_signal_noise_ratio(t, p, data_range=2.0), rtol=1e-4)
        ssim = structural_similarity(t, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2.0)
        assert np.isclose(values["ssim"][i], ssim, atol=1e-4)
        assert np.isclose(values["mse_brain"][i], ((t - p)[mask[i, 0] > 0] ** 2).mean(), rtol=1e-4)
        cropped = structural_similarity(t, p, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=2.0, full=True)[1][5:-5, 5:-5]
        assert np.isclose(values["ssim_brain"][i], cropped[mask[i, 0, 5:-5, 5:-5] > 0].mean(), atol=1e-4)  # the map inside the brain
    same = image_metrics(truth, truth, mask)
    assert np.allclose(same["ssim"], 1) and np.allclose(same["ms_ssim"], 1, atol=1e-5) and np.allclose(same["ssim_brain"], 1)
    assert (values["ms_ssim"] < 1).all() and (values["ms_ssim"] > 0.5).all()
    assert [ms_ssim_scales(n) for n in (16, 48, 64, 256)] == [1, 3, 3, 5]


def test_fid_of_identical_sets_is_zero_and_of_shifted_sets_positive() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 8))
    assert fid(a, a.copy()) == pytest.approx(0.0, abs=1e-6)
    shifted = fid(a, a + 0.5)
    assert shifted == pytest.approx(8 * 0.25, rel=1e-3)  # |mean difference|², same covariance
    assert fid(a, rng.normal(size=(200, 8))) < shifted
    assert np.isnan(fid(a[:1], a))


def test_training_resumes_exactly_after_a_kill(toy: dict[str, Path]) -> None:
    straight = train_progression(_config(toy, run_name="straight"))
    one = train_progression(_config(toy, run_name="killed", epochs=1))  # "killed" after epoch 1: its checkpoint is what survived
    assert load_run(one / "checkpoints" / "last.pt").epoch == 1
    resumed = train_progression(_config(toy, run_name="killed", epochs=2))
    a, b = load_run(straight / "checkpoints" / "last.pt"), load_run(resumed / "checkpoints" / "last.pt")
    assert a.epoch == b.epoch == 2 and a.pairing == "paired" and len(a.generators) == 3
    for ga, gb in zip(a.generators, b.generators, strict=True):
        for (name, pa), (_, pb) in zip(ga.state_dict().items(), gb.state_dict().items(), strict=True):
            assert torch.equal(pa, pb), name
    timeless = [[{k: v for k, v in h.items() if k != "seconds"} for h in r.history] for r in (a, b)]
    assert timeless[0] == timeless[1] and [h["epoch"] for h in b.history] == [1, 2]
    assert (straight / "samples" / "epoch-002.png").is_file()
    # best.pt: the epoch with the lowest validation MSE against the true follow-up; a run folder means it
    scores = [np.mean([v for k, v in h.items() if k.endswith("_mse_brain")]) for h in a.history]
    best = json.loads((straight / "result.json").read_text())["best_epoch"]
    assert best == 1 + int(np.argmin(scores)) and load_run(straight).epoch == best
    with pytest.raises(AlzmriError, match="other settings"):
        train_progression(_config(toy, run_name="straight", roi=False))


def test_chain_of_three_and_evaluation_against_the_true_future(toy: dict[str, Path]) -> None:
    from alzmri.evaluation.config import EvaluateProgressionConfig
    from alzmri.evaluation.progression.evaluate import evaluate_progression
    from alzmri.training.config import TrainConfig
    from alzmri.training.fit import fit

    run_dir = train_progression(_config(toy, run_name="chain", epochs=3))
    run = load_run(run_dir)
    x = np.zeros((2, 1, 16, 16), dtype=np.float32)
    outputs = run.chain(x)
    assert len(outputs) == 3 and all(o.shape == x.shape for o in outputs)
    assert np.allclose(outputs[1], run.step(outputs[0], 1)) and np.allclose(outputs[2], run.step(outputs[1], 2))  # each output feeds the next
    assert np.allclose(run.chain(x, start=2)[0], run.step(x, 2))  # a chain can start at a later stage
    classifier = fit(TrainConfig(cache=toy["cache"], split=toy["split"], out=toy["root"] / "clf", model="small_cnn_2d", epochs=2, batch_size=4,
                                 trackers=[], progress=False, augmentations=[]))  # fmt: skip
    scripted = toy["root"] / "features.pt"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())), str(scripted))
    summary = evaluate_progression(EvaluateProgressionConfig(run=run_dir, cache=toy["cache"], split=toy["split"], bootstrap=100,
                                                             classifier=classifier / "checkpoints" / "best-loss.ckpt", feature_net=scripted))  # fmt: skip
    out = Path(summary["out"])
    assert summary["true_future"] and set(summary["transitions"]) == {f"{a} → {b}" for a, b in zip(STAGES, STAGES[1:], strict=False)}
    first = summary["transitions"]["NonDemented → VeryMildDemented"]
    assert first["mse__no_change"]["n_subjects"] == 2 and first["mse__no_change"]["estimate"] > 0
    assert np.isclose(first["mse__generator_minus_no_change"]["estimate"], first["mse__generator"]["estimate"] - first["mse__no_change"]["estimate"], atol=1e-6)
    pairs = pd.read_csv(out / "pairs.tsv", sep="\t")
    assert len(pairs) == 2 * 3 and {"psnr__mean_change", "ms_ssim__generator"} <= set(pairs.columns)
    # the baselines by hand: no change is the input, mean change adds the training pairs' average change
    from alzmri.generate.data import load_stage_images
    from alzmri.preprocessing.cache import load_array

    test = pd.read_csv(toy["cache"] / "manifest.tsv", sep="\t")
    test = test[test["participant_id"] == pairs["participant_id"].iloc[0]].sort_values("session_id")
    unit = [np.clip(np.asarray(load_array(str(toy["cache"] / a)), np.float32) / run.scale, -1, 1) for a in test["array"]]
    assert np.isclose(pairs["mse__no_change"].iloc[0], float(((unit[1] - unit[0]) ** 2).mean()), rtol=1e-4)
    assert np.isclose(pairs["mse__mean_change"].iloc[0], float(((np.clip(unit[0] + run.mean_change[0], -1, 1) - unit[1]) ** 2).mean()), rtol=1e-4)
    train, _ = load_stage_images(pd.read_csv(toy["cache"] / "manifest.tsv", sep="\t").assign(array=lambda d: [str(toy["cache"] / a) for a in d["array"]])
                                 .merge(pd.read_csv(toy["split"] / "train.tsv", sep="\t")[["participant_id", "session_id"]]), 2, run.scale)  # fmt: skip
    first_two = train.images.reshape(-1, 4, 1, 16, 16)  # 5 subjects x 4 stages, in session order
    assert np.allclose(run.mean_change[0], (first_two[:, 1] - first_two[:, 0]).mean(axis=0), atol=1e-5)
    chain = pd.read_csv(out / "chain.tsv", sep="\t")
    assert sorted(chain["step"].unique()) == [0, 1, 2, 3] and len(chain) == 2 * 4 and chain["has_truth"].all()
    step3 = summary["chain"]["ModerateDemented"]
    assert step3["mse__mean_change"]["n_images"] == 2  # against the true ModerateDemented visit, from the NonDemented input
    assert {r["features"] for r in summary["fid"]} == {"classifier", "file:features.pt"}
    no_change = {(r["features"], r["from"], r["stage"]): r["fid_no_change"] for r in summary["fid"] if r["kind"] == "chain"}
    assert no_change[("classifier", "NonDemented", "ModerateDemented")] > no_change[("classifier", "NonDemented", "VeryMildDemented")]
    assert "no change" in (out / "report.md").read_text() and (out / "chain_examples.png").is_file() and (out / "predicted_stage.png").is_file()
    assert summary["regions"].startswith("not available")  # the toy cache is not registered

    two = fit(TrainConfig(cache=toy["cache"], split=toy["split"], out=toy["root"] / "clf2", model="small_cnn_2d", epochs=1, batch_size=4,
                          trackers=[], progress=False, augmentations=[], classes=["NonDemented", "ModerateDemented"]))  # fmt: skip
    runner = CliRunner()
    done = runner.invoke(app, ["evaluate-progression", str(run_dir), "--cache", str(toy["cache"]), "--split", str(toy["split"]),
                               "--classifier", str(two / "checkpoints" / "best-loss.ckpt"), "--bootstrap", "100"])  # fmt: skip
    assert done.exit_code != 0 and "not the run's stages" in done.output and "Traceback" not in done.output
    assert len(done.output.strip().splitlines()) == 1


def test_progress_writes_every_stage_and_refuses_other_inputs(toy: dict[str, Path], tmp_path: Path) -> None:
    run_dir = train_progression(_config(toy, run_name="straight"))
    scan = sorted((toy["cache"] / ARRAY_DIR).glob("sub-01_ses-01_*.npy"))[0]
    runner = CliRunner()
    done = runner.invoke(app, ["progress", str(run_dir), str(scan), "--out", str(tmp_path / "p")])
    assert done.exit_code == 0, done.output
    record = json.loads((tmp_path / "p" / "progress.json").read_text())
    assert record["stages"] == STAGES and (tmp_path / "p" / "chain.gif").is_file() and (tmp_path / "p" / "chain.png").is_file()
    assert np.load(tmp_path / "p" / "stage-3-ModerateDemented.npy").shape == (1, 16, 16)
    change = np.load(tmp_path / "p" / "change-VeryMildDemented.npy")
    assert np.allclose(change, np.load(tmp_path / "p" / "stage-1-VeryMildDemented.npy") - np.load(tmp_path / "p" / "stage-0-NonDemented.npy"), atol=1e-3)
    later = runner.invoke(app, ["progress", str(run_dir), str(scan), "--stage", "mildDemented", "--out", str(tmp_path / "q")])
    assert later.exit_code == 0 and json.loads((tmp_path / "q" / "progress.json").read_text())["stages"] == STAGES[2:]

    other, _ = make_toy_cache(tmp_path, subjects=6, size=24)  # prepared differently: 24² slices
    wrong = shutil.copytree(toy["cache"], tmp_path / "copy")
    np.save(wrong / ARRAY_DIR / "odd.npy", np.zeros((1, 24, 24), np.float16))  # an array of the wrong size in a cache made like the run's
    for args, message in (
        ([str(sorted((other / ARRAY_DIR).glob("*.npy"))[0])], "prepared differently"),
        ([str(wrong / ARRAY_DIR / "odd.npy")], "1x24x24, the run's images are 1x16x16"),
        ([str(scan), "--stage", "ModerateDemented"], "last stage"),
        ([str(scan), "--stage", "AD"], "not one of the run's stages"),
        ([str(tmp_path / "missing.npy")], "does not exist"),
    ):
        result = runner.invoke(app, ["progress", str(run_dir), *args])
        assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output, (args, result.output)
    result = runner.invoke(app, ["evaluate-progression", str(run_dir), "--cache", str(other), "--split", str(toy["split"])])
    assert result.exit_code != 0 and "prepared differently" in result.output


def test_unpaired_stage_sets_train_with_cycle_consistency(tmp_path: Path) -> None:
    cache, split = make_toy_cache(tmp_path, subjects=16, longitudinal=False)
    base = {"cache": cache, "split": split, "out": tmp_path / "runs", "width": 4, "batch_size": 2, "epochs": 1, "progress": False, "mlflow": False, "samples": 1}
    with pytest.raises(AlzmriError, match="needs the same subject at adjacent stages"):
        train_progression(ProgressionConfig(**base, pairing="paired"))
    run_dir = train_progression(ProgressionConfig(**base, stages=STAGES[:3]))
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)
    assert state["pairing"] == "unpaired" and set(state["training"][0]) >= {"G", "F", "D", "E"}
    assert json.loads((run_dir / "result.json").read_text())["pairing"] == "unpaired"
    assert "t1_g_cycle" in state["history"][0] and "val_t1_change_l1" in state["history"][0]


def test_mlflow_gets_losses_and_sample_grids(toy: dict[str, Path], tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    run_dir = train_progression(_config(toy, out=tmp_path / "tracked", run_name="tracked", epochs=1, mlflow=True))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'tracked' / 'mlflow.db'}")
    run_id = (run_dir / "mlflow_run_id.txt").read_text().strip()
    metrics = client.get_run(run_id).data.metrics
    assert {"t1_d", "t1_g", "t3_g_l1", "val_t2_mse_brain"} <= set(metrics)
    assert [a.path for a in client.list_artifacts(run_id, "samples")] == ["samples/epoch-001.png"]
    assert client.get_run(run_id).data.params["pairing"] == "paired"


def test_lpips_loads_the_files_users_have_and_behaves_as_a_distance(tmp_path: Path) -> None:
    from alzmri.models.lpips import LPIPS, load_lpips

    torch.manual_seed(0)
    reference = LPIPS()
    backbone = {k: v for k, v in reference.state_dict().items() if k.startswith("features.")}  # torchvision's alexnet keys
    layers = {k: v.abs() for k, v in reference.state_dict().items() if k.startswith("lin")}  # lpips' alex.pth keys
    assert set(backbone) == {f"features.{i}.{p}" for i in (0, 3, 6, 8, 10) for p in ("weight", "bias")}
    assert set(layers) == {f"lin{k}.model.1.weight" for k in range(5)}
    torch.save(backbone, tmp_path / "alexnet.pth")
    torch.save(layers, tmp_path / "alex.pth")
    net = load_lpips([tmp_path / "alexnet.pth", tmp_path / "alex.pth"])
    a = torch.rand(2, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(net(a, a), torch.zeros(2), atol=1e-6)
        near, far = net(a, (a + 0.05 * torch.randn_like(a)).clamp(-1, 1)), net(a, torch.rand_like(a) * 2 - 1)
    assert (near > 0).all() and (far > near).all()
    with pytest.raises(AlzmriError, match="missing lin0.model.1.weight"):
        load_lpips([tmp_path / "alexnet.pth"])


def test_pairs_follow_visit_order_not_names() -> None:
    from alzmri.generate.data import choose_pairing, transition_pairs
    from alzmri.evaluation.progression.evaluate import chain_starts

    stages = ["CN", "MCI", "AD"]
    rows = pd.DataFrame({
        "participant_id": ["a", "a", "a", "a", "b", "b", "b", "c", "c"],
        "session_id": ["ses-M12", "ses-bl", "ses-M24", "ses-M06", "ses-2", "ses-10", "ses-3", "ses-1", "ses-2"],
        "age": [71.0, 70.0, 72.0, 70.5, np.nan, np.nan, np.nan, 60, 61],
        "diagnosis": ["MCI", "CN", "AD", "CN", "CN", "AD", "MCI", "MCI", "CN"],  # c reverts: MCI then CN
        "slice_id": ["", "", "", "", "", "", "", "", ""],
    })
    pairs = transition_pairs(rows, stages)
    # a by age: bl CN, M06 CN, M12 MCI, M24 AD -> the last CN (M06) with M12, then M12 with M24; b by natural order: 2, 3, 10
    assert pairs[0].tolist() == [[3, 0], [4, 6]] and pairs[1].tolist() == [[0, 2], [6, 5]]
    starts, truths = chain_starts(rows, stages)
    assert starts.tolist() == [3, 4, 8] and truths.tolist() == [[3, 0, 2], [4, 6, 5], [8, -1, -1]]
    assert choose_pairing("auto", pairs, stages) == "paired"
    one = [pairs[0][:1], pairs[1]]
    assert choose_pairing("auto", one, stages) == "unpaired"  # one pair cannot form a batch (batch norm needs two)
    with pytest.raises(AlzmriError, match="fewer than two such pairs for CN → MCI"):
        choose_pairing("paired", one, stages)


def test_a_chain_s_truth_at_each_step_comes_after_the_last_step_s() -> None:
    """A history that goes back and forth (CN, AD, MCI, AD): step 2's truth is the AD visit after step 1's MCI, not the earlier one."""
    from alzmri.generate.data import chain_starts

    rows = pd.DataFrame({"participant_id": ["d"] * 4, "session_id": ["ses-1", "ses-2", "ses-3", "ses-4"], "diagnosis": ["CN", "AD", "MCI", "AD"], "slice_id": [""] * 4})
    starts, truths = chain_starts(rows, ["CN", "MCI", "AD"])
    assert starts.tolist() == [0] and truths.tolist() == [[0, 2, 3]]


def test_identity_term_defaults_on_for_pairs_and_off_unpaired(toy: dict[str, Path]) -> None:
    config = _config(toy)
    assert config.identity_for(True) == 30 and config.identity_for(False) == 0
    assert _config(toy, identity_weight=0).identity_for(True) == 0 and _config(toy, identity_weight=5).identity_for(False) == 5
    run = train_progression(_config(toy, run_name="identity", epochs=1))
    assert "t1_g_identity" in load_run(run).history[0] and json.loads((run / "result.json").read_text())["identity_weight"] == 30


def test_best_epoch_ignores_diverged_validation_scores() -> None:
    from alzmri.generate.fit import _is_best

    nan, good = {"val_t1_mse_brain": float("nan")}, {"val_t1_mse_brain": 0.5}
    assert not _is_best([nan]) and _is_best([nan, good]) and not _is_best([good, nan]) and not _is_best([good, {"val_t1_mse_brain": 0.6}])
    assert _is_best([{"t1_g": 1.0}])  # unpaired: no validation score, the last epoch is the best


def test_evaluation_refuses_the_run_s_own_training_subjects(toy: dict[str, Path], tmp_path: Path) -> None:
    run_dir = train_progression(_config(toy, run_name="straight"))
    val = set(pd.read_csv(toy["split"] / "val.tsv", sep="\t")["participant_id"])
    assert set(load_run(run_dir).chosen_on) == val and load_run(run_dir / "checkpoints" / "last.pt").chosen_on == ()
    chosen = CliRunner().invoke(app, ["evaluate-progression", str(run_dir), "--cache", str(toy["cache"]), "--split", str(toy["split"]), "--data", "val"])
    assert chosen.exit_code != 0 and "chose this checkpoint's epoch" in chosen.output and "Traceback" not in chosen.output
    leaky = shutil.copytree(toy["split"], tmp_path / "other")  # a clean split of its own, but not the run's: its test subjects trained the run
    (leaky / "test.tsv").write_text((toy["split"] / "train.tsv").read_text())
    (leaky / "train.tsv").write_text((toy["split"] / "test.tsv").read_text())
    result = CliRunner().invoke(app, ["evaluate-progression", str(run_dir), "--cache", str(toy["cache"]), "--split", str(leaky)])
    assert result.exit_code != 0 and "were in the run's training data" in result.output and "Traceback" not in result.output


def test_volumes_train_unpaired_and_a_raw_scan_progresses(prepared: dict[str, Path], tmp_path: Path) -> None:
    """3D: the tiny CN/AD cohort (one visit each, 16³) trains unpaired; a raw NIfTI goes through the run's own preprocessing."""
    run_dir = train_progression(ProgressionConfig(cache=prepared["cache"], split=prepared["split"], out=tmp_path / "runs", width=4, batch_size=2,
                                                  epochs=1, progress=False, mlflow=False, samples=1))  # fmt: skip
    run = load_run(run_dir)
    assert run.pairing == "unpaired" and run.stages == ["CN", "AD"] and run.shape == (1, 16, 16, 16) and run.spatial_dims == 3
    scan = sorted(prepared["bids"].glob("sub-*/ses-*/anat/*_T1w.nii.gz"))[0]
    done = CliRunner().invoke(app, ["progress", str(run_dir), str(scan), "--out", str(tmp_path / "p")])
    assert done.exit_code == 0, done.output
    import nibabel as nib

    generated = nib.load(tmp_path / "p" / "stage-1-AD.nii.gz")
    assert generated.shape == (16, 16, 16) and np.isfinite(np.asarray(generated.dataobj)).all()
    assert (tmp_path / "p" / "chain.gif").is_file()
    image = tmp_path / "slice.png"
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    refused = CliRunner().invoke(app, ["progress", str(run_dir), str(image)])
    assert refused.exit_code != 0 and "not image files" in refused.output


def test_enrichment_measures_where_the_change_falls() -> None:
    from alzmri.data.slices.atlas import region_masks
    from alzmri.evaluation.progression.evaluate import enrichment

    labels = np.zeros((2, 20, 20), dtype=np.int32)
    labels[:, 2:6, 2:12] = 4  # 40 px of ventricle (left lateral ventricle label)
    labels[1, 15, 15] = 17  # a hippocampus of one pixel in image 1 only
    masks = region_masks(labels, dilate=0)
    assert masks["ventricles"].sum() == 80 and masks["hippocampus_amygdala"].sum() == 1
    grown = region_masks(labels, dilate=1)["ventricles"]
    assert grown[0].sum() == 6 * 12 - 4 and np.array_equal(grown[0], grown[1])  # grown in-plane, never across images
    brain = np.ones((2, 20, 20), dtype=bool)
    change = np.zeros((2, 1, 20, 20), dtype=np.float32)
    change[:, 0, 2:6, 2:12] = -1.0  # all change inside the ventricles, which are 10 % of the brain
    values = enrichment(change, brain, masks)
    assert np.allclose(values["ventricles"], 10.0) and np.isnan(values["hippocampus_amygdala"]).all()  # under 5 pixels: undefined
    even = enrichment(np.ones_like(change), brain, masks)
    assert np.allclose(even["ventricles"], 1.0) and np.allclose(enrichment(change, brain, {"none": ~masks["ventricles"]})["none"], 0.0)
    assert np.isnan(enrichment(np.zeros_like(change), brain, masks)["ventricles"]).all()  # no change at all: no preference, not 0


def test_planted_change_is_carried_from_each_scan_onto_the_model_grid(tmp_path: Path) -> None:
    """The truth's change masks, drawn on each scan's own grid, land where the scan's scanner affine puts them."""
    import nibabel as nib

    from alzmri.evaluation.progression.truth import planted_between, planted_strengths
    from alzmri.preprocessing.cache import qc_record_name
    from alzmri.preprocessing.config import PreprocessConfig
    from alzmri.preprocessing.pipeline import SCANNER_AFFINE

    cache, truth = tmp_path / "cache", tmp_path / "derivatives" / "synth"
    scan_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    scan_affine[:3, 3] = (-20.0, 10.0, 4.0)
    grid = np.diag([2.0, 2.0, 2.0, 1.0])
    grid[:3, 3] = (-16.0, 10.0, 4.0)  # model voxel (i, j, k) is scan voxel (i + 2, j, k)
    rows = []
    for session, cube in (("ses-01", None), ("ses-02", (slice(6, 9),) * 3), ("ses-03", (slice(10, 12), slice(2, 4), slice(2, 4)))):
        record = cache / qc_record_name("sub-01", session)
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({SCANNER_AFFINE: " ".join(map(str, grid.ravel()))}))
        if cube is not None:
            mask = np.zeros((20, 20, 20), np.uint8)
            mask[cube] = 255
            folder = truth / "sub-01" / session / "anat"
            folder.mkdir(parents=True)
            nib.save(nib.Nifti1Image(mask, scan_affine), str(folder / f"sub-01_{session}_desc-change_mask.nii.gz"))
        rows.append({"participant_id": "sub-01", "session_id": session, "diagnosis": STAGES[len(rows)]})
    rows = pd.DataFrame(rows)
    strength = planted_strengths(rows, PreprocessConfig(), cache, (1, 16, 16, 16), truth)
    assert strength.shape == (3, 16, 16, 16) and not strength[0].any()  # nothing changed before the first visit
    expected = np.zeros((16, 16, 16), bool)
    expected[4:7, 6:9, 6:9] = True  # scan voxels 6..8 are model voxels 4..6 along the first axis
    assert np.array_equal(strength[1] > 0.5, expected)
    both = planted_between(strength, rows, np.array([0, 1]), np.array([2, 2]))
    assert np.array_equal(both[0] > 0.5, expected | (strength[2] > 0.5)) and np.array_equal(both[1] > 0.5, strength[2] > 0.5)
    assert (strength[2] > 0.5).sum() == 8 and (strength[2][8:10, 2:4, 2:4] > 0.5).all()

    (truth / "sub-01" / "ses-03" / "anat" / "sub-01_ses-03_desc-change_mask.nii.gz").unlink()
    with pytest.raises(AlzmriError, match="no true change mask for sub-01 ses-03"):
        planted_strengths(rows, PreprocessConfig(), cache, (1, 16, 16, 16), truth)
    (cache / qc_record_name("sub-01", "ses-02")).write_text(json.dumps({}))
    with pytest.raises(AlzmriError, match="predates scanner affines"):
        planted_strengths(rows, PreprocessConfig(), cache, (1, 16, 16, 16), truth)


def test_evaluation_scores_change_maps_in_the_planted_region(toy: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """With --truth the report gains a 'planted' row; the toy's true change (the growing ventricle) is concentrated there."""
    from alzmri.evaluation.config import EvaluateProgressionConfig
    from alzmri.evaluation.progression import evaluate

    from alzmri.preprocessing.cache import load_array

    def planted(rows: pd.DataFrame, *_: object) -> np.ndarray:
        """Stand-in truth: where the toy ventricle grew since the previous visit (a ring)."""
        image = {(r.participant_id, r.session_id): np.asarray(load_array(r.array), np.float32)[0] for r in rows.itertuples()}
        previous = {(p, f"ses-{int(s[4:]) + 1:02d}"): v for (p, s), v in image.items()}
        return np.stack([(np.abs(v - previous[k]) > 1).astype(np.float32) if k in previous else np.zeros_like(v) for k, v in image.items()])

    monkeypatch.setattr(evaluate, "planted_strengths", planted)
    run_dir = train_progression(_config(toy, run_name="planted", epochs=1))
    summary = evaluate.evaluate_progression(EvaluateProgressionConfig(run=run_dir, cache=toy["cache"], split=toy["split"], bootstrap=100,
                                                                      truth=toy["root"], out=toy["root"] / "eval-planted"))  # fmt: skip
    first = summary["transitions"]["NonDemented → VeryMildDemented"]
    assert first["enrichment_planted__truth"]["estimate"] > 4.0  # the true change lies in the ring, a small part of the brain
    assert "enrichment_planted__generator" in first and "planted" in summary and "| planted |" in (Path(summary["out"]) / "report.md").read_text()
