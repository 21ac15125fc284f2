"""Explanations that stay in the brain: the brain mask, evidence outside it, empty maps, the occlusion fill, stored masks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from alzmri.explain.brain import EMPTY_MAP, describe_evidence, evidence_location, scan_brain_mask
from alzmri.preprocessing.brain_mask import background_value, estimate_brain_mask

from conftest import brain_volume, save_nifti


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def resized(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid brain through the real pipeline (crop, cubic downsizing to 24³, z-score), background left at -mean/sd
    (``zero_background=False``, as caches made before it had): array and its mask."""
    from alzmri.preprocessing.config import PreprocessConfig
    from alzmri.preprocessing.pipeline import run_prefix, run_suffix

    path = save_nifti(tmp_path_factory.mktemp("resized") / "scan.nii.gz", brain_volume((40, 44, 38), seed=3))
    config = PreprocessConfig(size=24, spacing=2.0, skull_strip="none", zero_background=False)
    array, mask, _ = run_suffix(run_prefix(path, config), config)
    return array, mask


def test_a_brain_on_the_default_zero_background_is_every_voxel_off_the_plateau(tmp_path: Path) -> None:
    """The default z-score sets the background to 0, the brain's mean: no tolerance around it finds the brain."""
    from alzmri.preprocessing.config import PreprocessConfig
    from alzmri.preprocessing.pipeline import run_prefix, run_suffix

    path = save_nifti(tmp_path / "scan.nii.gz", brain_volume((40, 44, 38), seed=3))
    config = PreprocessConfig(size=24, spacing=2.0, skull_strip="none")
    array, stored, _ = run_suffix(run_prefix(path, config), config)
    assert background_value(array) == 0.0 and np.all(array[~stored] == 0)
    assert (array[stored] < 0).mean() > 0.25 and (array[stored] > 0).mean() > 0.25  # the background is mid-range
    estimated = estimate_brain_mask(array)
    assert dice(estimated, stored) > 0.97
    # the tolerance rule on its own would have dropped the brain voxels near its mean
    distance = np.abs(array)
    assert dice(distance > 0.1 * np.percentile(distance[distance > 0], 99), stored) < dice(estimated, stored)


def test_resize_undershoot_does_not_turn_the_background_into_brain(resized: tuple[np.ndarray, np.ndarray]) -> None:
    array, stored = resized
    background = background_value(array)
    assert array.min() < background - 1.0  # the cubic resize undershoots the constant background next to the brain
    assert (array > array.min() + 1e-6).mean() > 0.95  # so the old rule "above the minimum" took the whole field of view
    estimated = estimate_brain_mask(array)
    assert dice(estimated, stored) > 0.9 and estimated.mean() < 0.5
    corners = np.zeros(array.shape, dtype=bool)
    corners[:4, :4, :4] = corners[-4:, -4:, -4:] = True
    assert not estimated[corners].any()
    # A map spread evenly over the grid keeps nothing outside the (slightly grown) stored mask.
    from scipy import ndimage

    from alzmri.explain.config import ExplainConfig
    from alzmri.explain.run import analyse_map

    analysis = analyse_map(np.ones(array.shape, dtype=np.float32), estimated, ExplainConfig(run=Path("unused")))
    grown = ndimage.binary_dilation(stored, iterations=1)
    assert analysis["heat"][~grown].sum() < 0.05 * analysis["heat"].sum()
    assert analysis["evidence"]["outside_brain_share"] == pytest.approx(1 - estimated.mean(), abs=1e-6)


def test_the_stored_mask_wins_and_a_wrong_one_is_ignored(resized: tuple[np.ndarray, np.ndarray]) -> None:
    array, stored = resized
    mask, source = scan_brain_mask(array, stored)
    assert source == "preprocessing" and np.array_equal(mask, stored)
    for wrong in (None, np.zeros_like(stored), np.ones((8, 8, 8), dtype=bool)):  # none, empty, another grid
        assert scan_brain_mask(array, wrong)[1] == "estimated"


def test_background_value_is_the_plateau_or_the_faces() -> None:
    volume = np.full((20, 20, 20), -3.5, dtype=np.float32)
    volume[5:15, 5:15, 5:15] = np.random.default_rng(0).normal(0, 1, (10, 10, 10))
    volume[9, 9, 4] = -4.1  # one undershooting voxel: the minimum is not the background
    assert background_value(volume) == pytest.approx(-3.5)
    noisy = np.random.default_rng(1).normal(0.2, 0.01, (20, 20, 20)).astype(np.float32)  # no constant background
    noisy[6:14, 6:14, 6:14] += 1
    assert background_value(noisy) == pytest.approx(0.2, abs=0.01)
    brain = estimate_brain_mask(noisy)
    assert brain[6:14, 6:14, 6:14].all() and brain.sum() == 8**3


def test_evidence_outside_the_brain_and_empty_maps_in_words() -> None:
    brain = np.zeros((16, 16, 16), dtype=bool)
    brain[4:12, 4:12, 4:12] = True
    corner = np.zeros(brain.shape, dtype=np.float32)
    corner[:3, :3, :3] = 1.0
    corner[6, 6, 6] = 2.0
    outside = evidence_location(corner - 0.5, brain)  # only the positive part counts
    assert outside["outside_brain_share"] == pytest.approx(13.5 / 15.0) and outside["mostly_outside_brain"] and not outside["empty"]
    assert "MOSTLY OUTSIDE THE BRAIN" in describe_evidence(outside, 1.0)
    inside = evidence_location(brain.astype(np.float32), brain)
    assert inside["outside_brain_share"] == 0 and not inside["mostly_outside_brain"]
    assert describe_evidence(inside, 0.42) == "top region holds 42% of the map; 0% of the evidence outside the brain"
    # A diffuse map on a grid that is mostly background puts most of its mass outside, but no denser
    # than inside: not evidence located outside the brain.
    diffuse = evidence_location(np.ones(brain.shape, dtype=np.float32) + brain, brain)
    assert diffuse["outside_brain_share"] > 0.75 and not diffuse["mostly_outside_brain"]
    empty = evidence_location(-np.ones(brain.shape, dtype=np.float32), brain)
    assert empty["empty"] and np.isnan(empty["outside_brain_share"]) and not empty["mostly_outside_brain"]
    assert describe_evidence(empty, None) == EMPTY_MAP and "nan" not in describe_evidence(empty, float("nan"))


class CornerSum(nn.Module):
    """Class 1's logit is the mean of the 4³ corner block (class 0's its negative): a model that looks at the background."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((1,), 0.2))  # keeps the softmax off saturation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = x[:, :, :4, :4, :4].mean((1, 2, 3, 4)) * self.scale
        return torch.stack([-corner, corner], dim=1)


def test_occlusion_fills_with_the_background_not_with_the_brain_mean() -> None:
    from alzmri.explain.attribution import attribute

    volume = np.full((24, 24, 24), -3.5, dtype=np.float32)  # a z-scored scan: brain mean 0, background -3.5
    volume[6:18, 6:18, 6:18] = np.random.default_rng(0).normal(0, 1, (12, 12, 12))
    corner = np.zeros(volume.shape, dtype=bool)
    corner[:6, :6, :6] = True
    model = CornerSum()
    default = attribute(model, volume, "occlusion", target=0, mask_size=6)
    # Occluding constant background with the background changes nothing: no evidence appears there.
    assert np.abs(default[corner]).max() < 1e-6
    # Filling with 0 (MONAI's Gaussian mode on a z-scored scan) paints brain-mean intensity into the
    # background, which moves this model's prediction: spurious evidence in the corner.
    zero_fill = attribute(model, volume, "occlusion", target=0, mask_size=6, background=0.0)
    assert zero_fill[corner].max() > 1e-2


# ------------------------------------------------------------------------------------------------
# The cache stores each scan's mask; caches without one still explain.


def test_the_cache_stores_masks_and_source_digests(prepared: dict[str, Path]) -> None:
    from alzmri.preprocessing.cache import load_mask, read_cache
    from alzmri.utils.hashing import content_digest

    manifest = pd.read_csv(prepared["cache"] / "manifest.tsv", sep="\t", dtype=str)
    assert manifest["mask"].str.fullmatch(r"masks/sub-\d+_ses-\d+\.[0-9a-f]+\.npy").all()
    cache, _ = read_cache(prepared["cache"])
    for row in cache.itertuples():
        assert row.source_hash == content_digest(row.source)
        mask, array = np.load(row.mask), np.load(row.array)
        assert mask.dtype == np.uint8 and mask.shape == array.shape and set(np.unique(mask)) == {0, 1}
        record = json.loads((prepared["cache"] / "qc" / f"{row.participant_id}_{row.session_id}.json").read_text())
        assert record["source_hash"] == row.source_hash and prepared["cache"] / record["mask"] == Path(row.mask)
        assert load_mask(row.mask).any()


def test_an_old_cache_is_read_with_empty_masks_and_rerunning_preprocess_adds_them(prepared: dict[str, Path], tmp_path: Path) -> None:
    from alzmri.io.bids import load_scans
    from alzmri.preprocessing.cache import read_cache
    from alzmri.preprocessing.runner import preprocess_scans

    old = old_cache(prepared["cache"], tmp_path / "old")
    cache, config = read_cache(old)
    assert (cache["mask"] == "").all() and (cache["source_hash"] == "").all()
    preprocess_scans(load_scans(prepared["bids"]), old, config, workers=1, progress=False, report=False)
    assert set(pd.read_csv(old / "qc.tsv", sep="\t")["status"]) == {"done"}  # records without a mask are redone (fast steps)
    again, _ = read_cache(old)
    assert all(Path(m).is_file() for m in again["mask"]) and (again["source_hash"].str.len() == 16).all()


def old_cache(cache: Path, copy: Path) -> Path:
    """A copy of ``cache`` as alzmri wrote it before masks and source digests were recorded."""
    shutil.copytree(cache, copy)
    shutil.rmtree(copy / "masks")
    table = pd.read_csv(copy / "manifest.tsv", sep="\t", dtype=str, keep_default_na=False)
    table.drop(columns=["mask", "source_hash"]).to_csv(copy / "manifest.tsv", sep="\t", index=False)
    for record in (copy / "qc").glob("*.json"):
        fields = json.loads(record.read_text())
        record.write_text(json.dumps({k: v for k, v in fields.items() if k not in ("mask", "source_hash")}))
    return copy
