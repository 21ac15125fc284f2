"""Model-independent analysis of attribution maps: thresholds, components, depth, regions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alzmri.explain.depth_profile import AXIS_NAMES, depth_profile, plot_depth_profile
from alzmri.explain.regions import (
    aggregate_by_class,
    group_attribution,
    labels_for_grid,
    plot_top_regions,
    region_attribution,
    region_groups,
)
from alzmri.explain.thresholds import components, threshold_map
from alzmri.utils.errors import AlzmriError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- thresholds -------------------------------------------------------------------------


def test_percentile_keeps_exactly_the_top_decile_of_distinct_values() -> None:
    values = np.random.default_rng(0).permutation(1000).astype(float).reshape(10, 10, 10)
    keep, t = threshold_map(values, "percentile", percentile=90)
    assert keep.sum() == 100
    assert values[keep].min() == 900 and 899 < t <= 900


def test_otsu_separates_a_two_level_map() -> None:
    values = np.zeros((16, 16, 16))
    values[4:8, 4:8, 4:8] = 1.0
    keep, t = threshold_map(values, "otsu")
    assert 0.0 <= t < 1.0
    assert np.array_equal(keep, values == 1.0)


def test_mean_std_matches_hand_computation_and_respects_mask() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(16, 16, 16))
    mask = np.zeros(values.shape, dtype=bool)
    mask[:8] = True
    keep, t = threshold_map(values, "mean_std", k=1.5, mask=mask)
    inside = values[mask]
    expected = inside.mean() + 1.5 * inside.std()
    assert t == pytest.approx(expected)
    assert np.array_equal(keep, (values >= expected) & mask)
    assert not keep[8:].any()


def test_threshold_errors() -> None:
    values = np.ones((4, 4, 4))
    with pytest.raises(AlzmriError, match="unknown threshold method"):
        threshold_map(values, "median")  # type: ignore[arg-type]
    with pytest.raises(AlzmriError, match="percentile"):
        threshold_map(values, percentile=120)
    with pytest.raises(AlzmriError, match="shape"):
        threshold_map(values, mask=np.ones((4, 4, 5), dtype=bool))
    with pytest.raises(AlzmriError, match="no voxels"):
        threshold_map(values, mask=np.zeros((4, 4, 4), dtype=bool))
    bad = values.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(AlzmriError, match="NaN"):
        threshold_map(bad)


def test_components_of_two_blobs() -> None:
    values = np.zeros((20, 20, 20))
    values[2:5, 2:5, 2:5] = 1.0  # 27 voxels, total 27
    values[10:14, 10:14, 10:14] = 0.5  # 64 voxels, total 32
    values[12, 12, 12] = 3.0  # peak of the big blob: total 34.5
    values[18, 18, 18] = -5.0  # negative, outside any component
    keep = values > 0
    found = components(keep, values, voxel_size_mm=2.0, top=None)
    assert [c["n_voxels"] for c in found] == [64, 27]
    total = 27 + 34.5
    assert found[0]["attribution_share"] == pytest.approx(34.5 / total)
    assert found[1]["attribution_share"] == pytest.approx(27 / total)
    assert found[0]["volume_mm3"] == pytest.approx(64 * 8.0)
    assert found[0]["peak_value"] == 3.0 and found[0]["peak_voxel"] == (12, 12, 12)
    assert found[0]["centroid_voxel"] == pytest.approx((11.5, 11.5, 11.5))
    assert found[1]["centroid_voxel"] == pytest.approx((3.0, 3.0, 3.0))
    assert [c["rank"] for c in found] == [1, 2]
    assert len(components(keep, values, top=1)) == 1
    assert components(np.zeros_like(keep), values) == []


def test_components_use_26_connectivity() -> None:
    keep = np.zeros((6, 6, 6), dtype=bool)
    keep[1, 1, 1] = keep[2, 2, 2] = True  # corner neighbours
    assert len(components(keep, keep.astype(float), top=None)) == 1


# --- depth profile ----------------------------------------------------------------------


def test_depth_profile_of_one_bright_voxel(tmp_path) -> None:
    values = np.zeros((16, 20, 24))
    values[3, 7, 11] = 2.0
    values[5, 5, 5] = -1.0  # negative evidence is ignored
    profiles = depth_profile(values)
    assert list(profiles) == list(AXIS_NAMES)
    for (name, profile), index, size in zip(profiles.items(), (3, 7, 11), values.shape):
        assert profile.shape == (size,)
        assert profile[index] == pytest.approx(1.0)
        assert profile.sum() == pytest.approx(1.0)
    assert np.isnan(depth_profile(np.zeros((4, 4, 4)))[AXIS_NAMES[0]]).all()
    out = plot_depth_profile(profiles, tmp_path / "depth.png", title="one voxel")
    assert out.read_bytes()[:8] == PNG_MAGIC


# --- regions ----------------------------------------------------------------------------


def _toy_labels() -> tuple[np.ndarray, dict[int, str]]:
    labels = np.zeros((16, 16, 16), dtype=np.int32)
    labels[2:8, 2:14, 2:14] = 17
    labels[8:14, 2:14, 2:14] = 53
    labels[2:14, 2:6, 2:6] = 1006  # overwrites part of both
    return labels, {17: "Left-Hippocampus", 53: "Right-Hippocampus", 1006: "ctx-lh-entorhinal"}


def test_map_inside_one_label_gives_share_one() -> None:
    labels, names = _toy_labels()
    values = np.where(labels == 1006, 1.0, 0.0)
    values[0, 0, 0] = 100.0  # outside all labels: does not count
    values[labels == 17] = -3.0  # negative: clipped away
    table = region_attribution(values, labels, names)
    assert list(table["label"]) == [17, 53, 1006]
    assert table["volume_share"].sum() == pytest.approx(1.0)
    row = table.set_index("label").loc[1006]
    assert row["name"] == "ctx-lh-entorhinal"
    assert row["n_voxels"] == int((labels == 1006).sum())
    assert row["volume_share"] == pytest.approx((labels == 1006).sum() / (labels != 0).sum())
    assert row["attribution_share"] == pytest.approx(1.0)
    assert row["enrichment"] == pytest.approx(1.0 / row["volume_share"])
    others = table[table["label"] != 1006]
    assert (others["attribution_share"] == 0).all() and (others["enrichment"] == 0).all()


def test_uniform_map_gives_enrichment_one_and_groups_sum() -> None:
    labels, names = _toy_labels()
    table = region_attribution(np.full(labels.shape, 0.7), labels, names)
    assert np.allclose(table["enrichment"], 1.0)
    groups = group_attribution(table, {"hippocampus": (17, 53), "absent": (999,)})
    hip = groups.set_index("name").loc["hippocampus"]
    assert hip["volume_share"] == pytest.approx(table.set_index("label").loc[[17, 53], "volume_share"].sum())
    assert hip["enrichment"] == pytest.approx(1.0) and hip["n_labels_present"] == 2
    assert np.isnan(groups.set_index("name").loc["absent", "enrichment"])


def test_signed_map_and_shape_mismatch() -> None:
    labels, names = _toy_labels()
    values = np.where(labels == 17, 2.0, 0.0) - np.where(labels == 53, 1.0, 0.0)
    signed = region_attribution(values, labels, names, positive_only=False).set_index("label")
    assert signed["attribution_share"].sum() == pytest.approx(1.0)
    assert signed.loc[53, "attribution_share"] < 0
    with pytest.raises(AlzmriError, match=r"\(16, 16, 16\).*\(16, 16, 15\)"):
        region_attribution(np.zeros((16, 16, 16)), labels[:, :, :15], names)
    with pytest.raises(AlzmriError, match="no labelled voxel"):
        region_attribution(np.zeros((4, 4, 4)), np.zeros((4, 4, 4), dtype=int), names)


def test_region_groups_exist_in_the_shipped_atlas() -> None:
    from alzmri.data.synth.regions import DEFORM_REGIONS
    from alzmri.io.templates import load_desikan_killiany_on_mni

    atlas, names = load_desikan_killiany_on_mni()
    present = set(np.unique(atlas).tolist())
    groups = region_groups()
    expected_names = {
        17: "Left-Hippocampus", 53: "Right-Hippocampus", 1006: "ctx-lh-entorhinal", 2006: "ctx-rh-entorhinal",
        4: "Left-Lateral-Ventricle", 43: "Right-Lateral-Ventricle", 18: "Left-Amygdala", 54: "Right-Amygdala",
    }
    for label, name in expected_names.items():
        assert names[label] == name and label in present
    assert groups["hippocampus"] == (17, 53) and groups["entorhinal"] == (1006, 2006)
    assert groups["lateral ventricles"] == (4, 43) and groups["amygdala"] == (18, 54)
    for labels in groups.values():
        assert all(label in names and label in present for label in labels)
    # Same structures the synthetic cohorts deform.
    planted = {label for region in DEFORM_REGIONS for label in region.labels}
    assert planted == {label for labels in groups.values() for label in labels}


def test_labels_for_grid_on_a_coarse_mni_cube() -> None:
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    affine[:3, 3] = [-94.0, -130.0, -72.0]
    labels, names = labels_for_grid((48, 56, 48), affine)
    assert labels.shape == (48, 56, 48) and labels.dtype == np.int32
    present = set(np.unique(labels).tolist())
    assert {17, 53, 4, 43} <= present and present <= set(names)
    # Left hippocampus at negative x, right at positive x (RAS grid).
    x_world = affine[0, 0] * np.nonzero(labels == 17)[0] + affine[0, 3]
    assert x_world.mean() < 0 < (affine[0, 0] * np.nonzero(labels == 53)[0] + affine[0, 3]).mean()
    with pytest.raises(AlzmriError, match="does not overlap"):
        far = affine.copy()
        far[:3, 3] = 5000.0
        labels_for_grid((8, 8, 8), far)
    with pytest.raises(AlzmriError, match="4 x 4"):
        labels_for_grid((8, 8, 8), np.eye(3))


def _per_scan_table() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    rows = []
    for cls, shift in (("AD", 2.0), ("CN", 0.0)):
        for s in range(12):
            for region, base in (("hippocampus", 1.0), ("entorhinal", 0.5), ("putamen", 0.2)):
                enrichment = base + (shift if region == "hippocampus" else 0.0) + rng.normal(0, 0.3)
                rows.append({"scan": f"{cls}-{s}", "participant_id": f"{cls}-p{s // 2}", "class": cls,
                             "name": region, "enrichment": enrichment, "attribution_share": enrichment / 10})
    return pd.DataFrame(rows)


def test_aggregate_by_class_intervals_contain_the_mean(tmp_path) -> None:
    per_scan = _per_scan_table()
    agg = aggregate_by_class(per_scan, n_boot=500, seed=0)
    assert len(agg) == 6 and set(agg["class"]) == {"AD", "CN"}
    assert (agg["n_scans"] == 12).all()
    for metric in ("enrichment", "attribution_share"):
        assert (agg[f"{metric}_low"] <= agg[f"{metric}_mean"]).all()
        assert (agg[f"{metric}_mean"] <= agg[f"{metric}_high"]).all()
        assert (agg[f"{metric}_low"] < agg[f"{metric}_high"]).all()
    ad = agg[agg["class"] == "AD"]
    assert ad.iloc[0]["name"] == "hippocampus"  # sorted by mean enrichment
    expected = per_scan[(per_scan["class"] == "AD") & (per_scan["name"] == "hippocampus")]["enrichment"].mean()
    assert ad.iloc[0]["enrichment_mean"] == pytest.approx(expected)
    again = aggregate_by_class(per_scan, n_boot=500, seed=0)
    pd.testing.assert_frame_equal(agg, again)
    clustered = aggregate_by_class(per_scan, n_boot=500, seed=0, cluster="participant_id")
    assert np.allclose(clustered["enrichment_mean"], agg["enrichment_mean"])
    with pytest.raises(AlzmriError, match="lacks column"):
        aggregate_by_class(per_scan.drop(columns="class"))
    with pytest.raises(AlzmriError, match="more than once"):
        aggregate_by_class(pd.concat([per_scan, per_scan.head(1)]))

    out = plot_top_regions(agg, tmp_path / "top.png", top=2)
    assert out.read_bytes()[:8] == PNG_MAGIC
    one = plot_top_regions(agg, tmp_path / "ad.png", cls="AD")
    assert one.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(AlzmriError, match="not in the aggregate"):
        plot_top_regions(agg, tmp_path / "x.png", cls="MCI")
