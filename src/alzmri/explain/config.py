"""The explain command's configuration (names only: building maps needs torch, imported later)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Method = Literal["gradcam", "gradcam++", "occlusion", "saliency", "smoothgrad", "integrated_gradients"]
METHODS: tuple[str, ...] = get_args(Method)
Threshold = Literal["percentile", "otsu", "mean_std"]
THRESHOLDS: tuple[str, ...] = get_args(Threshold)
InputSpace = Literal["native", "MNI152"]


class ExplainConfig(BaseModel):
    """Attribution maps of a trained model, with thresholds, pictures and a sanity check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run: Path = Field(description="Run folder (uses checkpoints/best-loss.ckpt) or a checkpoint file.", json_schema_extra={"argument": True})
    scan: list[Path] | None = Field(None, description="Raw scans to explain (NIfTI or DICOM folders), preprocessed as the model's training data.")
    genetics: Path | None = Field(None, description="Genetic table for a fusion model (default: the table it was trained with); matched by participant_id (a raw scan's file name).")
    cache: Path | None = Field(None, description="Preprocessing cache whose scans to explain (with --split and --data).")
    split: Path | None = Field(None, description="Split folder (with --cache).")
    data: str = Field("test", description="Which split's scans to explain (with --cache and --split).")
    limit: int | None = Field(None, ge=1, description="Explain at most this many scans.")
    method: Method = Field("gradcam", description="Attribution method: gradcam, gradcam++, occlusion, saliency, smoothgrad, integrated_gradients.")
    layer: str | None = Field(None, description="Grad-CAM layer (default: the model's registered layer).")
    occlusion_size: int | None = Field(None, ge=1, description="Occlusion: edge of the occluded cube in model-grid voxels (default: the input edge // 8); windows step by half of it.")
    target: str = Field("predicted", description="Class each map explains: predicted (the model's choice), true (the scan's diagnosis) or a class name such as AD.")
    smooth: float = Field(0.0, ge=0, description="Gaussian smoothing of each map before it is clipped to its positive part, sigma in model-grid voxels (0 = none; gradient maps are speckled voxel to voxel).")
    threshold: Threshold = Field("percentile", description="How the map is thresholded: percentile, otsu or mean_std (mean + k sd), inside the brain.")
    percentile: float = Field(95.0, gt=0, lt=100, description="Percentile threshold: keep the voxels above this percentile.")
    k: float = Field(2.0, gt=0, description="mean_std threshold: mean + k standard deviations.")
    sanity: bool = Field(True, description="Run the cascading parameter-randomisation check (Adebayo et al. 2018) on the first scan.")
    label_randomized: Path | None = Field(
        None, description="Run (or checkpoint) trained on the same data with 'alzmri train --shuffle-labels': the label-randomisation check compares its maps with this model's, scan by scan."
    )
    gif: bool = Field(True, description="Write an animated GIF sweeping the three planes per scan.")
    regions: bool = Field(False, description="Attribution per Desikan-Killiany region and enrichment over chance: on the MNI atlas for scans in MNI152 space ('register' in the preprocessing steps, or --input-space MNI152), or with --truth on each synthetic scan's own atlas labels.")
    input_space: InputSpace = Field(
        "native",
        description="Space the scans were in before alzmri preprocessed them: native (scanner space; MNI152 anyway after alzmri's 'register' step) "
        "or MNI152 for scans already normalised to MNI152 (SPM, Clinica, fMRIPrep outputs), so that --regions can put the atlas on them without 'register'.",
    )
    truth: Path | None = Field(None, description="Score the maps against planted atrophy: the derivatives/synth folder of an 'alzmri synth' cohort (with --cache).")
    truth_level: float = Field(0.1, gt=0, le=1, description="Planted-atrophy strength (fraction of full scale) at which a voxel counts as planted.")
    out: Path | None = Field(None, description="Output folder (default: RUN/explain-METHOD).")
