"""2D models: registry, ImageNet weight loading from lukemelas / torchvision layouts, training and evaluating on slices."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch

from alzmri.models import create_model, list_models, model_info
from alzmri.utils.errors import AlzmriError


def test_2d_models_are_registered_and_run() -> None:
    for name in ("small_cnn_2d", "resnet18_2d", "efficientnet_b4_2d"):
        assert name in list_models("*_2d") and model_info(name).spatial_dims == 2
        for channels in (1, 3):
            model = create_model(name, in_channels=channels, num_classes=4).eval()
            assert model(torch.randn(2, channels, 48, 48)).shape == (2, 4)


def _torchvision_resnet18_state() -> dict[str, torch.Tensor]:
    """A state dict with torchvision resnet18's keys and shapes (RGB stem, 1,000 classes), random values."""
    source = create_model("resnet18_2d", in_channels=3, num_classes=1000)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in source.state_dict().items()}
    expected = {"conv1.weight": (64, 3, 7, 7), "layer2.0.downsample.0.weight": (128, 64, 1, 1), "fc.weight": (1000, 512)}
    assert all(tuple(state[k].shape) == shape for k, shape in expected.items())
    assert "layer2.0.downsample.0.bias" not in state  # torchvision's shortcut convolutions have no bias
    return state


def test_resnet18_loads_torchvision_layout_summing_the_stem(tmp_path: Path) -> None:
    state = _torchvision_resnet18_state()
    torch.save(state, tmp_path / "resnet18.pth")
    model = create_model("resnet18_2d", pretrained=tmp_path / "resnet18.pth", in_channels=1, num_classes=4)
    own = model.state_dict()
    assert torch.allclose(own["conv1.weight"], state["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(own["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])
    assert own["fc.weight"].shape == (4, 512)  # a fresh head
    rgb = create_model("resnet18_2d", pretrained=tmp_path / "resnet18.pth", in_channels=3, num_classes=4)
    assert torch.equal(rgb.state_dict()["conv1.weight"], state["conv1.weight"])  # 2.5D keeps the RGB stem


def test_efficientnet_b4_loads_lukemelas_layout(tmp_path: Path) -> None:
    source = create_model("efficientnet_b4_2d", in_channels=3, num_classes=1000)
    staged = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in source.state_dict().items()}
    # lukemelas/efficientnet-pytorch numbers blocks 0..31 without MONAI's stage level
    lukemelas = {re.sub(r"^_blocks\.\d+\.(\d+)\.", r"_blocks.\1.", k): v for k, v in staged.items()}
    assert "_blocks.31._project_conv.weight" in lukemelas and "_blocks.6.31._project_conv.weight" not in lukemelas
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in lukemelas.items()}, str(tmp_path / "b4.safetensors"))
    model = create_model("efficientnet_b4_2d", pretrained=tmp_path / "b4.safetensors", in_channels=1, num_classes=4)
    own = model.state_dict()
    assert torch.equal(own["_blocks.6.31._project_conv.weight"], staged["_blocks.6.31._project_conv.weight"])
    assert torch.allclose(own["_conv_stem.weight"], staged["_conv_stem.weight"].sum(dim=1, keepdim=True))
    assert own["_fc.weight"].shape == (4, 1792)


def test_foreign_weights_are_refused_in_one_line(tmp_path: Path) -> None:
    torch.save(_torchvision_resnet18_state(), tmp_path / "resnet18.pth")
    with pytest.raises(AlzmriError, match="do not fit") as info:
        create_model("efficientnet_b4_2d", pretrained=tmp_path / "resnet18.pth", in_channels=1, num_classes=2)
    assert "\n" not in str(info.value)


def test_train_and_evaluate_on_slices(prepared: dict[str, Path], tmp_path: Path) -> None:
    """small_cnn_2d on 2D slices of the tiny cohort: slice rows in predictions, slice and subject level in the report."""
    from alzmri.cli.commands.split import run_split
    from alzmri.data.config import SplitConfig
    from alzmri.data.slices.config import SlicesConfig
    from alzmri.data.slices.from_volumes import slices_from_volumes
    from alzmri.evaluation.config import EvaluateConfig
    from alzmri.evaluation.evaluate import evaluate
    from alzmri.evaluation.metrics import subject_level
    from alzmri.training.config import TrainConfig
    from alzmri.training.fit import fit

    slices_from_volumes(SlicesConfig(cache=prepared["cache"], out=tmp_path / "slices", n=3, step=2, progress=False))
    run_split(SplitConfig(source=tmp_path / "slices", out=tmp_path / "split", ratios=(0.5, 0.25, 0.25)))
    config = TrainConfig(cache=tmp_path / "slices", split=tmp_path / "split", out=tmp_path / "runs", model="small_cnn_2d", epochs=2,
                         batch_size=8, progress=False, threads=1, trackers=["mlflow"])  # fmt: skip
    run = fit(config)
    stored = json.loads((run / "config.json").read_text())
    assert stored["train_config"]["augmentations"] == ["flip", "rotate", "brightness_contrast"]  # the 2D default, recorded
    assert stored["preprocess"]["kind"] == "slices" and stored["model_kwargs"]["in_channels"] == 1
    metrics = evaluate(EvaluateConfig(checkpoint=run / "checkpoints" / "best-loss.ckpt", cache=tmp_path / "slices", split=tmp_path / "split", bootstrap=200))
    assert metrics["unit"] == "slice"
    table = pd.read_csv(Path(metrics["out"]) / "predictions.tsv", sep="\t", dtype={"slice_index": str})
    test = table[table["split"] == "test"]
    assert {"slice_id", "slice_index", "subject_known"} <= set(table.columns) and len(test) == 3 * test[["participant_id", "session_id"]].drop_duplicates().shape[0]
    # subject level = mean of the subject's slice probabilities, by hand
    by_hand = test.groupby("participant_id")[["prob_CN", "prob_AD"]].mean()
    aggregated = subject_level(test, ["CN", "AD"]).set_index("participant_id")
    assert (aggregated["n_sessions"] == test.groupby("participant_id").size()).all()
    pd.testing.assert_frame_equal(aggregated[["prob_CN", "prob_AD"]], by_hand, check_names=False)
    html = (Path(metrics["out"]) / "report.html").read_text()
    assert "slice level [95 % CI]" in html and "SLICE-LEVEL SPLIT" not in html
    from alzmri.explain.config import ExplainConfig
    from alzmri.explain.run import explain

    for method in ("gradcam", "occlusion"):
        result = explain(ExplainConfig(run=run, cache=tmp_path / "slices", split=tmp_path / "split", limit=2, method=method, out=tmp_path / f"ex-{method}"))
        shown = result["table"]
        assert len(shown) == 2 and set(shown["explained_class"]) <= {"CN", "AD"} and (tmp_path / f"ex-{method}" / shown["picture"].iloc[0]).is_file()
        assert ((shown["outside_share"] >= 0) & (shown["outside_share"] <= 1)).all()
    with pytest.raises(AlzmriError, match="volume models only"):
        explain(ExplainConfig(run=run, cache=tmp_path / "slices", split=tmp_path / "split", regions=True))
    with pytest.raises(AlzmriError, match="is 3D but the cache holds slices"):
        fit(config.model_copy(update={"model": "resnet10_3d"}))
    with pytest.raises(AlzmriError, match="is 2D but the cache holds volumes"):
        fit(config.model_copy(update={"cache": prepared["cache"], "split": prepared["split"]}))


def test_two_phase_schedule_freezes_then_unfreezes() -> None:
    """Phase 1 trains the head only (backbone untouched by a step), phase 2 everything at its own rate; counts checked."""
    from alzmri.models.registry import count_parameters
    from alzmri.training import transfer
    from alzmri.training.phases import PhaseSchedule

    torch.manual_seed(0)
    model = create_model("small_cnn_2d", num_classes=3)
    head = sum(p.numel() for p in model.head.parameters())
    total = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(transfer.parameter_groups(model, "head", 1.0, 1.0, 0.0), lr=1.0)
    schedule = PhaseSchedule([{"epochs": 2, "lr": 1e-3, "train": "head"}, {"epochs": 3, "lr": 1e-5, "scheduler": "plateau"}], "head")
    line = schedule.start_epoch(model, optimizer, 0)
    assert count_parameters(model) == (head, total - head) and f"{head:,} trainable" in line
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-3]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    transfer.keep_frozen_norms_in_eval(model)
    torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 32, 32)), torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"head.weight", "head.bias"}
    assert schedule.start_epoch(model, optimizer, 1) is None  # same phase: nothing to do
    assert "phase 2/2" in schedule.start_epoch(model, optimizer, 2)
    assert count_parameters(model) == (total, 0) and [g["lr"] for g in optimizer.param_groups] == [1e-5, 1e-5]
    for _ in range(4):  # the plateau schedule lowers the rate after patience epochs without a lower val loss
        schedule.end_of_validation(1.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-6)


def test_two_phase_run_in_one_metrics_table(prepared: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from alzmri.data.slices.config import SlicesConfig
    from alzmri.data.slices.from_volumes import slices_from_volumes
    from alzmri.training.config import TrainConfig
    from alzmri.training.fit import fit

    slices_from_volumes(SlicesConfig(cache=prepared["cache"], out=tmp_path / "slices", n=2, step=2, progress=False))
    from alzmri.cli.commands.split import run_split
    from alzmri.data.config import SplitConfig

    run_split(SplitConfig(source=tmp_path / "slices", out=tmp_path / "split", ratios=(0.5, 0.25, 0.25)))
    run = fit(TrainConfig(cache=tmp_path / "slices", split=tmp_path / "split", out=tmp_path / "runs", model="small_cnn_2d", batch_size=8,
                          phases="train=head,epochs=1,lr=1e-3;epochs=2,lr=1e-5,scheduler=plateau", progress=False, threads=1, trackers=["mlflow"]))  # fmt: skip
    out = capsys.readouterr().out
    assert "phase 1/2: epochs 1-1, head only" in out and "258 trainable" in out and "phase 2/2: epochs 2-3, all layers" in out
    table = pd.read_csv(run / "metrics.csv")
    assert list(table["phase"]) == [1, 2, 2] and list(table["lr"]) == pytest.approx([1e-3, 1e-5, 1e-5])
    assert json.loads((run / "result.json").read_text())["epochs_trained"] == 3
    with pytest.raises(ValueError, match="leave out --lr"):
        TrainConfig(cache="c", split="s", phases="epochs=1,lr=1e-3;epochs=1,lr=1e-4", lr=1e-2)
    with pytest.raises(ValueError, match="leave out --freeze"):
        TrainConfig(cache="c", split="s", phases="epochs=1,lr=1e-3;epochs=1,lr=1e-4", freeze=["features.*"])
    with pytest.raises(AlzmriError, match="phase 2: freeze_until 'layer9'"):  # refused before phase 1 trains
        fit(TrainConfig(cache=tmp_path / "slices", split=tmp_path / "split", out=tmp_path / "runs2", model="small_cnn_2d", batch_size=8,
                        phases="train=head,epochs=1,lr=1e-3;epochs=1,lr=1e-5,freeze_until=layer9", progress=False, trackers=[]))  # fmt: skip
    assert not (tmp_path / "runs2").exists() or not any((tmp_path / "runs2").iterdir())


def test_train_on_imported_images_and_predict_files(tmp_path: Path) -> None:
    """Images in class folders → subject split → train → predict on image files (one corrupt: listed, the rest predicted)."""
    from test_slices import class_folders, disc, save_png

    from alzmri.cli.commands.split import run_split
    from alzmri.data.config import SplitConfig
    from alzmri.data.slices.config import ImportSlicesConfig
    from alzmri.data.slices.from_images import import_slices
    from alzmri.evaluation.config import PredictConfig
    from alzmri.evaluation.evaluate import PartlyPredicted, predict
    from alzmri.training.config import TrainConfig
    from alzmri.training.fit import fit

    root = class_folders(tmp_path / "in", classes=("NonDemented", "MildDemented"), subjects=4, slices=2)
    import_slices(ImportSlicesConfig(source=root, out=tmp_path / "slices", names="oasis", size=32, progress=False))
    run_split(SplitConfig(source=tmp_path / "slices", out=tmp_path / "split", ratios=(0.5, 0.25, 0.25)))
    run = fit(TrainConfig(cache=tmp_path / "slices", split=tmp_path / "split", out=tmp_path / "runs", model="small_cnn_2d", epochs=1,
                          batch_size=4, progress=False, threads=1, trackers=[]))  # fmt: skip
    new = tmp_path / "new"
    save_png(new / "a.png", disc(hole=0.15))
    save_png(new / "b.png", disc(hole=0.3), bits=16)
    (new / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(PartlyPredicted, match="1 of 3 inputs") as info:
        predict(PredictConfig(checkpoint=run / "checkpoints" / "best-loss.ckpt", inputs=[new], out=tmp_path / "p.tsv"))
    table = info.value.args[1] if len(info.value.args) > 1 else pd.read_csv(tmp_path / "p.tsv", sep="\t")
    table = pd.read_csv(tmp_path / "p.tsv", sep="\t")
    assert list(table["participant_id"]) == ["a", "b"] and {"prob_NonDemented", "prob_MildDemented"} <= set(table.columns)
    assert (tmp_path / "p.failures.tsv").is_file()
    seen = predict(PredictConfig(checkpoint=run / "checkpoints" / "best-loss.ckpt", inputs=[root / "NonDemented"], out=tmp_path / "q.tsv"))
    assert (seen["seen_in_training"] != "").any()  # training images are recognised by content


@pytest.mark.parametrize("scheduler", ["cosine", "plateau"])
def test_two_phase_run_resumes_inside_a_phase_exactly(prepared: dict[str, Path], tmp_path: Path, scheduler: str) -> None:
    """Crash at the start of epoch 3 (inside phase 2): re-running ends with the uninterrupted run's files."""
    from test_resume_exact import assert_same_run

    from alzmri.cli.commands.split import run_split
    from alzmri.data.config import SplitConfig
    from alzmri.data.dataset import EpochSeededSampler
    from alzmri.data.slices.config import SlicesConfig
    from alzmri.data.slices.from_volumes import slices_from_volumes
    from alzmri.training.config import TrainConfig
    from alzmri.training.fit import fit

    slices_from_volumes(SlicesConfig(cache=prepared["cache"], out=tmp_path / "slices", n=2, step=2, progress=False))
    run_split(SplitConfig(source=tmp_path / "slices", out=tmp_path / "split", ratios=(0.5, 0.25, 0.25)))

    def config(name: str) -> TrainConfig:
        return TrainConfig(cache=tmp_path / "slices", split=tmp_path / "split", out=tmp_path / "runs", run_name=name, model="small_cnn_2d",
                           batch_size=8, phases=f"train=head,epochs=1,lr=1e-2;epochs=4,lr=1e-2,scheduler={scheduler}", patience=10, lr_gamma=0.5,
                           progress=False, threads=1, trackers=[])  # fmt: skip

    whole = fit(config("whole"))
    original = EpochSeededSampler.set_epoch

    def crash(self, epoch):
        if epoch == 3:
            raise RuntimeError("simulated crash")
        original(self, epoch)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(EpochSeededSampler, "set_epoch", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            fit(config("crashed"))
    resumed = fit(config("crashed"))
    assert_same_run(whole, resumed)
    assert list(pd.read_csv(resumed / "metrics.csv")["lr"]) == pytest.approx(list(pd.read_csv(whole / "metrics.csv")["lr"]))
