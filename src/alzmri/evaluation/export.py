"""``alzmri export``: a checkpoint as an ONNX or TorchScript file that outputs class probabilities.

The exported graph is the network plus its softmax, with a dynamic batch axis; the checkpoint's
hyper-parameters (classes, preprocessing, genetics encoder) travel inside the file, so
``alzmri predict model.onnx scans`` prepares its inputs exactly as the training data were. ONNX
goes through PyTorch's ``torch.export``-based exporter (the maintained one); TorchScript
through ``torch.jit.trace`` (deprecated upstream, kept for LibTorch users); a model ``torch.export``
cannot capture falls back to the tracing ONNX exporter (the file records which one ran). After writing, the
file is loaded by its own runtime and checked against PyTorch on random inputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alzmri.data.inputs import input_channels, spatial_dims
from alzmri.evaluation.config import ExportConfig
from alzmri.evaluation.engines import EXTRA_FILE, INPUTS_KEY, METADATA_KEY, TorchEngine, load_engine, model_inputs
from alzmri.evaluation.predict import checkpoint_preprocess, load_classifier
from alzmri.io.checkpoint import checkpoint_of
from alzmri.utils.atomic import atomic_path
from alzmri.utils.errors import AlzmriError, first_line

AGREEMENT = 1e-4  # the most an exported model's probabilities may differ from PyTorch's


class _Probabilities(nn.Module):
    """The classifier followed by its softmax: what an exported file computes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(*inputs), dim=1)


def example_inputs(hp: dict[str, Any], names: list[str], batch: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Random inputs of the model's shapes (``batch`` of them): the image, then age or genetics."""
    settings = checkpoint_preprocess(hp)
    rng = np.random.default_rng(seed)
    shape = (batch, input_channels(settings), *([settings.size] * spatial_dims(settings)))
    arrays = [rng.standard_normal(shape).astype(np.float32)]
    if "age" in names:
        arrays.append(rng.uniform(60, 90, size=batch).astype(np.float32))
    if "genetics" in names:
        width = int(sum(hp["model_kwargs"]["groups"]))
        arrays += [rng.standard_normal((batch, width)).astype(np.float32), np.arange(batch) % 2 == 0]
    return arrays


def _json(hp: dict[str, Any]) -> str:
    return json.dumps(hp, default=str, sort_keys=True)


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporter's progress lines, warnings and logging out of the user's terminal (errors still raise)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _onnx(wrapped: nn.Module, examples: list[torch.Tensor], names: list[str], hp: dict[str, Any], target: Path) -> str:
    """Write the ONNX file; returns the exporter used.

    ``torch.export`` first; a model it cannot capture (the fusion models stop their image
    encoder with a forward hook at the feature layer) goes through the tracing exporter, which
    records the operations one call runs.
    """
    import onnx

    batch = torch.export.Dim("batch", min=1, max=4096)
    outputs = [*names, "probabilities"]
    try:
        with _quiet():
            program = torch.onnx.export(wrapped, tuple(examples), input_names=names, output_names=["probabilities"],
                                        dynamic_shapes=(tuple({0: batch} for _ in examples),), dynamo=True, verbose=False)  # fmt: skip
        model, exporter = program.model_proto, "torch.export"
    except Exception:
        buffer = io.BytesIO()
        with _quiet():
            torch.onnx.export(wrapped, tuple(examples), buffer, input_names=names, output_names=["probabilities"],
                              dynamic_axes={n: {0: "batch"} for n in outputs}, dynamo=False)  # fmt: skip
        model, exporter = onnx.load_model_from_string(buffer.getvalue()), "tracing"
    for key, value in ((METADATA_KEY, _json(hp)), (INPUTS_KEY, json.dumps(names)), ("alzmri_exporter", exporter)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    with atomic_path(target) as tmp:
        onnx.save_model(model, str(tmp))
    return exporter


def _torchscript(wrapped: nn.Module, examples: list[torch.Tensor], names: list[str], hp: dict[str, Any], target: Path) -> str:
    with _quiet():
        traced = torch.jit.trace(wrapped, tuple(examples), check_trace=False)
    with atomic_path(target) as tmp:
        torch.jit.save(traced, str(tmp), _extra_files={EXTRA_FILE: json.dumps({"hparams": json.loads(_json(hp)), "inputs": names})})
    return "torch.jit.trace"


def _root(exc: BaseException) -> BaseException:
    """The innermost cause of an exporter's error (its outer message is a generic 'step 1/3 failed')."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def export_model(config: ExportConfig) -> dict[str, Any]:
    """Write the exported file and check it against PyTorch; returns where it went and the largest probability difference."""
    checkpoint = checkpoint_of(config.checkpoint)  # a run folder: its best-loss.ckpt
    model, hp = load_classifier(checkpoint)
    names = model_inputs(hp, model)
    suffix = ".onnx" if config.format == "onnx" else ".torchscript.pt"
    target = Path(config.out) if config.out else checkpoint.with_suffix(suffix)
    if target.resolve() == checkpoint.resolve():
        raise AlzmriError(f"--out {target} is the checkpoint itself; choose another file")
    wrapped = _Probabilities(model).eval()
    examples = [torch.from_numpy(a) for a in example_inputs(hp, names)]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".partial-{target.name}")  # same suffix: the engine is chosen by content and name
    try:
        try:
            exporter = (_onnx if config.format == "onnx" else _torchscript)(wrapped, examples, names, hp, partial)
        except AlzmriError:
            raise
        except Exception as exc:  # an operator the exporter cannot translate, etc.
            raise AlzmriError(f"cannot export {hp['model_name']} to {config.format}: {first_line(_root(exc))}") from None
        try:
            exported = load_engine(partial)
            reference = TorchEngine(model, hp)
            checks = example_inputs(hp, names, batch=3, seed=1)  # another batch size than the traced one: the batch axis is dynamic
            difference = float(np.abs(exported.probabilities(*checks) - reference.probabilities(*checks)).max())
        except AlzmriError as exc:
            raise AlzmriError(f"the exported {config.format} model cannot be read back ({first_line(exc)}); nothing was kept") from None
        except Exception as exc:  # the runtime refuses the graph the exporter wrote
            raise AlzmriError(f"the exported {config.format} model does not run ({first_line(_root(exc))}); nothing was kept") from None
        if not difference <= AGREEMENT:  # NaN too
            raise AlzmriError(f"the exported {config.format} model's probabilities differ from PyTorch's by {difference:.2g} (> {AGREEMENT:g}); nothing was kept")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return {"out": str(target), "format": config.format, "inputs": names, "classes": list(hp["classes"]), "max_difference": difference, "exporter": exporter}
