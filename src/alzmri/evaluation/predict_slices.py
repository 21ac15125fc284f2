"""``predict`` with a slice model: image files (or folders of them) prepared exactly as its training slices were."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from alzmri.data.provenance import describe_seen, find_seen
from alzmri.data.slices.from_images import prepare_image
from alzmri.data.slices.store import SliceSetConfig
from alzmri.evaluation.predict import predictions_table
from alzmri.io.images import is_image_file, read_image
from alzmri.io.manifest import write_manifest
from alzmri.utils.errors import AlzmriError, first_line
from alzmri.utils.hashing import content_digest

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


def predict_images(model: nn.Module, hp: dict[str, Any], inputs: list[Path], out: Path, settings: SliceSetConfig) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Predict every image; returns the table (written to ``out``) and the images that could not be read."""
    if settings.origin != "images" or settings.channels != 1:
        raise AlzmriError("this slice model was trained on slices cut from volumes: cut the scans' slices with 'alzmri slices' and score them with 'alzmri evaluate'")
    classes = list(hp["classes"])
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
            with torch.no_grad():
                probs.append(torch.softmax(model(torch.from_numpy(np.stack(batch))), dim=1).numpy())
            done += kept
    if not done:
        raise AlzmriError(f"none of the {len(files)} images could be read; first: {failures[0]['path']}: {failures[0]['error']}")
    rows = pd.DataFrame({"participant_id": [p.stem for p in done], "session_id": "", "path": [str(p) for p in done]})
    rows["source_hash"] = [content_digest(p) for p in done]
    table = predictions_table(rows, np.concatenate(probs), classes)
    table.insert(2, "path", rows["path"].to_numpy())
    seen = find_seen(hp.get("training_data"), rows)
    table["source_hash"] = rows["source_hash"].to_numpy()
    table["seen_in_training"] = ""
    table.loc[seen["position"].to_numpy(dtype=int), "seen_in_training"] = seen["seen_in"].to_numpy()
    if not seen.empty:
        print(f"warning: {describe_seen(seen)}; their predictions are not held-out results (column seen_in_training)")
    write_manifest(table, out)
    return table, failures
