"""Preprocessing steps, pipeline and the cached runner."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from alzmri.io.bids import load_scans
from alzmri.preprocessing.cache import read_cache
from alzmri.preprocessing.config import PreprocessConfig
from alzmri.preprocessing.pipeline import build_pipeline, preprocess_image
from alzmri.preprocessing.runner import preprocess_scans
from alzmri.utils.errors import AlzmriError

from conftest import brain_volume, save_nifti

# The fixture volumes are skull-stripped ellipsoid "brains": no template skull stripping.
CFG = PreprocessConfig(size=16, spacing=2.0, skull_strip="none")


def test_output_is_cubic_zscored_in_brain_and_orientation_invariant(tmp_path) -> None:
    vol = brain_volume()
    ras = save_nifti(tmp_path / "ras.nii.gz", vol)
    las = save_nifti(tmp_path / "las.nii.gz", vol, flip_x=True)
    assert "".join(nib.aff2axcodes(nib.load(las).affine)) == "LAS"
    a, qc = preprocess_image(ras, CFG)
    b, _ = preprocess_image(las, CFG)
    assert a.shape == (16, 16, 16)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert qc["input_orientation"] == "RAS"


def test_zscore_uses_the_brain_mask(tmp_path) -> None:
    import torch
    import torchio as tio

    subject = tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(brain_volume()[None] * 300 + 50), affine=np.diag([2.0, 2, 2, 1])))
    out = build_pipeline(CFG)(subject)
    values = out["image"].data[0][out["brain_mask"].data[0] > 0]
    assert abs(float(values.mean())) < 1e-3 and abs(float(values.std()) - 1) < 1e-2
    assert 0.1 < float(out["brain_mask"].data.float().mean()) < 0.9  # the mask is the brain, not the whole box
    outside = out["image"].data[0][out["brain_mask"].data[0] == 0]
    assert torch.all(outside == 0)  # zero_background (the default): the background is the brain's mean
    kept = build_pipeline(CFG.model_copy(update={"zero_background": False}))(subject)
    inside = kept["image"].data[0][kept["brain_mask"].data[0] > 0]
    assert torch.equal(inside, values)
    # without it the background is one per-scan number, -mean/sd of the brain, that a network can read
    background = kept["image"].data[0][kept["brain_mask"].data[0] == 0]
    assert float(background.median()) < -1  # (the volume has no zero background to begin with: Otsu-style ringing)


def test_crop_removes_empty_margin(tmp_path) -> None:
    vol = np.zeros((40, 40, 40), np.float32)
    vol[5:25, 10:30, 8:28] = brain_volume((20, 20, 20))
    path = save_nifti(tmp_path / "offset.nii.gz", vol, zooms=(1.0, 1.0, 1.0))
    out, _ = preprocess_image(path, PreprocessConfig(size=20, spacing=1.0, crop_padding=0, skull_strip="none", steps=("reorient", "resample", "skull_strip", "crop")))
    assert max(out.shape) <= 21  # the 40-voxel field of view shrank to the ~20-voxel brain


def test_steps_needing_a_mask_are_rejected_without_one() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs 'skull_strip'"):
        PreprocessConfig(steps=("reorient", "crop"))


@pytest.mark.parametrize("bad", ["missing", "corrupt", "2d"])
def test_bad_volumes_give_one_clear_error(tmp_path, bad) -> None:
    path = tmp_path / "bad.nii.gz"
    if bad == "corrupt":
        path.write_bytes(b"\x1f\x8b\x08\x00not really gzip")
    elif bad == "2d":
        nib.save(nib.Nifti1Image(np.ones((10, 10), np.float32), np.eye(4)), str(path))
    with pytest.raises(AlzmriError) as err:
        preprocess_image(path, CFG)
    assert "\n" not in str(err.value) and "bad.nii.gz" in str(err.value)


def test_runner_caches_resumes_and_recomputes_only_what_a_setting_affects(tiny_bids, tmp_path) -> None:
    scans = load_scans(tiny_bids)
    cache = tmp_path / "cache"
    manifest = preprocess_scans(scans, cache, CFG, workers=2, progress=False, report=False)
    assert len(manifest) == len(scans)
    df, cfg = read_cache(cache)
    assert cfg == CFG
    arr = np.load(df["array"][0], mmap_mode="r")
    assert arr.shape == (16, 16, 16) and arr.dtype == np.float16
    qc = pd.read_csv(cache / "qc.tsv", sep="\t")
    assert set(qc["status"]) == {"done"} and (qc["skull_strip_method"] == "none").all()
    assert {"brain_ml", "mask_coverage", "brain_p50", "seconds_n4", "seconds_total"} <= set(qc.columns)
    assert len(list((cache / "qc").glob("*.png"))) == len(scans) and (cache / "qc.html").is_file()

    def mtimes(folder):
        return {p.name: p.stat().st_mtime_ns for p in (cache / folder).iterdir()}

    arrays, stages = mtimes("arrays"), mtimes("stages")
    preprocess_scans(scans, cache, CFG, workers=1, progress=False, report=False)  # resume: nothing recomputed
    assert mtimes("arrays") == arrays and mtimes("stages") == stages
    assert set(pd.read_csv(cache / "qc.tsv", sep="\t")["status"]) == {"cached"}

    # A later-stage setting reuses the slow stage: new arrays, same intermediates.
    bigger = CFG.model_copy(update={"size": 24})
    preprocess_scans(scans, cache, bigger, workers=1, progress=False, report=False)
    assert mtimes("stages") == stages and not set(mtimes("arrays")) & set(arrays)
    assert len(mtimes("arrays")) == len(scans)  # the 16³ arrays were replaced, not kept beside
    assert read_cache(cache)[1] == bigger and np.load(read_cache(cache)[0]["array"][0]).shape == (24, 24, 24)
    assert pd.read_csv(cache / "qc.tsv", sep="\t")["stage_reused"].all()

    # A slow-stage setting recomputes both stages.
    preprocess_scans(scans, cache, bigger.model_copy(update={"n4_grid_mm": 4.0}), workers=1, progress=False, report=False)
    assert not set(mtimes("stages")) & set(stages)


def test_runner_caches_good_scans_and_reports_bad_ones(tiny_bids, tmp_path) -> None:
    scans = load_scans(tiny_bids).head(3).copy()
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"garbage")
    scans.loc[scans.index[1], "path"] = str(broken)
    with pytest.raises(AlzmriError, match="1 of 3 scans failed") as err:
        preprocess_scans(scans, tmp_path / "cache", CFG, workers=1, progress=False, report=False)
    assert "\n" not in str(err.value)
    assert len(pd.read_csv(tmp_path / "cache" / "manifest.tsv", sep="\t")) == 2
    assert (tmp_path / "cache" / "failures.tsv").is_file()
    assert broken.read_bytes() == b"garbage"  # input untouched


def test_registration_to_mni_undoes_a_head_rotation() -> None:
    import torch
    import torchio as tio

    from alzmri.io.templates import load_mni152
    from alzmri.preprocessing.register import RegisterToMNI, template_image

    mni = load_mni152()
    angle = np.deg2rad(12.0)
    rot = np.array([[1, 0, 0, 0], [0, np.cos(angle), -np.sin(angle), 0], [0, np.sin(angle), np.cos(angle), 0], [0, 0, 0, 1]])
    moved_affine = rot @ np.diag([1.1, 1.1, 1.1, 1.0]) @ mni.affine  # rotated and 10 % larger head
    subject = tio.Subject(image=tio.ScalarImage(tensor=torch.from_numpy(np.array(mni.t1)[None]), affine=moved_affine))
    subject = tio.Resample(4.0)(subject)
    reference = tio.ScalarImage.from_sitk(template_image(4.0)).data[0].numpy().ravel()

    def corr(sub):
        data = tio.Resample(tio.ScalarImage.from_sitk(template_image(4.0)))(sub)["image"].data[0].numpy().ravel()
        return float(np.corrcoef(data, reference)[0, 1])

    before = corr(subject)
    after = RegisterToMNI(spacing=4.0, registration_spacing=4.0)(subject)
    assert after["image"].shape[1:] == tio.ScalarImage.from_sitk(template_image(4.0)).shape[1:]
    assert corr(after) > 0.95 > before
    assert after["qc"]["registration_fit"] in ("affine", "affine-fine", "similarity")


def test_registration_never_keeps_an_affine_worse_than_its_similarity_start() -> None:
    """The 12-parameter stage can wander off; the kept transform's metric is never worse than the similarity fit's."""
    import SimpleITK as sitk

    from alzmri.preprocessing import register

    fixed = register.template_image(4.0)
    moving = sitk.Cast(fixed, sitk.sitkFloat32)
    calls = []
    real_fit = register.fit

    def diverging(moving, fixed, initial, fixed_mask=None, shrink=(2, 1), iterations=150, sampling=0.3):
        transform, metric = real_fit(moving, fixed, initial, fixed_mask, shrink, iterations, sampling)
        calls.append(shrink)
        if isinstance(initial, sitk.AffineTransform):  # both affine attempts "wander off": a 40 mm shift
            shifted = sitk.AffineTransform(register.as_affine(transform))
            shifted.SetTranslation([t + 40.0 for t in shifted.GetTranslation()])
            return shifted, register.metric_of(moving, fixed, shifted)
        return transform, metric

    register.fit = diverging
    try:
        transform, metric, kept = register.estimate_affine(moving, fixed)
    finally:
        register.fit = real_fit
    assert kept == "similarity" and calls == [(2,), (2, 1), (1,)]
    assert np.allclose(transform.GetTranslation(), [0, 0, 0], atol=3.0)  # the identity, found by the similarity fit


def test_steps_work_on_nibabel_images_and_subjects(tmp_path) -> None:
    import torchio as tio

    from alzmri.preprocessing.n4 import N4BiasFieldCorrection
    from alzmri.preprocessing.skull_strip import SkullStrip

    img = nib.Nifti1Image(brain_volume() * 100 + 5, np.diag([2.0, 2, 2, 1]))
    corrected = N4BiasFieldCorrection()(img)
    assert isinstance(corrected, nib.Nifti1Image) and corrected.shape == img.shape
    stripped = SkullStrip("none")(corrected)
    assert isinstance(stripped, nib.Nifti1Image)
    assert 0.3 < float((np.asarray(stripped.dataobj) == 0).mean()) < 0.9  # background zeroed, brain kept
    subject = build_pipeline(CFG)(tio.Subject(t1=tio.ScalarImage(tensor=np.asarray(img.dataobj)[None], affine=img.affine)))
    assert subject["t1"].shape == (1, 16, 16, 16) and "brain_mask" in subject
    from_memory, _ = preprocess_image(img, CFG)
    from_file, _ = preprocess_image(save_nifti(tmp_path / "s.nii.gz", np.asarray(img.dataobj)), CFG)
    np.testing.assert_allclose(from_memory, from_file, atol=1e-5)


def test_minmax_normalisation_maps_brain_percentiles_to_unit_range(tmp_path) -> None:
    path = save_nifti(tmp_path / "s.nii.gz", brain_volume() * 300 + 20)
    out, _ = preprocess_image(path, CFG.model_copy(update={"normalization": "minmax", "percentiles": (1.0, 99.0)}))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float((out > 0.5).mean()) > 0.1  # the brain fills the upper half of the range


def test_large_intensities_do_not_overflow(tmp_path) -> None:
    """PET counts / 16-bit ranges: float32 on read, the float16 stage and QC preview rescaled first."""
    from alzmri.preprocessing.pipeline import run_prefix

    vol = brain_volume()
    small = save_nifti(tmp_path / "small.nii.gz", vol * 1e3)  # a 16-bit-like range
    large = save_nifti(tmp_path / "large.nii.gz", vol * 1e7)  # PET-like counts, far past float16's 65,504
    intermediate = run_prefix(large, CFG)
    assert np.isfinite(intermediate.preview.astype(np.float32)).all() and intermediate.preview.max() > 0
    assert np.isfinite(intermediate.image.astype(np.float32)).all()
    a, _ = preprocess_image(small, CFG)
    b, qc = preprocess_image(large, CFG)
    assert np.isfinite(b).all()
    assert float(np.abs(a - b).max()) < 0.02  # N4 and z-scoring make the output (nearly) scale-free
    assert qc["brain_p99"] > 1e6  # the QC statistics keep the input's scale


def test_settings_stored_before_zero_background_read_back_with_it_off(tmp_path) -> None:
    """An older cache or checkpoint made the background -mean/sd: new scans must be preprocessed the same way."""
    import json

    from alzmri.preprocessing.config import stored_config

    old = json.loads(CFG.model_dump_json())
    del old["zero_background"]
    assert stored_config(json.dumps(old), "old cache").zero_background is False
    assert stored_config(old, "old checkpoint").zero_background is False
    assert stored_config(CFG.model_dump_json(), "new cache").zero_background is True  # the default round-trips
    with pytest.raises(AlzmriError, match="unreadable preprocessing settings"):
        stored_config("{not json", "broken cache")


def test_registered_outputs_without_crop_share_the_template_grid() -> None:
    """Registered but not cropped: every scan lands on one grid (what longitudinal comparison needs)."""
    from alzmri.io.templates import load_mni152
    from alzmri.preprocessing.pipeline import keeps_template_grid, output_affine

    mni = load_mni152()
    config = PreprocessConfig(steps=("reorient", "resample", "skull_strip", "register", "resize", "normalize"), skull_strip="none",
                              spacing=4.0, size=16, interpolation="linear")
    assert keeps_template_grid(config) and not keeps_template_grid(config.model_copy(update={"steps": (*config.steps[:4], "crop", *config.steps[4:])}))
    affines, arrays = [], []
    for shift in (0.0, 9.0):
        moved = mni.affine.copy()
        moved[:3, 3] += shift
        array, qc = preprocess_image(nib.Nifti1Image(np.array(mni.t1, dtype=np.float32) * 100, moved), config)
        assert array.shape == (16, 16, 16)
        affines.append(output_affine(qc))
        arrays.append(array)
    np.testing.assert_allclose(affines[0], affines[1], atol=1e-4)
    # the same head shifted lands on the same voxels: the brain box was put back where it was cut from
    assert np.corrcoef(arrays[0].ravel(), arrays[1].ravel())[0, 1] > 0.97
    assert np.corrcoef(arrays[0].ravel(), np.roll(arrays[1], 1, axis=0).ravel())[0, 1] < np.corrcoef(arrays[0].ravel(), arrays[1].ravel())[0, 1]
    assert np.isclose(abs(affines[0][0, 0]), 4.0 * 49 / 16, rtol=0.05)  # the whole template grid (49 voxels at 4 mm), not a brain box


def test_scanner_affine_puts_scan_space_drawings_onto_the_registered_grid() -> None:
    """After 'register' the grid's world is MNI; the recorded scanner affine maps it back onto the scan."""
    from alzmri.io.grids import resample_between
    from alzmri.io.templates import load_mni152
    from alzmri.preprocessing.pipeline import output_affine, scanner_affine

    mni = load_mni152()
    angle = np.deg2rad(10.0)
    rot = np.array([[1, 0, 0, 0], [0, np.cos(angle), -np.sin(angle), 0], [0, np.sin(angle), np.cos(angle), 0], [0, 0, 0, 1]])
    shift = np.eye(4)
    shift[:3, 3] = (6.0, -4.0, 3.0)
    scan_affine = shift @ rot @ np.diag([1.12, 1.12, 1.12, 1.0]) @ mni.affine  # a moved, larger head
    t1 = np.array(mni.t1, dtype=np.float32)
    drawing = (t1 > np.percentile(t1[t1 > 0], 75)).astype(np.float32)  # drawn on the scan: its brightest tissue
    config = PreprocessConfig(steps=("reorient", "resample", "skull_strip", "register", "resize", "normalize"), skull_strip="none",
                              spacing=3.0, size=24, interpolation="linear")
    array, qc = preprocess_image(nib.Nifti1Image(t1 * 100, scan_affine), config)
    # what the drawing is on the output grid when registration is right: the template's own copy
    expected = resample_between(drawing, mni.affine, array.shape, output_affine(qc), order=1) > 0.5

    def dice(affine):
        carried = resample_between(drawing, scan_affine, array.shape, affine, order=1) > 0.5
        return 2 * (carried & expected).sum() / (carried.sum() + expected.sum())

    registration = np.array([float(v) for v in qc["registration_matrix"].split()]).reshape(4, 4)
    moved = shift @ rot @ np.diag([1.12, 1.12, 1.12, 1.0])  # template world -> scan world, as built
    np.testing.assert_allclose(registration[:3, :3], moved[:3, :3], atol=0.02)  # RAS, not ITK's LPS: signs matter
    np.testing.assert_allclose(registration[:3, 3], moved[:3, 3], atol=1.0)
    assert dice(scanner_affine(qc)) > 0.9 > 0.75 > dice(output_affine(qc))  # the MNI affine alone misplaces it
    unregistered = config.model_copy(update={"steps": ("reorient", "resample", "skull_strip", "resize", "normalize")})
    _, plain = preprocess_image(nib.Nifti1Image(t1 * 100, scan_affine), unregistered)
    np.testing.assert_allclose(scanner_affine(plain), output_affine(plain), rtol=1e-5, atol=1e-3)  # no registration: the scan's own world
