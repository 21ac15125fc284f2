"""Sample the cohort (subjects, sessions, diagnoses, atrophy, acquisitions) as render jobs.

Every random choice comes from a generator seeded by ``(config.seed, purpose, subject[, session])``,
so a scan does not depend on the number of workers or the order of rendering.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alzmri.data.synth.anatomy import RegionChange, SubjectAnatomy, draw_subject_anatomy, region_changes
from alzmri.data.synth.config import SynthConfig
from alzmri.data.synth.render import ScanJob
from alzmri.data.synth.scanner import SITES, draw_scan_params

# Baseline age (mean, sd) and disease severity (mean, sd) by diagnosis; AD a little older.
_AGE = {"CN": (71.5, 6.0), "MCI": (73.0, 6.5), "AD": (75.0, 7.0)}
_SEVERITY = {"CN": (0.0, 0.08), "MCI": (0.4, 0.13), "AD": (0.85, 0.15)}
_SEVERITY_RANGE = {"CN": (0.0, 0.3), "MCI": (0.05, 0.9), "AD": (0.45, 1.4)}
# Mean yearly increase of disease severity.
_PROGRESSION = {"CN": 0.01, "MCI": 0.06, "AD": 0.09}
# Longitudinal cohorts: disease severity reached at each stage (same scale as above: typical AD ~0.85),
# before the subject's own factor; and the mean yearly increase of severity while progressing.
_STAGE_SEVERITY = {"cdr": (0.0, 0.35, 0.75, 1.2), "diagnosis": (0.0, 0.4, 0.85)}
_LONGITUDINAL_PACE = 0.12
_PURPOSE_COHORT, _PURPOSE_SUBJECT, _PURPOSE_SCAN, _PURPOSE_NOISE = range(4)


@dataclass(frozen=True)
class Session:
    """One visit of a subject.

    Attributes:
        session_id: e.g. ``ses-01``.
        age: age at the visit, years.
        severity: disease severity at the visit.
        changes: per-region atrophy at the visit.
        stage: the visit's disease stage (longitudinal cohorts), else None.
    """

    session_id: str
    age: float
    severity: float
    changes: dict[str, RegionChange]
    stage: str | None = None


@dataclass(frozen=True)
class Subject:
    """One participant.

    Attributes:
        index: 0-based position in the cohort.
        participant_id: e.g. ``sub-001``.
        diagnosis: ``CN``, ``MCI`` or ``AD``.
        sex: ``M`` or ``F``.
        site: index into the virtual sites.
        anatomy: head size, individual warp and regional variation.
        sessions: the visits, about a year apart (longitudinal cohorts: one per stage).
        stage_factor: longitudinal cohorts: this subject's multiplier on the atrophy each stage brings.
        yearly_rate: longitudinal cohorts: this subject's increase of disease severity per year.
    """

    index: int
    participant_id: str
    diagnosis: str
    sex: str
    site: int
    anatomy: SubjectAnatomy
    sessions: tuple[Session, ...]
    stage_factor: float | None = None
    yearly_rate: float | None = None

    @property
    def age(self) -> float:
        """Age at baseline."""
        return self.sessions[0].age


def _entropy(config: SynthConfig, *parts: int) -> tuple[int, ...]:
    return (config.seed % 2**64, *parts)


def _rng(config: SynthConfig, *parts: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(_entropy(config, *parts)))


def _diagnoses(config: SynthConfig) -> list[str]:
    """Balanced diagnoses (class counts differ by at most one), in a seeded random order."""
    labels = [config.classes[i % len(config.classes)] for i in range(config.subjects)]
    order = _rng(config, _PURPOSE_COHORT).permutation(config.subjects)
    return [labels[i] for i in order]


def _subject(config: SynthConfig, index: int, diagnosis: str, width: int) -> Subject:
    rng = _rng(config, _PURPOSE_SUBJECT, index)
    sex = "F" if rng.random() < (0.58 if diagnosis == "AD" else 0.52) else "M"
    mean, sd = _AGE[diagnosis]
    age = float(np.clip(rng.normal(mean, sd), 60.0, 88.0))
    low, high = _SEVERITY_RANGE[diagnosis]
    mean, sd = _SEVERITY[diagnosis]
    draw = rng.normal(mean, sd)
    severity = float(np.clip(abs(draw) if diagnosis == "CN" else draw, low, high))
    rate = _PROGRESSION[diagnosis] * float(rng.lognormal(0.0, 0.3))
    count = int(rng.integers(config.sessions[0], config.sessions[1] + 1))
    site = int(rng.integers(len(SITES)))
    anatomy = draw_subject_anatomy(rng, sex)
    sessions = []
    years = 0.0
    for visit in range(count):
        if visit:
            years += float(np.clip(rng.normal(1.0, 0.08), 0.75, 1.4))
        level = severity + rate * years
        changes = region_changes(anatomy, level, age + years, config.atrophy_scale, config.thinning_scale)
        sessions.append(Session(f"ses-{visit + 1:02d}", round(age + years, 2), round(level, 4), changes))
    return Subject(index, f"sub-{index + 1:0{width}d}", diagnosis, sex, site, anatomy, tuple(sessions))


def _followed_subject(config: SynthConfig, index: int, width: int) -> Subject:
    """A subject visited once per stage; severity advances by the stage's step times the subject's factor."""
    rng = _rng(config, _PURPOSE_SUBJECT, index)
    sex = "F" if rng.random() < 0.55 else "M"
    age = float(np.clip(rng.normal(*_AGE["CN"]), 60.0, 80.0))
    factor = float(rng.lognormal(0.0, 0.2))
    yearly = _LONGITUDINAL_PACE * float(rng.lognormal(0.0, 0.3))
    start = abs(float(rng.normal(0.0, 0.03)))
    site = int(rng.integers(len(SITES)))
    anatomy = draw_subject_anatomy(rng, sex)
    sessions = []
    for visit, (stage, anchor) in enumerate(zip(config.stage_names(), _STAGE_SEVERITY[config.stages], strict=True)):
        level = start + anchor * factor
        years = anchor * factor / yearly
        changes = region_changes(anatomy, level, age + years, config.atrophy_scale, config.thinning_scale)
        sessions.append(Session(f"ses-{visit + 1:02d}", round(age + years, 2), round(level, 4), changes, stage))
    last = config.stage_names()[-1]
    return Subject(index, f"sub-{index + 1:0{width}d}", last, sex, site, anatomy, tuple(sessions), round(factor, 4), round(yearly, 4))


def plan_subjects(config: SynthConfig) -> list[Subject]:
    """Draw every subject and session of the cohort (cheap: no image is touched).

    Args:
        config: the cohort settings.

    Returns:
        Subjects in participant-id order.
    """
    width = max(3, len(str(config.subjects)))
    if config.longitudinal:
        return [_followed_subject(config, i, width) for i in range(config.subjects)]
    return [_subject(config, i, dx, width) for i, dx in enumerate(_diagnoses(config))]


def scan_paths(out_dir: Path, participant_id: str, session_id: str) -> tuple[Path, Path]:
    """BIDS paths of a scan's T1w image and of its atrophy mask.

    Args:
        out_dir: dataset root.
        participant_id: e.g. ``sub-001``.
        session_id: e.g. ``ses-01``.

    Returns:
        ``(t1w, mask)`` paths.
    """
    stem = f"{participant_id}_{session_id}"
    t1w = out_dir / participant_id / session_id / "anat" / f"{stem}_T1w.nii.gz"
    mask = out_dir / "derivatives" / "synth" / participant_id / session_id / "anat" / f"{stem}_desc-atrophy_mask.nii.gz"
    return t1w, mask


def plan_jobs(config: SynthConfig, out_dir: Path, subjects: list[Subject]) -> list[ScanJob]:
    """One render job per scan.

    Args:
        config: the cohort settings.
        out_dir: dataset root.
        subjects: output of :func:`plan_subjects`.

    Returns:
        Jobs in participant then session order.
    """
    jobs = []
    for subject in subjects:
        for visit, session in enumerate(subject.sessions):
            params = draw_scan_params(_rng(config, _PURPOSE_SCAN, subject.index, visit), config.voxel_size, subject.site)
            t1w, mask = scan_paths(out_dir, subject.participant_id, session.session_id)
            jobs.append(ScanJob(
                participant_id=subject.participant_id,
                session_id=session.session_id,
                t1w=t1w,
                mask=mask,
                anatomy=subject.anatomy,
                changes=session.changes,
                params=params,
                nominal_voxel=config.voxel_size,
                noise_entropy=_entropy(config, _PURPOSE_NOISE, subject.index, visit),
                previous=subject.sessions[visit - 1].changes if config.longitudinal and visit else None,
            ))
    return jobs
