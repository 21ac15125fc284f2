"""QC checks that catch a failed brain mask (qc_checks.py), and deepbet on heads and non-heads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from alzmri.preprocessing import strip_deepbet
from alzmri.preprocessing.qc_checks import (
    BRAIN_ML_RANGE,
    MAX_SURFACE_CONTACT,
    MIN_METHOD_DICE,
    MIN_REGISTRATION_NCC,
    head_mask,
    longitudinal_warnings,
    mask_checks,
    record_checks,
)
from alzmri.utils.errors import AlzmriError
from conftest import save_nifti
from test_cli_errors import alzmri

MM = 4.0
SPACING = (MM, MM, MM)
SURFACE = "of the mask's surface lies within 4 mm of the head's surface"
VOLUME = "outside the adult intracranial range"


@pytest.fixture(scope="module")
def head() -> tuple[np.ndarray, np.ndarray]:
    """A synthetic skull-on T1w head at 4 mm in RAS order (axis 2 = superior) and its true brain mask."""
    from alzmri.data.synth.head import synthetic_head

    h = synthetic_head(seed=0, voxel_size=MM, orientation="RAS")
    return h.image.get_fdata().astype(np.float32), h.brain_mask.get_fdata() > 0


def check(mask: np.ndarray, preview: np.ndarray | None, spacing: tuple[float, ...] = SPACING, **qc) -> tuple[list[str], dict]:
    """``mask_checks`` then ``record_checks``, as the pipeline calls them (the preview on the same grid as the mask)."""
    record = {"skull_strip_method": "deepbet", **qc}
    warnings = mask_checks(mask, spacing, record, preview=preview, preview_mask=None if preview is None else mask,
                           preview_spacing=None if preview is None else spacing)
    warnings += record_checks(record)
    return warnings, record


def box_mask(ml: float) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A 10³-voxel box inside a 14³ grid (off the border) with voxels sized so it holds ``ml`` millilitres."""
    mask = np.zeros((14, 14, 14), dtype=bool)
    mask[2:12, 2:12, 2:12] = True
    return mask, (10.0, 10.0, ml / 100.0)  # 1000 voxels of 10 x 10 x ml/100 mm³ = ml ml


# --- the planted failure modes on a synthetic head -------------------------------------------------


def test_true_mask_of_a_head_raises_no_alarm(head) -> None:
    image, true = head
    warnings, qc = check(true, image)
    assert warnings == []
    assert BRAIN_ML_RANGE[0] <= qc["brain_ml"] <= BRAIN_ML_RANGE[1]
    assert qc["mask_surface_contact"] <= MAX_SURFACE_CONTACT


def test_mask_grown_into_the_scalp_is_flagged(head) -> None:
    image, true = head
    inside_head = head_mask(image)
    grown = (ndi.distance_transform_edt(~true, sampling=SPACING) <= 12.0) & inside_head  # the old failure: scalp inside
    assert grown.sum() > 1.3 * true.sum() and not (grown & ~inside_head).any()
    warnings, qc = check(grown, image)
    assert qc["mask_surface_contact"] > MAX_SURFACE_CONTACT
    assert any(SURFACE in w for w in warnings), warnings
    assert any(w.startswith("mask volume") and VOLUME in w for w in warnings), warnings
    assert len(warnings) == 2, warnings  # not cut off at the border: no border warning


def test_mask_sitting_too_low_is_flagged_by_the_surface_check(head) -> None:
    image, true = head
    shift = 6  # voxels of 4 mm: 24 mm towards inferior (axis 2 is S in RAS), into the face and neck
    low = np.zeros_like(true)
    low[:, :, :-shift] = true[:, :, shift:]
    warnings, qc = check(low, image)
    assert BRAIN_ML_RANGE[0] <= qc["brain_ml"] <= BRAIN_ML_RANGE[1]  # the volume alone would not catch it
    assert len(warnings) == 1 and SURFACE in warnings[0], warnings
    # For already skull-stripped input (--skull-strip none) the surface check does not run.
    warnings, qc = check(low, image, skull_strip_method="none")
    assert warnings == [] and "mask_surface_contact" not in qc


# --- volume range, border, registration similarity, method agreement --------------------------------


@pytest.mark.parametrize(("ml", "flagged"), [(2114.0, True), (700.0, True), (1500.0, False), (2001.0, True), (899.0, True), (900.0, False), (2000.0, False)])
def test_mask_volume_outside_the_intracranial_range_is_flagged(ml: float, flagged: bool) -> None:
    mask, spacing = box_mask(ml)
    warnings, qc = check(mask, None, spacing)
    assert qc["brain_ml"] == pytest.approx(ml, abs=0.05)
    expected = [f"mask volume {ml:.0f} ml outside the adult intracranial range 900-2000 ml"] if flagged else []
    assert warnings == expected


def test_mask_touching_the_border_is_flagged() -> None:
    mask, spacing = box_mask(1500.0)
    assert check(mask, None, spacing)[0] == []
    moved = np.roll(mask, -2, axis=1)  # now occupies 0:10 along axis 1
    assert check(moved, None, spacing)[0] == ["brain mask touches the image border (cut-off field of view?)"]


def test_registration_similarity_and_method_disagreement_are_flagged() -> None:
    mask, spacing = box_mask(1500.0)
    low_ncc = check(mask, None, spacing, skull_strip_method="template", skull_strip_registration_ncc=round(MIN_REGISTRATION_NCC - 0.05, 4))[0]
    assert len(low_ncc) == 1 and low_ncc[0].startswith(f"template registration similarity {MIN_REGISTRATION_NCC - 0.05:.2f} below"), low_ncc
    assert check(mask, None, spacing, skull_strip_method="template", skull_strip_registration_ncc=round(MIN_REGISTRATION_NCC + 0.05, 4))[0] == []

    low_dice = check(mask, None, spacing, skull_strip_check_method="template", skull_strip_check_dice=round(MIN_METHOD_DICE - 0.05, 4))[0]
    assert len(low_dice) == 1 and low_dice[0].startswith(f"skull-strip methods disagree: Dice {MIN_METHOD_DICE - 0.05:.2f} with template"), low_dice
    assert check(mask, None, spacing, skull_strip_check_method="template", skull_strip_check_dice=round(MIN_METHOD_DICE + 0.05, 4))[0] == []

    both = check(mask, None, spacing, skull_strip_registration_ncc=0.1, skull_strip_check_method="template", skull_strip_check_dice=0.5)[0]
    assert len(both) == 2

    mni = check(mask, None, spacing, registration_ncc=0.2)[0]  # the 'register' step's similarity
    assert len(mni) == 1 and mni[0].startswith("MNI registration similarity 0.20 below"), mni
    assert check(mask, None, spacing, registration_ncc=0.5)[0] == []


# --- longitudinal consistency -------------------------------------------------------------------------


def sessions(*rows: tuple) -> pd.DataFrame:
    """(participant, session, brain_ml[, method[, status]]) rows as the table ``_finish`` builds."""
    out = []
    for pid, ses, ml, *rest in rows:
        method, status = (*rest, "deepbet", "done")[:2] if not rest else (*rest, "done")[:2]
        out.append({"participant_id": pid, "session_id": ses, "status": status, "brain_ml": ml, "skull_strip_method": method})
    return pd.DataFrame(out)


def test_longitudinal_volume_change_flags_the_odd_session_out() -> None:
    assert longitudinal_warnings(sessions(("sub-1", "ses-1", 1500.0), ("sub-1", "ses-2", 1505.0))) == {}

    both = longitudinal_warnings(sessions(("sub-1", "ses-1", 1500.0), ("sub-1", "ses-2", 1650.0)))
    assert sorted(both) == [0, 1]
    assert "intracranial volume 1650 ml is +4.8% from this subject's median (ses-1 1500 ml)" in both[1]

    table = sessions(("sub-0", "ses-1", 1400.0), ("sub-1", "ses-1", 1500.0), ("sub-1", "ses-2", 1502.0), ("sub-1", "ses-3", 1700.0),
                     ("sub-2", "ses-1", 900.0))
    odd = longitudinal_warnings(table)
    assert list(odd) == [3] and "1700 ml" in odd[3] and "ses-1 1500 ml, ses-2 1502 ml" in odd[3]
    assert list(longitudinal_warnings(table.set_index(pd.Index([10, 20, 30, 40, 50])))) == [3]  # positions, not labels


def test_longitudinal_check_ignores_none_method_single_sessions_and_failures() -> None:
    none = sessions(("sub-1", "ses-1", 1500.0, "none"), ("sub-1", "ses-2", 1800.0, "none"))
    assert longitudinal_warnings(none) == {}
    single = sessions(("sub-1", "ses-1", 1500.0), ("sub-2", "ses-1", 3000.0), ("sub-3", "ses-1", 400.0))
    assert longitudinal_warnings(single) == {}
    failed = sessions(("sub-1", "ses-1", 1500.0), ("sub-1", "ses-2", 1800.0, "deepbet", "failed"), ("sub-1", "ses-3", None, "deepbet", "failed"))
    assert longitudinal_warnings(failed) == {}
    # A failed session must not count, but the remaining two still are compared.
    mixed = sessions(("sub-1", "ses-1", 1500.0), ("sub-1", "ses-2", 1800.0), ("sub-1", "ses-3", 1500.0, "deepbet", "failed"))
    assert sorted(longitudinal_warnings(mixed)) == [0, 1]


# --- deepbet --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def head_probability(head) -> np.ndarray:
    return strip_deepbet.brain_probability(head[0])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_deepbet_finds_the_brain_of_a_synthetic_head_and_dilates(head, head_probability, monkeypatch: pytest.MonkeyPatch) -> None:
    image, true = head
    # The networks ran once (fixture); the mask post-processing reruns on their probabilities.
    monkeypatch.setattr(strip_deepbet, "brain_probability", lambda volume: head_probability)
    mask = strip_deepbet.deepbet_brain_mask(image)
    assert mask.shape == true.shape and mask.dtype == bool
    assert dice(mask, true) >= 0.9
    grown = strip_deepbet.deepbet_brain_mask(image, dilate=1)
    shrunk = strip_deepbet.deepbet_brain_mask(image, dilate=-1)
    assert grown.sum() > mask.sum() and (grown | mask).sum() == grown.sum()
    assert shrunk.sum() < mask.sum() and (shrunk & mask).sum() == shrunk.sum()


@pytest.mark.parametrize("fill", [0.0, 300.0])
def test_deepbet_on_a_volume_without_a_head_is_a_one_line_error(fill: float) -> None:
    with pytest.raises(AlzmriError, match="no brain") as info:
        strip_deepbet.deepbet_brain_mask(np.full((40, 44, 36), fill, dtype=np.float32))
    assert "\n" not in str(info.value)


def test_cli_fails_a_scan_without_a_head_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    save_nifti(data / "zero.nii.gz", np.zeros((24, 24, 24), np.float32))
    save_nifti(data / "flat.nii.gz", np.full((24, 24, 24), 50.0, np.float32))
    manifest = data / "scans.tsv"
    pd.DataFrame([{"participant_id": "sub-zero", "session_id": "ses-01", "path": "zero.nii.gz"},
                  {"participant_id": "sub-flat", "session_id": "ses-01", "path": "flat.nii.gz"}]).to_csv(manifest, sep="\t", index=False)
    result = alzmri("preprocess", manifest, tmp_path / "cache", "--size", "16", "--spacing", "2", "--no-progress", "-j", "1")  # default: deepbet
    assert result.returncode == 2, result.stdout + result.stderr
    err = result.stderr.strip()
    assert err.startswith("error: 2 of 2 scans failed") and "\n" not in err, err
    assert "Traceback" not in result.stdout + result.stderr
    assert "skull stripping: deepbet" in result.stdout
    failures = pd.read_csv(tmp_path / "cache" / "failures.tsv", sep="\t").set_index("participant_id")["error"]
    for pid in ("sub-zero", "sub-flat"):
        assert "deepbet found no brain" in failures[pid] and "\n" not in failures[pid]
        assert f"failed {pid} ses-01: deepbet found no brain" in result.stdout


def test_foreground_mask_of_a_brain_filling_the_field_of_view_reaches_the_border() -> None:
    from alzmri.preprocessing.strip_foreground import foreground_mask

    shape = (28, 28, 28)
    r = np.sqrt((np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")) ** 2).sum(axis=0))
    truth = r < 1.25  # fills the cube but its corners
    volume = np.where(truth, 1.0, 0.0) + np.random.default_rng(7).normal(0, 0.03, shape)
    mask = foreground_mask(np.clip(volume, 0, None).astype(np.float32))
    assert dice(mask, truth) >= 0.98
    assert check(mask, None, (4.0, 4.0, 4.0))[0] == ["brain mask touches the image border (cut-off field of view?)"]
