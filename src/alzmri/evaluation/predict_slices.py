"""``predict`` with a slice model: image files (or folders of them) prepared exactly as its training slices were (the table is made by ``evaluate.file_predictions``, as for scans)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alzmri.data.slices.from_images import prepare_image
from alzmri.data.slices.store import SliceSetConfig
from alzmri.io.images import is_image_file, read_image
from alzmri.utils.errors import AlzmriError, first_line

_BATCH = 64


def image_inputs(inputs: list[Path]) -> list[Path]:
    """Image files as given, and the images inside given folders (recursively, hidden files skipped)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and is_image_file(p) and not p.name.startswith("."))
        elif is_image_file(item):
            if not item.is_file():
                raise AlzmriError(f"image file not found: {item}")
            files.append(item)
        else:
            raise AlzmriError(f"cannot predict on {item} with a slice model: expected image files (PNG, JPEG, TIFF, BMP) or folders of them")
    if not files:
        raise AlzmriError("no images to predict on")
    return files


def predict_images(engine: Any, hp: dict[str, Any], inputs: list[Path], settings: SliceSetConfig) -> tuple[pd.DataFrame, np.ndarray, list[dict[str, str]]]:
    """Predict every image with an engine (:mod:`alzmri.evaluation.engines`); returns the predicted files (``participant_id``, ``session_id``, ``path``), their probabilities and the images that could not be read."""
    if settings.origin != "images" or settings.channels != 1:
        raise AlzmriError("this slice model was trained on slices cut from volumes: cut the scans' slices with 'alzmri slices' and score them with 'alzmri evaluate'")
    files = image_inputs(inputs)
    probs, done, failures = [], [], []
    for start in range(0, len(files), _BATCH):
        batch, kept = [], []
        for path in files[start : start + _BATCH]:
            try:
                batch.append(prepare_image(read_image(path)[0], settings.size))
            except AlzmriError as exc:
                failures.append({"participant_id": path.stem, "session_id": "", "path": str(path), "error": first_line(exc)})
                continue
            kept.append(path)
        if kept:
            probs.append(engine.probabilities(np.stack(batch)))
            done += kept
    scans = pd.DataFrame({"participant_id": [p.stem for p in done], "session_id": "", "path": [str(p) for p in done]})
    return scans, (np.concatenate(probs) if probs else np.zeros((0, len(hp["classes"])))), failures
