"""Configurations of the slice commands: ``import-slices`` (2D image files) and ``slices`` (cut from 3D)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Plane = Literal["axial", "coronal", "sagittal"]


class ImportSlicesConfig(BaseModel):
    """2D slice images (class folders or a manifest) → a slice cache for split, train and evaluate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Path = Field(
        description="Folder of class subfolders (optionally inside train/, val/, test/ folders), or a manifest TSV/CSV "
        "(diagnosis, path; optional participant_id, session_id, slice_index, split).",
        json_schema_extra={"argument": True},
    )
    out: Path = Field(description="Slice cache folder to write (new, or a previous import to resume).", json_schema_extra={"argument": True})
    names: str | None = Field(
        None, description="Read subject/session/slice ids from file names: a preset (oasis, subject_slice, slice_set) or a regex "
        "with named groups participant_id, session_id, slice_index, image_set (default: subjects unknown)."
    )
    label_map: str | None = Field(None, description="Folder or diagnosis names to classes, 'FOLDER=CLASS,...' (needed for names that are not known stages).")
    size: int = Field(128, ge=16, le=1024, description="Edge of the square slices the images are padded and resized to (256 for the EfficientNet-B4 recipe).")
    plane: Plane = Field("axial", description="Plane the images show (recorded; decides whether left-right flips are anatomy-preserving).")
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="When the images come in train/ and test/ folders without val/: share of train moved to val (by subject when subjects are known).")
    seed: int = Field(0, ge=0, description="Seed of that validation draw.")
    progress: bool = Field(True, description="Show a progress bar.")


class SlicesConfig(BaseModel):
    """Slices cut from the volumes of a preprocessing cache → a slice cache, so 2D, 2.5D and 3D see the same subjects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cache: Path = Field(description="Preprocessing cache folder (from 'alzmri preprocess').", json_schema_extra={"argument": True})
    out: Path = Field(description="Slice cache folder to write (new, or a previous run to resume).", json_schema_extra={"argument": True})
    plane: Plane = Field("axial", description="Slicing plane.")
    n: int = Field(5, ge=1, le=256, description="Slices per volume, centred on the brain's centre of mass.")
    step: int = Field(2, ge=1, le=32, description="Voxels between the chosen slices.")
    context: int = Field(0, ge=0, le=1, description="2.5D: 1 stacks each slice with its two neighbours as three channels; 0 is plain 2D.")
    structure: str | None = Field(
        None, description="Centre the slices on a Desikan-Killiany structure instead of the whole brain, e.g. Hippocampus (left and right) "
        "or Left-Hippocampus; needs scans registered to MNI152 ('register' in the preprocessing steps)."
    )
    size: int | None = Field(None, ge=16, le=1024, description="Resize the slices to this edge (default: the volume's).")
    progress: bool = Field(True, description="Show a progress bar.")


class SliceAuditConfig(BaseModel):
    """Find test slices that probably come from a person seen in training (near-duplicate search), with a calibrated threshold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cache: Path = Field(description="Slice cache (from 'alzmri import-slices' or 'alzmri slices').", json_schema_extra={"argument": True})
    split: Path | None = Field(None, description="Split folder (default: the cache's own split/, the split the images came with).", json_schema_extra={"argument": True})
    out: Path = Field(Path("slice-audit"), description="Folder for audit.tsv (every test slice's best training match), summary.json and figures.")
    calibrate: Path | None = Field(
        None, description="Slice cache with known subjects and slice numbers to calibrate the threshold on (default: CACHE itself, "
        "when it has at least 3 known subjects)."
    )
    threshold: float | None = Field(None, ge=-1.0, le=1.0, description="Use this NCC threshold instead of calibrating one.")
    quantile: float = Field(0.99, gt=0.5, lt=1.0, description="Threshold = this quantile of each calibration slice's best match among other people's slices.")
    max_gap: int = Field(3, ge=1, le=20, description="Calibration: same-person pairs are slices 1 to this many apart.")
    size: int = Field(32, ge=8, le=128, description="Edge the slices are reduced to before comparing.")
    shift: int = Field(1, ge=0, le=4, description="Largest shift (pixels of the reduced image) tried in each direction.")
    train: str = Field("train", description="Split whose slices are the reference (the model's training data).")
    test: str = Field("test", description="Split whose slices are checked.")


class EdaConfig(BaseModel):
    """Per-class mean slices, stage differences, intensity histograms, SSIM and counts of a slice cache, on one HTML page."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cache: Path = Field(description="Slice cache (from 'alzmri import-slices' or 'alzmri slices').", json_schema_extra={"argument": True})
    out: Path = Field(Path("eda"), description="Folder for eda.html (self-contained), eda.json and the PNGs.")
    limit: int = Field(2000, ge=1, description="At most this many slices per class go into the means and histograms (drawn evenly).")
