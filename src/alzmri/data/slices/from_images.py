"""``import-slices``: 2D slice images (class folders or a manifest) → a slice cache.

Layouts read:

* ``ROOT/<class>/<image>``: one folder per class;
* ``ROOT/<split>/<class>/<image>`` with ``<split>`` one of train, val (validation), test: the split
  the data came with is kept (``given_split``) and written to ``OUT/split/``; without a val folder,
  ``--val-fraction`` of train becomes val, by subject where subjects are known;
* a manifest (TSV/CSV) with ``diagnosis`` and ``path`` (relative to the manifest), and optionally
  ``participant_id``, ``session_id``, ``slice_index``, ``split``.

Every image is padded to a square with background, resized (anti-aliased) to ``--size``, and
z-scored over its foreground (pixels above 2 % of its 99.5th percentile) with the background set to 0,
the same convention as the 3D default (``zero_background``). Images of another size than the
most common one are resized like the others, with a warning naming how many there were.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from alzmri.data.slices.classes import map_label, ordered_classes, parse_label_map
from alzmri.data.slices.config import ImportSlicesConfig
from alzmri.data.slices.store import (
    ARRAY_DIR,
    SPLIT_DIR,
    UNKNOWN_SUBJECT,
    SliceSetConfig,
    claim_slice_dir,
    save_slice,
    square_resized,
    write_slice_cache,
)
from alzmri.io.images import IMAGE_SUFFIXES, is_image_file, read_image
from alzmri.io.manifest import read_table
from alzmri.io.slice_names import PRESETS, SliceName, name_pattern, parse_slice_name
from alzmri.utils.errors import AlzmriError
from alzmri.utils.hashing import content_digest, text_digest
from alzmri.utils.names import safe_name

SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test", "testing": "test"}
NORMALIZATION = "zscore-foreground-v2"  # v2: foreground threshold relative to the image's 99.5th percentile (v1: of full scale)
FOREGROUND = 0.02  # of the image's bright end: above JPEG noise in a black background, below any tissue
_IGNORED = {"thumbs.db", "desktop.ini"}


def list_images(source: Path) -> list[dict[str, str]]:
    """The images of a folder layout or manifest: ``path``, ``label`` (folder or diagnosis), ``given_split``, ``relative``, ids.

    Raises:
        AlzmriError: a missing source, files outside class folders, an empty class folder, a
            file that is not an image, or a folder layout with no images.
    """
    if not source.exists():
        raise AlzmriError(f"{source} does not exist")
    if source.is_file():
        return _from_manifest(source)
    children = _visible(source)
    split_dirs = [c for c in children if c.is_dir() and c.name.lower() in SPLIT_FOLDERS]
    if split_dirs and len(split_dirs) == len([c for c in children if c.is_dir()]):
        entries = []
        for folder in sorted(split_dirs):
            entries += _class_folders(folder, source, SPLIT_FOLDERS[folder.name.lower()])
        return entries
    return _class_folders(source, source, "")


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.name.lower() not in _IGNORED)


def _class_folders(folder: Path, root: Path, split: str) -> list[dict[str, str]]:
    children = _visible(folder)
    loose = [c for c in children if c.is_file()]
    if loose:
        raise AlzmriError(f"{folder} holds files outside class folders (e.g. {loose[0].name}); put each image in a folder named after its class")
    classes = [c for c in children if c.is_dir()]
    if not classes:
        raise AlzmriError(f"{folder} has no class folders (expected e.g. {folder}/NonDemented/*.jpg)")
    entries = []
    for class_dir in classes:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith(".") and p.name.lower() not in _IGNORED)
        if not files:
            raise AlzmriError(f"class folder {class_dir} is empty; remove it or add its images")
        for path in files:
            if not is_image_file(path):
                raise AlzmriError(f"{path} is not an image ({', '.join(IMAGE_SUFFIXES)}); move it out of the class folder")
            entries.append({"path": os.path.abspath(path), "label": class_dir.name, "given_split": split, "relative": path.relative_to(root).as_posix()})
    return entries


def _from_manifest(path: Path) -> list[dict[str, str]]:
    table, where = read_table(path, "slice manifest")
    missing = [c for c in ("diagnosis", "path") if c not in table.columns]
    if missing:
        raise AlzmriError(f"slice manifest {path} lacks column(s) {', '.join(missing)} (has: {', '.join(table.columns)})")
    base = Path(os.path.abspath(path.parent))
    entries = []
    for i, row in table.iterrows():
        if not row["path"] or not row["diagnosis"]:
            raise AlzmriError(f"{where[i]}: empty {'path' if not row['path'] else 'diagnosis'}")
        file = base / Path(row["path"]).expanduser()
        split = row.get("split", "")
        if split and split.lower() not in SPLIT_FOLDERS:
            raise AlzmriError(f"{where[i]}: split {split!r} is not train, val or test")
        entry = {"path": str(file), "label": row["diagnosis"], "given_split": SPLIT_FOLDERS.get(split.lower(), ""),
                 "relative": row["path"], "where": where[i]}  # fmt: skip
        for column in ("participant_id", "session_id", "slice_index"):
            if row.get(column, ""):
                entry[column] = row[column]
        entries.append(entry)
    return entries


def _ids(entry: dict[str, str], names: str | None) -> SliceName | None:
    """The ids of one entry (manifest columns first, else its file name); None when the name does not match."""
    if "participant_id" in entry or "slice_index" in entry:
        index = entry.get("slice_index")
        if index is not None and not index.lstrip("-").isdigit():
            raise AlzmriError(f"{entry['where']}: slice_index {index!r} is not a whole number")
        return SliceName(entry.get("participant_id"), entry.get("session_id"), int(index) if index else None)
    if not names:
        return SliceName()
    try:
        return parse_slice_name(entry["path"], names)
    except AlzmriError:
        if not any(c in names for c in "(\\[") and names not in PRESETS:
            raise  # not a preset nor a regex: the message names the presets
        return None


def parse_all_ids(entries: list[dict[str, str]], names: str | None) -> tuple[list[SliceName], list[str]]:
    """Ids of every entry, and warnings. A name the pattern does not match gets no ids (subject unknown).

    Raises:
        AlzmriError: the pattern matches none of the file names (a wrong preset or regex).
    """
    if names:
        name_pattern(names)  # an invalid regex fails here, with its own message
    parsed = [_ids(e, names) for e in entries]
    misses = [e for e, ids in zip(entries, parsed, strict=True) if ids is None]
    warnings = []
    if misses and len(misses) == len(entries):
        raise AlzmriError(f"--names {names!r} matches none of the {len(entries)} file names (e.g. {Path(misses[0]['path']).name!r}); check the preset or regex")
    if misses:
        warnings.append(f"{len(misses)} of {len(entries)} file names do not match --names {names!r} (e.g. {Path(misses[0]['path']).name!r}); their subject and slice are unknown")
    return [ids or SliceName() for ids in parsed], warnings


def prepare_image(pixels: np.ndarray, size: int) -> np.ndarray:
    """Pad to a centred square with background (0), resize to ``size``², z-score the foreground, background 0."""
    square = square_resized(np.asarray(pixels, dtype=np.float32)[None], size)[0]
    # 2 % of the image's own bright end (its 99.5th percentile), not of full scale: a 16-bit export using
    # values up to 800 of 65,535 has its brain at 0.012 of full scale, the same slice as 8 bits at 1.0
    foreground = square > FOREGROUND * max(float(np.percentile(square, 99.5)), 1e-6)
    if foreground.sum() < 0.01 * square.size:  # nearly black: z-score all pixels rather than a handful
        foreground = np.ones_like(foreground)
    values = square[foreground]
    sd = float(values.std())
    out = np.where(foreground, (square - float(values.mean())) / (sd if sd > 1e-6 else 1.0), 0.0)
    return out.astype(np.float32)[None]


def import_slices(config: ImportSlicesConfig) -> dict[str, Any]:
    """Import the images; returns counts and warnings. Resumes: an existing array is not recomputed."""
    label_map = parse_label_map(config.label_map)
    entries = list_images(Path(config.source))
    out = Path(config.out)
    labels = [map_label(e["label"], label_map, e.get("where", e["path"])) for e in entries]
    classes = ordered_classes(labels, label_map)
    all_ids, warnings = parse_all_ids(entries, config.names)
    claim_slice_dir(out)
    rows, sizes, colour = [], Counter(), 0
    settings = f"{config.size}:{NORMALIZATION}"
    for entry, label, ids in tqdm(list(zip(entries, labels, all_ids, strict=True)), desc="import-slices", unit="image", disable=not config.progress):
        pixels, notes = read_image(entry["path"])
        sizes[pixels.shape] += 1
        colour += any(note.startswith("colour") for note in notes)
        digest = content_digest(entry["path"])
        key = text_digest(f"{digest}:{settings}")
        array = f"{ARRAY_DIR}/{safe_name(Path(entry['relative']).with_suffix('').as_posix())}.{key}.npy"
        if not (out / array).is_file():
            save_slice(out / array, prepare_image(pixels, config.size))
        known = ids.participant_id is not None
        rows.append({
            "participant_id": ids.participant_id if known else f"{UNKNOWN_SUBJECT}{Path(entry['relative']).with_suffix('').as_posix()}",
            "session_id": ids.session_id or "", "slice_id": entry["relative"],
            "slice_index": "" if ids.slice_index is None else str(ids.slice_index), "diagnosis": label,
            "subject_known": known, "plane": config.plane, "image_set": ids.image_set or "", "given_split": entry["given_split"],
            "source": entry["path"], "source_hash": digest, "array": array, "mask": "",
            "original_size": f"{pixels.shape[0]}x{pixels.shape[1]}", "warnings": "; ".join(notes),
        })  # fmt: skip
    slice_config = SliceSetConfig(origin="images", size=config.size, channels=1, plane=config.plane, classes=classes, normalization=NORMALIZATION)
    table = write_slice_cache(out, rows, slice_config)
    if len(sizes) > 1:
        common, n = sizes.most_common(1)[0]
        warnings.append(f"{len(rows) - n} of {len(rows)} images are not {common[0]}x{common[1]} (sizes: "
                        + ", ".join(f"{h}x{w} ×{k}" for (h, w), k in sizes.most_common(4)) + f"); all were resized to {config.size}x{config.size}")  # fmt: skip
    if colour:
        warnings.append(f"{colour} images are in colour (channels differ), converted to gray: check they are scans, not screenshots")
    unknown = int((~table["subject_known"].astype(bool)).sum())
    if unknown:
        warnings.append(
            f"{unknown} of {len(rows)} slices have no subject id ({'--names matched no subject' if config.names else 'no --names given'}): "
            "each is its own pseudo-subject, so a split of them is a slice-level split that can put one person's slices on both sides"
        )
    split_counts = _write_given_split(out, table, config) if (table["given_split"] != "").any() else None
    return {"slices": len(rows), "classes": classes, "counts": table["diagnosis"].value_counts().reindex(classes).tolist(),
            "subjects_known": len(rows) - unknown, "warnings": warnings, "split": split_counts, "out": str(out)}  # fmt: skip


def _write_given_split(out: Path, table: pd.DataFrame, config: ImportSlicesConfig) -> dict[str, int]:
    """``OUT/split/{train,val,test}.tsv``: exactly the given split folders, one row per slice (val carved from train if absent).

    The rows list slices (with ``slice_id``), so every slice stays in the split its folder put it
    in. When a subject has images in two split folders, the given split is a slice-level split:
    it is written as such (``split.json``), with a warning, so training and every report flag it.
    """
    from alzmri.data.splits import SPLITS, round_robin_split, write_split_level, write_splits

    if (table["given_split"] == "").any():
        raise AlzmriError("some images are inside train/val/test folders and some are not; keep one layout")
    columns = ["participant_id", "session_id", "slice_id", "diagnosis", "subject_known"]
    parts = {name: table.loc[table["given_split"] == name, columns].reset_index(drop=True) for name in SPLITS}
    if parts["train"].empty:
        raise AlzmriError(f"{config.source} has no train folder; a given split needs one (or put the class folders directly in {config.source})")
    if parts["val"].empty and config.val_fraction > 0:  # by subject (unknown subjects are one slice each)
        scans = parts["train"].drop_duplicates(["participant_id", "session_id"])
        try:
            carved = round_robin_split(scans, ratios=(1 - config.val_fraction, config.val_fraction, 0.0), seed=config.seed)
        except AlzmriError as exc:
            raise AlzmriError(f"cannot draw a validation split from {config.source}/train: {exc} (change --val-fraction, or add a val/ folder)") from None
        to_val = set(carved["val"]["participant_id"])
        train = parts["train"]
        parts["val"] = train[train["participant_id"].isin(to_val)].reset_index(drop=True)
        parts["train"] = train[~train["participant_id"].isin(to_val)].reset_index(drop=True)
    named = {name: set(part["participant_id"]) for name, part in parts.items()}
    shared = sorted((named["train"] & (named["val"] | named["test"])) | (named["val"] & named["test"]))
    write_splits(parts, out / SPLIT_DIR)
    write_split_level(out / SPLIT_DIR, "slice" if shared else "subject")
    if shared:
        print(f"warning: {len(shared)} subjects have images in more than one of the train/val/test folders (e.g. {shared[0]}): "
              "the given split is a slice-level split; it is kept as given and marked, and every result from it is flagged")  # fmt: skip
    return {name: len(part) for name, part in parts.items()}
