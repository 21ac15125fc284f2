"""Acceptance of the real-scan steps on a synthetic head with known ground truth.

The head (``alzmri.data.synth.head``) has skull and scalp around a non-linearly warped
MNI152 brain, a random pose, anisotropic voxels, any axis order, a bias field and noise.
"""

import nibabel as nib
import numpy as np
import pytest
import torch
import torchio as tio
from scipy import ndimage

from alzmri.data.synth.head import synthetic_head
from alzmri.preprocessing.config import PreprocessConfig
from alzmri.preprocessing.n4 import N4BiasFieldCorrection
from alzmri.preprocessing.pipeline import preprocess_image, run_prefix
from alzmri.preprocessing.skull_strip import SkullStrip

VOXEL = (4.0, 4.0, 4.8)  # anisotropic and coarse: 50-ish voxels per axis keeps tests fast
SMALL = PreprocessConfig(spacing=4.0, size=24)


@pytest.fixture(scope="module")
def head():
    return synthetic_head(seed=3, voxel_size=VOXEL, orientation="PIR")


def subject_of(head) -> tio.Subject:
    def image(img, cls):
        return cls(tensor=torch.from_numpy(np.asarray(img.dataobj)[None].astype(np.float32)), affine=img.affine)

    return tio.Subject(image=image(head.image, tio.ScalarImage), truth=image(head.brain_mask, tio.LabelMap), wm=image(head.wm_mask, tio.LabelMap))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_head_phantom_is_what_the_tests_assume(head) -> None:
    assert "".join(nib.aff2axcodes(head.image.affine)) == "PIR"
    assert np.allclose(head.image.header.get_zooms(), VOXEL)
    data = np.asarray(head.image.dataobj, dtype=np.float32)
    mask = np.asarray(head.brain_mask.dataobj) > 0
    outside = data[~mask]
    assert (outside > 0.6 * np.median(data[mask])).sum() > 0.05 * mask.sum()  # a bright scalp is there to strip
    assert 1500 < mask.sum() * np.prod(VOXEL) / 1000 < 2400  # brain volume in ml


@pytest.mark.parametrize("method", ["template", "deepbet"])
def test_skull_stripping_matches_the_true_mask(head, method) -> None:
    subject = tio.Compose([tio.ToCanonical(), tio.Resample(4.0), N4BiasFieldCorrection(), SkullStrip(method)])(subject_of(head))
    found = subject["brain_mask"].data[0].numpy() > 0
    truth = subject["truth"].data[0].numpy() > 0
    assert dice(found, truth) >= 0.90
    assert subject["qc"]["skull_strip_method"] == method
    image = subject["image"].data[0].numpy()
    assert (image[~found] == 0).all() and (image[found] != 0).mean() > 0.95  # skull and scalp removed


def test_n4_lowers_white_matter_intensity_variation(head) -> None:
    subject = tio.Compose([tio.ToCanonical(), tio.Resample(4.0)])(subject_of(head))
    # Core white matter: at 4 mm the mask's edge voxels are part grey matter (partial volume),
    # an intensity spread no bias correction can or should remove.
    wm = ndimage.binary_erosion(subject["wm"].data[0].numpy() > 0)
    assert wm.sum() > 1000

    def cv(s: tio.Subject) -> float:
        values = s["image"].data[0].numpy()[wm]
        return float(values.std() / values.mean())

    before = cv(subject)
    after = cv(N4BiasFieldCorrection()(subject))
    assert after <= 0.7 * before, (before, after)


@pytest.mark.parametrize("code", ["LPS", "PIR", "LAS"])
def test_axis_order_does_not_change_the_output(head, tmp_path, code) -> None:
    ras = nib.as_closest_canonical(head.image)
    reference, _ = preprocess_image(ras, SMALL)
    transform = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(tuple(code)))
    copy = ras.as_reoriented(transform)
    assert "".join(nib.aff2axcodes(copy.affine)) == code
    path = tmp_path / f"{code}.nii.gz"
    nib.save(copy, str(path))
    out, qc = preprocess_image(path, SMALL)
    assert qc["input_orientation"] == code
    assert out.shape == (24, 24, 24)
    # Not bit-identical: NIfTI stores the affine in float32, so grids differ by ~1e-6 mm.
    assert float(np.abs(out - reference).max()) < 2e-3


def test_resampling_preserves_physical_extent(head) -> None:
    image = tio.ScalarImage(tensor=torch.from_numpy(np.asarray(head.image.dataobj)[None].astype(np.float32)), affine=head.image.affine)
    image = tio.ToCanonical()(image)
    out = tio.Resample(1.7)(image)
    extent_in = np.array(image.shape[1:]) * np.array(image.spacing)
    extent_out = np.array(out.shape[1:]) * np.array(out.spacing)
    assert np.allclose(out.spacing, 1.7)
    assert np.all(np.abs(extent_out - extent_in) <= 1.7)  # within one output voxel
    centre_in = image.affine[:3, :3] @ ((np.array(image.shape[1:]) - 1) / 2) + image.affine[:3, 3]
    centre_out = out.affine[:3, :3] @ ((np.array(out.shape[1:]) - 1) / 2) + out.affine[:3, 3]
    assert np.all(np.abs(centre_out - centre_in) <= 1.7)


def test_prefix_qc_records_the_method_timings_and_mask_volume(head) -> None:
    intermediate = run_prefix(head.image, SMALL.model_copy(update={"strip_check": "template"}))
    qc = intermediate.qc
    assert qc["skull_strip_method"] == "deepbet" and qc["input_orientation"] == "PIR"
    assert qc["skull_strip_check_method"] == "template" and qc["skull_strip_check_dice"] >= 0.9
    assert qc["skull_strip_registration_ncc"] > 0.45 and qc["mask_surface_contact"] < 0.05
    assert {"seconds_reorient", "seconds_resample", "seconds_n4", "seconds_skull_strip"} <= set(qc)
    assert 1300 < qc["brain_ml"] < 2600 and qc["warnings"] == ""
    assert intermediate.preview_mask is not None and intermediate.preview.shape == intermediate.preview_mask.shape
