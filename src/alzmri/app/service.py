"""One upload in, one result out: the model's own preprocessing, probabilities, QC, the evidence map and its pictures.

The model is loaded once (:class:`Service`); :meth:`Service.run` is called from the server's
bounded worker pool with the path of a saved upload and returns a JSON-ready dict whose PNGs
and NIfTI map are base64 strings, so nothing has to stay on the server after the answer.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from alzmri.app.config import ServeConfig
from alzmri.app import figures
from alzmri.app.uploads import SUFFIX, VOLUME_KINDS, sniff
from alzmri.data.inputs import spatial_dims
from alzmri.data.slices.store import SliceSetConfig
from alzmri.evaluation.engines import TorchEngine, load_engine
from alzmri.evaluation.predict import checkpoint_preprocess
from alzmri.io.checkpoint import checkpoint_of
from alzmri.models import model_info
from alzmri.training.registry import fetch_registered, is_model_uri
from alzmri.utils.errors import AlzmriError

KIND_NAMES = {"nifti": "NIfTI", "nifti-gz": "gzipped NIfTI", "dicom-zip": "DICOM zip", "png": "PNG image", "jpeg": "JPEG image", "tiff": "TIFF image", "bmp": "BMP image"}


class Service:
    """The served model and what it needs to answer an upload."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        if is_model_uri(config.model):  # fetched, loaded into memory, and the download removed
            with tempfile.TemporaryDirectory(prefix="alzmri-registry-") as tmp:
                self.engine = load_engine(fetch_registered(config.model, config.tracking_uri, Path(tmp)), config.engine, config.threads)
        else:
            self.engine = load_engine(checkpoint_of(config.model) if Path(config.model).is_dir() else config.model, config.engine, config.threads)
        hp = self.engine.hparams
        self.hparams, self.classes = hp, list(hp["classes"])
        self.inputs = checkpoint_preprocess(hp)
        self.dims = spatial_dims(self.inputs)
        if model_info(hp["model_name"]).uses_genetics:
            raise AlzmriError(f"{config.model} is a genetics + MRI fusion model ({hp['model_name']}); serving it needs each patient's genetics, which the app does not take yet")
        if isinstance(self.inputs, SliceSetConfig) and (self.inputs.origin != "images" or self.inputs.channels != 1):
            raise AlzmriError("this slice model was trained on slices cut from volumes; serve a model trained on imported images ('alzmri import-slices') or on 3D scans")
        self.progression = None
        if config.progression is not None:
            from alzmri.app.progression import Progression

            self.progression = Progression(config.progression, self.classes, self.inputs)
        # Attribution puts hooks on the one shared PyTorch model, which a forward pass in another worker would
        # run: the model is used by one worker at a time (preprocessing, the slow part, still runs in parallel).
        # An ONNX Runtime session is safe to call from several threads.
        self._model_lock: Any = threading.Lock() if isinstance(self.engine, TorchEngine) else contextlib.nullcontext()
        self.evidence = config.evidence if isinstance(self.engine, TorchEngine) else "none"
        self.evidence_note = "" if self.evidence != "none" or config.evidence == "none" else (
            f"no evidence map: the {self.engine.name} engine runs an exported file; serve the checkpoint for Grad-CAM or occlusion")

    def describe(self) -> dict[str, Any]:
        """``GET /api/model``: what is served and what it accepts."""
        accepts = list(VOLUME_KINDS) if self.dims == 3 else ["png", "jpeg", "tiff", "bmp"]
        readable = ".nii, .nii.gz or a zip of one DICOM series" if self.dims == 3 else "PNG, JPEG, TIFF or BMP"
        return {"model": self.hparams["model_name"], "classes": self.classes, "engine": self.engine.name, "input": "3D scan" if self.dims == 3 else "2D slice image",
                "accepts": accepts, "accepts_text": readable, "needs_age": self.engine.uses_age, "evidence": self.evidence, "evidence_note": self.evidence_note,
                "preprocessing": self.inputs.model_dump(mode="json"), "max_upload_mb": self.config.max_upload_mb,
                "progression": None if self.progression is None else self.progression.describe()}  # fmt: skip

    def run(self, path: Path, age: float | None = None) -> dict[str, Any]:
        """Answer one saved upload (any name: its kind comes from its bytes)."""
        start = time.perf_counter()
        kind = sniff(path)
        if (kind in VOLUME_KINDS) != (self.dims == 3):
            wanted = "a 3D scan (NIfTI or a zip of one DICOM series)" if self.dims == 3 else "a 2D slice image (PNG, JPEG, TIFF, BMP)"
            raise AlzmriError(f"this model takes {wanted}; the upload is a {KIND_NAMES[kind]}")
        if self.engine.uses_age and age is None:
            raise AlzmriError("this model takes the scan's age as an input: send the form field 'age' (years)")
        named = path.with_name(path.name + SUFFIX[kind])  # nibabel and Pillow read by suffix
        path.rename(named)
        result = self._volume(named, kind, age) if self.dims == 3 else self._slice(named)
        result["input"] = {"kind": kind, "bytes": named.stat().st_size}
        result["seconds"] = round(time.perf_counter() - start, 3)
        return result

    def _probabilities(self, array: np.ndarray, age: float | None) -> np.ndarray:
        extra = [np.array([age], np.float32)] if self.engine.uses_age else []
        with self._model_lock:
            return self.engine.probabilities(array[None, None] if self.dims == 3 else array[None], *extra)[0]

    def _answer(self, probs: np.ndarray) -> dict[str, Any]:
        best = int(np.argmax(probs))
        return {"predicted": self.classes[best], "probabilities": {c: round(float(p), 6) for c, p in zip(self.classes, probs, strict=True)},
                "classes": self.classes, "model": self.hparams["model_name"], "engine": self.engine.name}  # fmt: skip

    def _map(self, array: np.ndarray, target: int, age: float | None) -> np.ndarray | None:
        if self.evidence == "none":
            return None
        assert isinstance(self.engine, TorchEngine)
        with self._model_lock:
            return self._attribute(array, target, age)

    def _attribute(self, array: np.ndarray, target: int, age: float | None) -> np.ndarray:
        from alzmri.explain.attribution import attribute

        options = {"mask_size": 8 if self.dims == 2 else 12} if self.evidence == "occlusion" else {}
        return attribute(self.engine.model, array, self.evidence, target=target, model_name=self.hparams["model_name"], age=age,
                         spatial_dims=self.dims, **options)  # fmt: skip

    def _volume(self, path: Path, kind: str, age: float | None) -> dict[str, Any]:
        from alzmri.preprocessing.pipeline import run_prefix, run_suffix, scanner_affine

        from alzmri.io.nifti import load_scan

        limit = int(self.config.max_unpacked_mb * 1e6)
        unpacked = path.with_name("unpacked.nii")
        try:
            if kind == "nifti-gz":  # unpacked here, with a limit: nibabel would inflate a gzip bomb whole
                path = gunzip_limited(path, unpacked, limit)
            image, notes = load_scan(path, max_unpacked_bytes=limit)  # DICOM zips: the series checks and warnings of 'alzmri preprocess'
            intermediate = run_prefix(image, self.inputs, notes)
        finally:
            unpacked.unlink(missing_ok=True)
        array, mask, qc = run_suffix(intermediate, self.inputs)
        qc = {**intermediate.qc, **qc}
        probs = self._probabilities(array, age)
        result = self._answer(probs)
        warnings = [w for w in str(qc.get("warnings", "")).split("; ") if w]
        result["qc"] = {"warnings": warnings, "passed": not warnings, "input_shape": qc.get("input_shape"), "input_spacing": qc.get("input_spacing"),
                        "input_orientation": qc.get("input_orientation"), "model_grid": "x".join(map(str, array.shape))}  # fmt: skip
        heat = self._map(array, int(np.argmax(probs)), age)
        result["images"] = {"scan": self._triplanar(array, None, mask, "preprocessed scan, brain mask outline")}
        result["evidence"] = {"method": self.evidence, "note": self.evidence_note}
        if heat is not None:
            result["images"]["evidence"] = self._triplanar(array, heat, mask, f"{self.evidence} evidence for {result['predicted']}")
            affine = scanner_affine(qc)
            result["evidence"]["nifti_gz"] = _nifti_gz(heat, affine if affine is not None else np.eye(4))
            result["evidence"] |= _emptiness(heat)
        self._progress(result, array, age)
        return result

    def _progress(self, result: dict[str, Any], array: np.ndarray, age: float | None) -> None:
        """The progression run's later stages from this input (when serving one)."""
        if self.progression is not None:
            result["progression"] = self.progression.answer(array, result["predicted"], lambda image: self._probabilities(image, age), self.classes)

    def _slice(self, path: Path) -> dict[str, Any]:
        from alzmri.data.slices.from_images import prepare_image
        from alzmri.io.images import read_image

        pixels, notes = read_image(path)
        assert isinstance(self.inputs, SliceSetConfig)
        array = prepare_image(pixels, self.inputs.size)  # (1, H, W): one channel
        probs = self._probabilities(array, None)
        result = self._answer(probs)
        result["qc"] = {"warnings": list(notes), "passed": True, "input_shape": "x".join(map(str, pixels.shape)), "model_grid": "x".join(map(str, array.shape[1:]))}
        heat = self._map(array, int(np.argmax(probs)), None)
        result["images"] = {"scan": self._planar(array[0], None, "model input")}
        result["evidence"] = {"method": self.evidence, "note": self.evidence_note}
        if heat is not None:
            result["images"]["evidence"] = self._planar(array[0], np.asarray(heat).reshape(array.shape[-2:]), f"{self.evidence} evidence for {result['predicted']}")
            result["evidence"] |= _emptiness(heat)
        self._progress(result, array, None)
        return result

    @staticmethod
    def _triplanar(volume: np.ndarray, heat: np.ndarray | None, mask: np.ndarray | None, title: str) -> str:
        """Three orthogonal slices through the map's peak inside the brain (the brain's centre without a map); the map drawn where it is ≥ 20 % of its peak."""
        inside = mask if mask is not None and mask.any() else np.ones(volume.shape, bool)
        if heat is not None and np.any(heat * inside > 0):
            centre = list(np.unravel_index(int(np.argmax(np.where(inside, heat, -np.inf))), heat.shape))
        else:
            centre = [int(round(c)) for c in np.argwhere(inside).mean(axis=0)]
        figure, axes = figures.figure(1, 3, figsize=(9, 3.2))
        for axis, ax in enumerate(axes):
            take = [slice(None)] * 3
            take[axis] = centre[axis]
            ax.imshow(np.rot90(volume[tuple(take)]), cmap="gray")
            if heat is not None and heat.max() > 0:
                part = np.rot90(heat[tuple(take)] / heat.max())
                ax.imshow(np.ma.masked_less(part, 0.2), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            if mask is not None and mask[tuple(take)].any():
                ax.contour(np.rot90(mask[tuple(take)].astype(float)), levels=[0.5], colors="cyan", linewidths=0.8)
            ax.set_axis_off()
        figure.suptitle(title)
        return figures.png(figure)

    @staticmethod
    def _planar(image: np.ndarray, heat: np.ndarray | None, title: str) -> str:
        figure, ax = figures.figure(figsize=(3.4, 3.6))
        ax.imshow(image, cmap="gray")
        if heat is not None and heat.max() > 0:
            ax.imshow(np.ma.masked_less(heat / heat.max(), 0.2), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
        return figures.png(figure)


def gunzip_limited(source: Path, target: Path, limit: int) -> Path:
    """Unpack a gzip to ``target``, refusing (one line) once it passes ``limit`` bytes."""
    written = 0
    try:
        with gzip.open(source, "rb") as inner, target.open("wb") as out:
            while chunk := inner.read(1 << 20):
                written += len(chunk)
                if written > limit:
                    raise AlzmriError(f"the upload unpacks to more than {limit / 1e6:g} MB (alzmri serve --max-unpacked-mb): not one scan")
                out.write(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise AlzmriError(f"the upload is a corrupt gzip file ({exc})") from None
    return target


def _emptiness(heat: np.ndarray) -> dict[str, Any]:
    """Whether the map shows anything: an all-zero Grad-CAM (every feature-map gradient ≤ 0) says nothing about where."""
    empty = not bool(np.any(np.asarray(heat) > 0))
    return {"empty": empty, "note": "the evidence map is empty (no positive evidence at this layer): it shows nothing about where; try --evidence occlusion"} if empty else {"empty": False}


def _nifti_gz(volume: np.ndarray, affine: np.ndarray) -> str:
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(volume, np.float32), affine)
    return base64.b64encode(gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)).decode()
