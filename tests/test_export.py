"""``alzmri export`` (ONNX, TorchScript) and ``predict --engine``: the exported models agree with PyTorch to 1e-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import alzmri.fusion  # noqa: F401  (registers the fusion models)
from alzmri.data.slices.store import SliceSetConfig
from alzmri.evaluation.config import ExportConfig, PredictConfig
from alzmri.evaluation.engines import OnnxEngine, TorchScriptEngine, file_kind, load_engine
from alzmri.evaluation.evaluate import predict
from alzmri.evaluation.export import example_inputs, export_model
from alzmri.io.bids import load_scans
from alzmri.io.checkpoint import write_checkpoint
from alzmri.models import create_model
from alzmri.preprocessing.config import PreprocessConfig
from alzmri.training.fit import fit
from alzmri.utils.errors import AlzmriError

from conftest import train_config
from test_cli_errors import alzmri

pytestmark = pytest.mark.slow


def _checkpoint(path: Path, name: str, kwargs: dict, preprocess: dict, classes: tuple[str, ...] = ("CN", "MCI", "AD"), **extra) -> Path:
    """A checkpoint of a randomly initialised model, in the layout 'alzmri train' writes."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=len(classes), **kwargs)
    hparams = {"model_name": name, "model_kwargs": {"num_classes": len(classes), **kwargs}, "classes": list(classes), "preprocess": preprocess, **extra}
    return write_checkpoint(path, model.state_dict(), hparams)


VOLUME = PreprocessConfig(size=24, spacing=2.0, skull_strip="none").model_dump(mode="json")


@pytest.fixture(scope="module")
def trained(prepared: dict[str, Path]) -> Path:
    return fit(train_config(prepared, epochs=1, run_name="export")) / "checkpoints" / "best-loss.ckpt"


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_model_predicts_what_pytorch_predicts(trained: Path, prepared: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"model.{fmt}"
    result = export_model(ExportConfig(checkpoint=trained.parent.parent if fmt == "onnx" else trained, format=fmt, out=out))  # a run folder, or its checkpoint
    assert result["out"] == str(out) and result["max_difference"] <= 1e-4 and result["inputs"] == ["image"]
    assert file_kind(out) == ("onnx" if fmt == "onnx" else "torchscript") and file_kind(trained) == "checkpoint"
    scans = [Path(p) for p in load_scans(prepared["bids"])["path"].iloc[:5]]
    reference = predict(PredictConfig(checkpoint=trained, inputs=scans, out=tmp_path / "torch.tsv"))
    engine = "onnxruntime" if fmt == "onnx" else "torchscript"
    exported = predict(PredictConfig(checkpoint=out, inputs=scans, out=tmp_path / f"{fmt}.tsv", engine=engine, threads=1))
    probs = [c for c in reference.columns if c.startswith("prob_")]
    assert probs == ["prob_CN", "prob_AD"] and len(exported) == 5
    np.testing.assert_allclose(exported[probs].to_numpy(), reference[probs].to_numpy(), atol=1e-4)
    assert list(exported["predicted"]) == list(reference["predicted"])
    auto = predict(PredictConfig(checkpoint=out, inputs=scans[:1], out=tmp_path / "auto.tsv"))  # --engine auto: by the file's content
    assert auto["predicted"].iloc[0] == reference["predicted"].iloc[0]


@pytest.mark.parametrize(("name", "kwargs", "preprocess", "inputs"), [
    ("liu_cnn_compact", {"age_encoding": True, "input_size": 24}, VOLUME, ["image", "age"]),
    ("fusion_xattn", {"groups": [3, 5], "encoder": "resnet10_3d", "input_size": 24}, VOLUME, ["image", "genetics", "genetics_present"]),
    ("small_cnn_2d", {}, SliceSetConfig(origin="images", size=32, channels=1, classes=["CN", "MCI", "AD"], normalization="z-score").model_dump(mode="json"), ["image"]),
])  # fmt: skip
def test_every_kind_of_input_exports(tmp_path: Path, name: str, kwargs: dict, preprocess: dict, inputs: list[str]) -> None:
    ckpt = _checkpoint(tmp_path / "model.ckpt", name, kwargs, preprocess)
    result = export_model(ExportConfig(checkpoint=ckpt))
    assert result["inputs"] == inputs and result["max_difference"] <= 1e-4
    onnx = load_engine(result["out"])
    assert isinstance(onnx, OnnxEngine) and onnx.hparams["classes"] == ["CN", "MCI", "AD"] and onnx.uses_age == ("age" in inputs)
    torch_engine = load_engine(ckpt, "torch")
    for batch in (1, 5):  # the batch axis is dynamic
        arrays = example_inputs(torch_engine.hparams, inputs, batch=batch, seed=batch)
        np.testing.assert_allclose(onnx.probabilities(*arrays), torch_engine.probabilities(*arrays), atol=1e-4)
    script = export_model(ExportConfig(checkpoint=ckpt, format="torchscript"))
    assert isinstance(load_engine(script["out"]), TorchScriptEngine) and script["out"].endswith(".torchscript.pt")


def test_engine_mismatches_and_foreign_files_are_one_line_errors(trained: Path, tmp_path: Path) -> None:
    with pytest.raises(AlzmriError, match="export it first: alzmri export"):
        load_engine(trained, "onnxruntime")
    onnx = export_model(ExportConfig(checkpoint=trained, out=tmp_path / "m.onnx"))["out"]
    with pytest.raises(AlzmriError, match="use --engine onnxruntime"):
        load_engine(onnx, "torch")
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07 not a model")
    with pytest.raises(AlzmriError, match="ONNX Runtime cannot load"):
        load_engine(tmp_path / "garbage.onnx")
    foreign = tmp_path / "foreign.onnx"  # a valid ONNX model that alzmri did not write
    torch.onnx.export(torch.nn.Linear(3, 2).eval(), (torch.randn(1, 3),), str(foreign), dynamo=False)
    with pytest.raises(AlzmriError, match="not one 'alzmri export' wrote"):
        load_engine(foreign)
    with pytest.raises(AlzmriError, match="is the checkpoint itself"):
        export_model(ExportConfig(checkpoint=trained, out=trained))
    result = alzmri("predict", trained, "x.nii.gz", "--engine", "onnxruntime")
    assert result.returncode != 0 and "export it first" in result.stderr and "Traceback" not in result.stderr


def test_export_cli(trained: Path, tmp_path: Path) -> None:
    result = alzmri("export", trained, "--out", tmp_path / "cli.onnx")
    assert result.returncode == 0, result.stderr
    assert "match PyTorch's within" in result.stdout and (tmp_path / "cli.onnx").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name != "cli.onnx"]  # written atomically: no temporary left
