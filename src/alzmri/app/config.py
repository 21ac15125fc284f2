"""Settings of ``alzmri serve``; the CLI builds its options from these fields."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class ServeConfig(BaseModel):
    """Serve a trained model: upload a scan (NIfTI, a zip of one DICOM series) or a slice image; get the stage, its evidence map and downloads."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="Run folder or checkpoint (from 'alzmri train'), exported model (from 'alzmri export'), or models:/NAME/VERSION from the MLflow registry ('alzmri train --register-model').",
                       min_length=1, json_schema_extra={"argument": True})  # fmt: skip
    tracking_uri: str | None = Field(default_factory=lambda: os.environ.get("MLFLOW_TRACKING_URI") or None,
                                     description="MLflow store holding a models:/ registry model, e.g. sqlite:///runs/mlflow.db (default: $MLFLOW_TRACKING_URI).")  # fmt: skip
    progression: Path | None = Field(None, description="Progression run ('alzmri train-progression') on the model's classes and inputs: the page also shows the later stages it generates from the upload.")
    host: str = Field("127.0.0.1", description="Address to listen on (anything but localhost needs --token).")
    port: int = Field(8000, ge=1, le=65535, description="Port to listen on.")
    token: str | None = Field(default_factory=lambda: os.environ.get("ALZMRI_TOKEN") or None, min_length=16, description="Bearer token every API request must carry (required off localhost; default: $ALZMRI_TOKEN).")
    engine: Literal["auto", "torch", "onnxruntime", "torchscript"] = Field("auto", description="What runs the network (auto: by the model file's content).")
    evidence: Literal["gradcam", "occlusion", "none"] = Field("gradcam", description="Evidence map for each upload (needs a checkpoint, not an exported file).")
    workers: int = Field(1, ge=1, le=32, description="Uploads processed at once.")
    queue: int = Field(4, ge=0, le=1000, description="Uploads waiting beyond those; more are answered 429 (busy).")
    threads: int | None = Field(None, ge=1, le=256, description="CPU threads of the network (default: the runtime's own).")
    max_upload_mb: float = Field(256.0, gt=0, le=4096, description="Largest upload in MB (answered 413 beyond): a 1 mm head is ~15-50 MB as .nii.gz, a DICOM zip ~30-100 MB.")
    max_unpacked_mb: float = Field(2048.0, gt=0, le=16384, description="Largest unpacked size of a DICOM zip or .nii.gz upload in MB (a zip or gzip bomb is refused).")
    keep_uploads: Path | None = Field(None, description="Keep every upload and its result in this folder (default: nothing is kept).")

    @field_validator("model", mode="before")
    @classmethod
    def _path_text(cls, value: object) -> object:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if self.host not in LOCAL_HOSTS and not self.token:
            raise ValueError(f"--host {self.host} serves other machines: give --token (at least 16 characters) or set ALZMRI_TOKEN")
        return self
