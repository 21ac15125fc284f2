"""Inference engines behind one interface: the PyTorch checkpoint, an exported ONNX model (ONNX Runtime) or TorchScript.

Every engine takes the model's inputs as numpy arrays (the image batch, then the age or the
genetics and their presence when the model takes them) and returns class probabilities; each
carries the checkpoint's hyper-parameters (classes, preprocessing), so ``predict`` prepares
inputs the same way whichever engine runs the network. An exported file keeps them inside
(ONNX metadata, a TorchScript extra file): it needs no checkpoint beside it.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from alzmri.utils.errors import AlzmriError, first_line

EngineName = Literal["auto", "torch", "onnxruntime", "torchscript"]
METADATA_KEY = "alzmri_hparams"  # ONNX metadata / TorchScript extra file: the checkpoint's hyper-parameters as JSON
INPUTS_KEY = "alzmri_inputs"  # ONNX metadata: the model's input names, in call order
EXTRA_FILE = "alzmri_hparams.json"


def model_inputs(hp: dict[str, Any], model: nn.Module) -> list[str]:
    """The input names of a classifier, in call order: ``image``, then ``age`` or ``genetics, genetics_present``."""
    from alzmri.models import model_info

    if model_info(hp["model_name"]).uses_genetics:
        return ["image", "genetics", "genetics_present"]
    return ["image", "age"] if getattr(model, "uses_age", False) else ["image"]


class _Engine:
    """What every engine has: the checkpoint's hyper-parameters and the model's input names."""

    hparams: dict[str, Any]
    inputs: list[str]

    @property
    def uses_age(self) -> bool:
        """Whether the model takes each scan's age (``liu2022 --age-encoding``)."""
        return "age" in self.inputs


@torch.no_grad()
def _run_torch(module: Any, arrays: tuple[np.ndarray, ...]) -> torch.Tensor:
    return module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])


class TorchEngine(_Engine):
    """The checkpoint's ``nn.Module`` (eval mode, no gradients)."""

    name = "torch"

    def __init__(self, model: nn.Module, hp: dict[str, Any]) -> None:
        self.model, self.hparams = model.eval(), hp
        self.inputs = model_inputs(hp, model)

    def probabilities(self, images: np.ndarray, *extra: np.ndarray) -> np.ndarray:
        return torch.softmax(_run_torch(self.model, (images, *extra)), dim=1).numpy()


class OnnxEngine(_Engine):
    """An exported ``.onnx`` model run by ONNX Runtime (CPU)."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - a dependency of alzmri
            raise AlzmriError("ONNX Runtime is not installed: pip install onnxruntime") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = options.inter_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise AlzmriError(f"ONNX Runtime cannot load {path}: {first_line(exc)}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise AlzmriError(f"{path} is an ONNX model but not one 'alzmri export' wrote (no {METADATA_KEY} metadata): its classes and preprocessing are unknown")
        self.hparams = _json(path, meta[METADATA_KEY], dict)
        self.inputs = _json(path, meta.get(INPUTS_KEY, '["image"]'), list)
        self._types = {i.name: i.type for i in self.session.get_inputs()}

    def probabilities(self, images: np.ndarray, *extra: np.ndarray) -> np.ndarray:
        feed = {}
        for name, array in zip(self.inputs, (images, *extra), strict=True):
            dtype = np.bool_ if self._types.get(name) == "tensor(bool)" else np.float32
            feed[name] = np.ascontiguousarray(array, dtype=dtype)
        return np.asarray(self.session.run(["probabilities"], feed)[0])


class TorchScriptEngine(_Engine):
    """An exported TorchScript file (``torch.jit.load``: TorchScript code and tensors, no pickled Python objects)."""

    name = "torchscript"

    def __init__(self, path: Path) -> None:
        files = {EXTRA_FILE: ""}
        try:
            self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=files).eval()
        except Exception as exc:
            raise AlzmriError(f"cannot load TorchScript model {path}: {first_line(exc)}") from None
        if not files[EXTRA_FILE]:
            raise AlzmriError(f"{path} is a TorchScript model but not one 'alzmri export' wrote (no {EXTRA_FILE} inside)")
        record = _json(path, files[EXTRA_FILE], dict)
        self.hparams, self.inputs = record.get("hparams"), record.get("inputs")
        if not isinstance(self.hparams, dict) or not isinstance(self.inputs, list):
            raise AlzmriError(f"{path}: its {EXTRA_FILE} lacks 'hparams' or 'inputs' (not written by this version of 'alzmri export'?)")

    def probabilities(self, images: np.ndarray, *extra: np.ndarray) -> np.ndarray:
        return _run_torch(self.module, (images, *extra)).numpy()  # the exported graph ends in its softmax


Engine = TorchEngine | OnnxEngine | TorchScriptEngine


def _json(path: Path, text: str, kind: type) -> Any:
    """The JSON record an exported file carries, or a one-line error naming the file."""
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise AlzmriError(f"{path}: the alzmri record inside is not valid JSON ({first_line(exc)}); re-export the model") from None
    if not isinstance(value, kind) or (kind is dict and "classes" not in value and "hparams" not in value):
        raise AlzmriError(f"{path}: the alzmri record inside is not what 'alzmri export' writes; re-export the model")
    return value


def file_kind(path: Path) -> str:
    """``checkpoint``, ``onnx`` or ``torchscript``, from the file's content (not its name)."""
    if not path.is_file():
        raise AlzmriError(f"model file not found: {path}")
    with path.open("rb") as handle:
        head = handle.read(4)
    if head[:2] == b"PK" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        return "torchscript" if any("/code/" in n or n.startswith("code/") for n in names) else "checkpoint"
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":  # an ONNX ModelProto starts with field 1 (ir_version), varint
        return "onnx"
    return "checkpoint"  # legacy (non-zip) torch files: read_checkpoint says what is wrong


def load_engine(path: str | Path, engine: EngineName = "auto", threads: int | None = None) -> Engine:
    """The engine for a model file: a checkpoint (``torch``), an exported ``.onnx`` (``onnxruntime``) or TorchScript file.

    Args:
        path: the model file.
        engine: ``auto`` picks by the file's content; another name must match the file.
        threads: CPU threads of the engine (ONNX Runtime's session options; ``torch.set_num_threads``
            for PyTorch and TorchScript, which is process-wide); None: the library's default.

    Raises:
        AlzmriError: unreadable file, or an engine that cannot run this kind of file.
    """
    path = Path(path)
    kind = file_kind(path)
    wanted = {"checkpoint": "torch", "onnx": "onnxruntime", "torchscript": "torchscript"}[kind]
    if engine not in ("auto", wanted):
        hint = f"export it first: alzmri export {path} --format {'onnx' if engine == 'onnxruntime' else 'torchscript'}" if kind == "checkpoint" else f"use --engine {wanted}"
        raise AlzmriError(f"{path} is {'a PyTorch checkpoint' if kind == 'checkpoint' else f'an exported {kind} model'}, which --engine {engine} cannot run; {hint}")
    if kind == "onnx":
        return OnnxEngine(path, threads)
    if threads:
        torch.set_num_threads(threads)
    if kind == "torchscript":
        return TorchScriptEngine(path)
    from alzmri.evaluation.predict import load_classifier

    model, hp = load_classifier(path)
    return TorchEngine(model, hp)
