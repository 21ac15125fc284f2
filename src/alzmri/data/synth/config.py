"""Settings of ``alzmri synth``; the CLI builds its options from these fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Diagnosis = Literal["CN", "MCI", "AD"]
Stages = Literal["cdr", "diagnosis"]

# Stage names of a longitudinal cohort, in the order a subject passes through them.
STAGE_NAMES: dict[str, tuple[str, ...]] = {
    "cdr": ("NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented"),  # CDR 0, 0.5, 1, 2 (OASIS)
    "diagnosis": ("CN", "MCI", "AD"),
}

# Bumped whenever a change to the generator alters the images a given config produces, so an
# old output directory is never silently "resumed" with differently generated scans.
GENERATOR_VERSION = 2  # 2: the truth masks mark only thinning the image shows (none beyond the 0.9 limit)


class SynthConfig(BaseModel):
    """What synthetic cohort to generate.

    Attributes:
        subjects: number of subjects.
        classes: diagnoses to draw subjects from, balanced across subjects.
        sessions: minimum and maximum number of sessions (about a year apart) per subject.
        voxel_size: nominal voxel size in mm; every scan jitters around it.
        seed: random seed; the same seed gives the same cohort, byte for byte.
        atrophy_scale: multiplier on the disease-related atrophy (0 removes the disease signal).
        thinning_scale: extra multiplier on the disease-related cortical thinning alone (on top of
            ``atrophy_scale``; 0 leaves only the volume changes of the deep structures).
        longitudinal: follow every subject through the disease stages instead (one visit per
            stage of ``stages``, atrophy advancing at a per-subject pace; ``classes`` and
            ``sessions`` do not apply); every visit after the first also gets a true change mask.
        stages: the stage scheme of a longitudinal cohort: ``cdr`` (NonDemented, VeryMildDemented,
            MildDemented, ModerateDemented: CDR 0, 0.5, 1, 2) or ``diagnosis`` (CN, MCI, AD).
        snps: synthetic genetics (:mod:`alzmri.data.synth.genetics`): ``genetics.tsv`` with APOE
            genotypes and this many SNP dosages (0 = no genetics).
        causal_snps: how many SNPs carry the planted effect.
        snp_odds_ratio: their per-allele odds ratio between risk 0 and risk 1.
        workers: parallel worker processes (0 = one per CPU core); does not change the output.
    """

    model_config = ConfigDict(extra="forbid")

    subjects: int = Field(60, ge=2, le=9999, description="Number of subjects.")
    classes: list[Diagnosis] = Field(
        default_factory=lambda: ["CN", "MCI", "AD"], description="Diagnoses to draw subjects from (balanced)."
    )
    sessions: tuple[int, int] = Field((1, 3), description="Min and max sessions per subject.")
    voxel_size: float = Field(1.0, gt=0.3, le=4.0, description="Nominal voxel size in mm (each scan jitters around it).")
    seed: int = Field(0, ge=0, description="Random seed; same seed, same cohort.")
    atrophy_scale: float = Field(1.0, ge=0.0, description="Multiplier on disease-related atrophy (0 = no disease signal).")
    thinning_scale: float = Field(
        1.0, ge=0.0, description="Extra multiplier on the disease-related cortical thinning alone, on top of atrophy_scale (0 = volume changes only)."
    )
    longitudinal: bool = Field(
        False, description="Follow every subject stage by stage (one visit per stage of --stages at a per-subject pace, with true change masks); --classes and --sessions do not apply."
    )
    stages: Stages = Field("cdr", description="Stages of a longitudinal cohort: cdr (NonDemented → VeryMildDemented → MildDemented → ModerateDemented) or diagnosis (CN → MCI → AD).")
    snps: int = Field(0, ge=0, le=100000, description="Synthetic genetics: write genetics.tsv with APOE genotypes and this many SNP dosages tied to each subject's disease (0 = none).")
    causal_snps: int = Field(5, ge=0, description="How many of the SNPs carry a planted effect (the rest are null).")
    snp_odds_ratio: float = Field(1.5, gt=0, description="Per-allele odds ratio of a causal SNP between the mildest and the most severe subjects.")
    workers: int = Field(0, ge=0, description="Parallel worker processes (0 = one per CPU core).")

    @model_validator(mode="after")
    def _check(self) -> SynthConfig:
        if not self.classes:
            raise ValueError("classes must name at least one diagnosis")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must not repeat a diagnosis: {self.classes}")
        low, high = self.sessions
        if low < 1 or high < low or high > 99:
            raise ValueError(f"sessions must be (min, max) with 1 <= min <= max <= 99, got {self.sessions}")
        return self

    def stage_names(self) -> tuple[str, ...]:
        """The diagnoses (cross-sectional) or stages (longitudinal) the cohort's labels use, in order."""
        return STAGE_NAMES[self.stages] if self.longitudinal else tuple(self.classes)

    def identity(self) -> dict[str, Any]:
        """The settings that determine the output (everything but ``workers``), as JSON types.

        Returns:
            A JSON-serialisable dict used to recognise a previous output of the same config.
        """
        exclude = {"workers"}
        if self.thinning_scale == 1.0:  # added later: cohorts made before it keep their identity
            exclude.add("thinning_scale")
        if self.snps == 0:  # genetics, added later: cohorts without it keep their identity
            exclude |= {"snps", "causal_snps", "snp_odds_ratio"}
        if not self.longitudinal:  # added later too
            exclude |= {"longitudinal", "stages"}
        else:
            exclude |= {"classes", "sessions"}
        return self.model_dump(mode="json", exclude=exclude)
