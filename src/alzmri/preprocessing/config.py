"""The preprocess command's configuration: the single source of its defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

StepName = Literal["reorient", "resample", "register", "brain_mask", "crop", "resize", "normalize"]
DEFAULT_STEPS: tuple[StepName, ...] = ("reorient", "resample", "brain_mask", "crop", "resize", "normalize")


class PreprocessConfig(BaseModel):
    """How raw T1w scans become model-ready cubic arrays."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(128, ge=8, le=512, description="Edge of the cubic output array in voxels.")
    spacing: float = Field(1.0, gt=0.1, le=8.0, description="Isotropic resampling voxel size in mm.")
    crop_padding: int = Field(3, ge=0, le=64, description="Voxels kept around the brain bounding box when cropping.")
    keep_aspect: bool = Field(
        True, description="Pad the brain box to a cube before resizing, so anatomy is not stretched."
    )
    steps: tuple[StepName, ...] = Field(DEFAULT_STEPS, description="Steps to run, in order.")
    dtype: Literal["float16", "float32"] = Field("float16", description="Storage type of cached arrays.")
