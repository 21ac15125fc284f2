"""The preprocess command's configuration: the single source of its defaults."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

StepName = Literal["reorient", "resample", "n4", "skull_strip", "register", "crop", "resize", "normalize"]
DEFAULT_STEPS: tuple[StepName, ...] = ("reorient", "resample", "n4", "skull_strip", "crop", "resize", "normalize")
SkullStripMethod = Literal["deepbet", "template", "synthstrip", "hd-bet", "bet", "none"]


class PreprocessConfig(BaseModel):
    """How raw T1w scans become model-ready cubic arrays."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: tuple[StepName, ...] = Field(DEFAULT_STEPS, description="Steps to run, in order ('register' = affine to MNI152, optional).")
    spacing: float = Field(1.0, gt=0.1, le=8.0, description="Isotropic resampling voxel size in mm.")
    n4_grid_mm: float = Field(
        8.0, ge=0.5, le=16.0, description="N4: voxel size (mm) of the shrunk copy the bias field is fitted on (larger = faster)."
    )
    n4_iterations: tuple[int, ...] = Field((50, 50, 30), min_length=1, max_length=6, description="N4: iterations per resolution level.")
    skull_strip: SkullStripMethod = Field(
        "deepbet",
        description="Skull stripping: 'deepbet' (the networks shipped in the deepbet wheel, offline), 'template' (MNI152 "
        "registration + refinement, no network), 'synthstrip', 'hd-bet', 'bet' (call the installed tool), "
        "'none' (input already skull-stripped: Otsu brain mask).",
    )
    strip_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="deepbet: brain probability above which a voxel is brain.")
    strip_dilate: int = Field(0, ge=-10, le=10, description="deepbet: voxels to grow the brain mask by (negative: shrink).")
    strip_check: SkullStripMethod | None = Field(
        None,
        description="QC: also run this skull-stripping method and flag the scan when the two masks disagree (Dice below 0.90).",
    )
    crop_padding: int = Field(3, ge=0, le=64, description="Voxels kept around the brain bounding box when cropping.")
    keep_aspect: bool = Field(True, description="Pad the brain box to a cube before resizing, so anatomy is not stretched.")
    size: int = Field(128, ge=8, le=512, description="Edge of the cubic output array in voxels.")
    interpolation: Literal["bspline", "linear"] = Field("bspline", description="Resize interpolation ('bspline' = cubic).")
    normalization: Literal["zscore", "minmax"] = Field(
        "zscore", description="Intensity normalisation inside the brain: z-score, or percentile min-max to [0, 1]."
    )
    percentiles: tuple[float, float] = Field((0.5, 99.5), description="Percentiles mapped to 0 and 1 by 'minmax'.")
    zero_background: bool = Field(
        True,
        description="Set every voxel outside the brain mask to 0 after normalising (for z-score: the brain's mean). "
        "Off, a z-scored background keeps the value -mean/sd of the brain, one number per scan that follows the scanner's "
        "contrast and the brain's CSF share and that a network reads at once (see benchmarks/README.md).",
    )
    dtype: Literal["float16", "float32"] = Field("float16", description="Storage type of cached arrays.")

    @model_validator(mode="after")
    def _check(self) -> PreprocessConfig:
        if len(set(self.steps)) != len(self.steps):
            raise ValueError(f"steps must not repeat: {list(self.steps)}")
        for step in ("crop", "normalize"):
            if step in self.steps and ("skull_strip" not in self.steps or self.steps.index("skull_strip") > self.steps.index(step)):
                raise ValueError(f"step {step!r} needs 'skull_strip' earlier in the steps (use --skull-strip none for skull-stripped input)")
        if self.strip_check is not None and (self.strip_check == self.skull_strip or "none" in (self.strip_check, self.skull_strip)):
            raise ValueError("strip_check must name a second skull-stripping method, other than skull_strip and 'none'")
        low, high = self.percentiles
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {self.percentiles}")
        return self


def stored_config(data: str | dict, source: str) -> PreprocessConfig:
    """A PreprocessConfig read back from a cache or checkpoint, with a clear error if outdated.

    Settings written before ``zero_background`` existed read back with it off, as they were made.

    Args:
        data: the stored JSON text or dict.
        source: what it was read from, named in the error.
    """
    from pydantic import ValidationError

    from alzmri.utils.errors import AlzmriError

    import json

    try:
        values = json.loads(data) if isinstance(data, str) else dict(data)
    except json.JSONDecodeError as exc:
        raise AlzmriError(f"{source} holds unreadable preprocessing settings ({exc.msg}); re-run preprocess/train") from None
    if isinstance(values, dict):
        # Settings stored before zero_background existed made the background -mean/sd: keep reading them so,
        # or new scans would be preprocessed unlike the arrays (and the training data) they are compared with.
        values.setdefault("zero_background", False)
    try:
        return PreprocessConfig.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise AlzmriError(
            f"{source} holds preprocessing settings this alzmri version does not accept "
            f"({'.'.join(map(str, first['loc']))}: {first['msg']}); it was made by another version: re-run preprocess/train"
        ) from None
