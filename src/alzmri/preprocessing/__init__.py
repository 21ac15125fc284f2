"""Preprocessing: one transform per module, a pipeline, and a cached parallel runner."""

from alzmri.preprocessing.config import PreprocessConfig

__all__ = ["PreprocessConfig"]
