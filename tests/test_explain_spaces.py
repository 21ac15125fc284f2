"""Maps move between the model grid and the scan with the recorded affine; scoring against planted truth."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from alzmri.io.grids import resample_between
from alzmri.explain.truth import score_map


def _blob(shape: tuple[int, int, int], at: tuple[int, int, int], sigma: float = 1.5) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"))
    return np.exp(-((grid - np.array(at)[:, None, None, None]) ** 2).sum(0) / (2 * sigma**2)).astype(np.float32)


def test_round_trip_to_an_oblique_flipped_scan_keeps_the_peak_within_one_voxel() -> None:
    grid_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    grid_affine[:3, 3] = [-20.0, -25.0, -18.0]
    theta = np.deg2rad(12)
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    scan_affine = np.eye(4)
    scan_affine[:3, :3] = rotation @ np.diag([-1.5, 1.2, 1.3])  # flipped x, anisotropic, rotated
    scan_affine[:3, 3] = [30.0, -40.0, -25.0]
    scan_shape = (44, 52, 40)
    at = (10, 12, 9)
    heat = _blob((24, 24, 24), at)
    on_scan = resample_between(heat, grid_affine, scan_shape, scan_affine, order=1)
    peak_scan = np.array(np.unravel_index(int(np.argmax(on_scan)), scan_shape))
    world = scan_affine @ np.append(peak_scan, 1.0)
    back = (np.linalg.inv(grid_affine) @ world)[:3]
    assert np.abs(back - np.array(at)).max() <= 1.0
    again = resample_between(on_scan, scan_affine, (24, 24, 24), grid_affine, order=1)
    assert np.unravel_index(int(np.argmax(again)), again.shape) == pytest.approx(at, abs=1)


def test_the_recorded_preprocessing_affine_puts_the_brain_back_on_the_scan(tiny_bids) -> None:
    from alzmri.io.bids import load_scans
    from alzmri.preprocessing.config import PreprocessConfig
    from alzmri.preprocessing.pipeline import output_affine, preprocess_image

    scans = load_scans(tiny_bids)
    path = next(p for p in scans["path"] if nib.aff2axcodes(nib.load(p).affine)[0] == "L")  # stored LAS by the fixture
    # background left at -mean/sd: on the default zero background (the brain's mean) brain and background do not
    # correlate linearly with the raw scan's bright brain on a dark background
    array, qc = preprocess_image(path, PreprocessConfig(size=16, spacing=2.0, skull_strip="none", zero_background=False))
    affine = output_affine(qc)
    assert affine is not None and affine.shape == (4, 4)
    scan = nib.load(path)
    assert nib.aff2axcodes(scan.affine)[0] == "L"
    data = np.asarray(scan.dataobj, dtype=np.float32)
    covered = resample_between(np.ones_like(array), affine, scan.shape, scan.affine, order=0) > 0.5

    def agreement(grid_affine: np.ndarray) -> float:
        back = resample_between(array, grid_affine, scan.shape, scan.affine, order=1)
        return float(np.corrcoef(back[covered], data[covered])[0, 1])

    shifted = affine @ np.array([[1, 0, 0, 1.0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # one model voxel off
    assert agreement(affine) > 0.93 and agreement(affine) > agreement(shifted) + 0.1


def test_scores_against_planted_truth() -> None:
    shape = (20, 20, 20)
    brain = np.ones(shape, dtype=bool)
    truth = np.zeros(shape, dtype=np.float32)
    truth[5:10, 5:10, 5:10] = 1.0  # 125 of 8000 voxels planted
    inside = np.zeros(shape, dtype=np.float32)
    inside[6:9, 6:9, 6:9] = 1.0
    scores = score_map(inside, truth, brain)
    assert scores["energy_inside"] == 1.0 and scores["pointing_game"]
    assert scores["enrichment"] == pytest.approx(8000 / 125)
    uniform = score_map(np.ones(shape, dtype=np.float32), truth, brain)
    assert uniform["enrichment"] == pytest.approx(1.0) and uniform["volume_share"] == pytest.approx(125 / 8000)
    weak = truth * 0.05
    assert score_map(inside, weak, brain, level=0.1)["planted_voxels"] == 0
