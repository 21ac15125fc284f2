"""One reader for model inputs: a 3D preprocessing cache or a 2D slice cache.

Both are a folder with ``manifest.tsv`` (one row per model input, ``array`` pointing to its
``.npy``) and a settings file (``preprocess.json`` or ``slices.json``); the settings travel
into every checkpoint, so evaluation can refuse inputs made differently from the training data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from alzmri.data.slices.store import SliceSetConfig, is_slice_cache, read_slice_cache
from alzmri.preprocessing.cache import read_cache
from alzmri.preprocessing.config import PreprocessConfig, stored_config

InputConfig = PreprocessConfig | SliceSetConfig


def read_inputs(path: str | Path) -> tuple[pd.DataFrame, InputConfig]:
    """The manifest and settings of a preprocessing cache or a slice cache."""
    return read_slice_cache(path) if is_slice_cache(path) else read_cache(path)


def stored_inputs(settings: dict[str, Any] | str, where: str) -> InputConfig:
    """The input settings stored in a checkpoint (or a settings file's text)."""
    if isinstance(settings, dict) and settings.get("kind") == "slices":
        return SliceSetConfig.model_validate(settings)
    return stored_config(settings, where)


def spatial_dims(config: InputConfig) -> int:
    """3 for volumes, 2 for slices."""
    return 2 if isinstance(config, SliceSetConfig) else 3


def input_channels(config: InputConfig) -> int:
    """Channels of one model input (volumes 1; slices 1, or 3 for 2.5D)."""
    return config.channels if isinstance(config, SliceSetConfig) else 1


def same_inputs(a: InputConfig, b: InputConfig) -> bool:
    """Whether two settings make the same model inputs (a slice cache's class list may differ)."""
    if isinstance(a, SliceSetConfig) and isinstance(b, SliceSetConfig):
        return a.signature() == b.signature()
    return a == b


def describe(config: InputConfig) -> str:
    """The settings as one JSON line, for error messages."""
    return config.model_dump_json()
