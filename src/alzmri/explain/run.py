"""``explain(config)``: attribution maps of a trained model for cached or raw scans.

Per scan, in ``OUT/<participant>_<session>/``:

    map.nii.gz         the positive part of the map inside the brain (the voxels above the
                       preprocessed volume's constant background), on the model's input grid,
                       with that grid's world affine from the preprocessing record
    map_scan_space.nii.gz  the same map resampled (trilinear) onto the original scan's grid
                       (NIfTI sources, pipelines without 'register')
    overlay.png        tri-planar view through the map's peak, thresholded region outlined
    sweep.gif          axial, coronal and sagittal sweeps (``--gif``)
    depth_profile.png  attribution per slice along each axis

and ``OUT/explain.tsv`` (one row per scan: prediction, threshold, surviving components, depth
peaks), ``OUT/sanity.json`` (``--sanity``: cascading parameter randomisation on the first
scan, Adebayo et al. 2018) and ``OUT/label_randomization.json`` (``--label-randomized RUN``: per
scan, the Spearman correlation between this model's map and that of a model trained on
shuffled labels, and the verdict).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from alzmri.data.dataset import select_scans
from alzmri.data.splits import read_split_dir
from alzmri.evaluation.predict import checkpoint_preprocess, load_classifier, uses_age
from alzmri.explain.attribution import attribute
from alzmri.explain.config import ExplainConfig
from alzmri.explain.depth_profile import depth_profile, plot_depth_profile
from alzmri.explain.overlay import plot_triplanar, write_sweep_gif
from alzmri.explain.regions import aggregate_by_class, group_attribution, labels_for_grid, plot_top_regions, region_attribution, region_groups
from alzmri.explain.spaces import resample_between
from alzmri.explain.sanity import GRADIENT_METHODS, cascading_randomization, map_similarity, summarize, summarize_label_randomization
from alzmri.explain.thresholds import components, threshold_map
from alzmri.io.manifest import write_manifest
from alzmri.explain.truth import labels_on_grid, labels_path, score_map, truth_on_grid, truth_path
from alzmri.preprocessing.cache import load_array, qc_record_name, read_cache
from alzmri.preprocessing.pipeline import output_affine
from alzmri.utils.atomic import atomic_path, atomic_write_text
from alzmri.utils.errors import AlzmriError
from alzmri.utils.names import check_distinct, join_ids


def checkpoint_of(run: Path) -> Path:
    """The checkpoint behind ``run``: the file itself, or ``RUN/checkpoints/best-loss.ckpt``."""
    run = Path(run)
    if run.is_file():
        return run
    if not run.is_dir():
        raise AlzmriError(f"{run} is neither a run folder nor a checkpoint file")
    checkpoint = run / "checkpoints" / "best-loss.ckpt"
    if not checkpoint.is_file():
        raise AlzmriError(f"run folder {run} has no checkpoints/best-loss.ckpt (did training finish a validation epoch?)")
    return checkpoint


def scans_to_explain(config: ExplainConfig, hp: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{participant_id, session_id, diagnosis, age, volume}]`` from raw scans or from a cache split."""
    if config.scan and (config.cache or config.split):
        raise AlzmriError("give either --scan or --cache with --split, not both")
    rows: list[dict[str, Any]] = []
    if config.scan:
        from alzmri.io.volumes import scan_stem
        from alzmri.preprocessing.pipeline import preprocess_image

        preprocess = checkpoint_preprocess(hp)
        for path in config.scan[: config.limit]:
            array, qc = preprocess_image(path, preprocess)
            rows.append({"participant_id": scan_stem(path), "session_id": "", "diagnosis": "", "age": float("nan"), "volume": array,
                         "affine": output_affine(qc), "source": str(path)})  # fmt: skip
        return rows
    if not (config.cache and config.split):
        raise AlzmriError("give --scan FILE..., or --cache CACHE --split SPLIT (and --data test|val|train)")
    cache, cache_preprocess = read_cache(config.cache)
    if cache_preprocess != checkpoint_preprocess(hp):
        raise AlzmriError(f"cache {config.cache} was preprocessed differently from the model's training data; preprocess the scans with the model's settings")
    splits = read_split_dir(config.split)
    if config.data not in splits:
        raise AlzmriError(f"split folder {config.split} has no {config.data!r} split (has: {', '.join(splits)})")
    scans = select_scans(cache, splits[config.data], config.data).head(config.limit)
    for row in scans.to_dict("records"):
        record = Path(config.cache) / qc_record_name(row["participant_id"], row["session_id"])
        affine = output_affine(json.loads(record.read_text())) if record.is_file() else None
        rows.append({**{k: row.get(k, "") for k in ("participant_id", "session_id", "diagnosis")}, "age": float(row.get("age", float("nan"))),
                     "volume": np.asarray(load_array(row["array"]), dtype=np.float32), "affine": affine, "source": row.get("source", "")})  # fmt: skip
    return rows


# The regions where alzmri synth plants AD atrophy and the issue asks about.
PLANTED = "hippocampus + entorhinal + lateral ventricles"
PLANTED_LABELS = (17, 53, 1006, 2006, 4, 43)


def region_summary(per_scan: pd.DataFrame, out: Path) -> dict[str, Any]:
    """Per-class region and group enrichment (subject-bootstrap intervals): TSVs, a bar plot, a printed line per class."""
    write_manifest(per_scan, out / "regions_per_scan.tsv")
    aggregate = aggregate_by_class(per_scan, cluster="participant_id")
    write_manifest(aggregate, out / "regions_by_class.tsv")
    plot_top_regions(aggregate[aggregate["name"].isin(per_scan.loc[per_scan["kind"] == "region", "name"])], out / "regions.png")
    summary = {}
    for cls, part in aggregate[aggregate["name"] == PLANTED].groupby("class"):
        row = part.iloc[0]
        if not int(row["n_scans"]):  # no scan of this class had positive evidence in the atlas
            continue
        summary[str(cls)] = {k: float(row[k]) for k in ("enrichment_mean", "enrichment_low", "enrichment_high", "attribution_share_mean")}
        print(f"{PLANTED}, {cls} scans ({int(row['n_scans'])}): enrichment {row['enrichment_mean']:.2f} "
              f"[{row['enrichment_low']:.2f}, {row['enrichment_high']:.2f}] (1 = chance), {row['attribution_share_mean']:.0%} of the map")  # fmt: skip
    return summary


def truth_summary(table: pd.DataFrame) -> dict[str, Any]:
    """Per true diagnosis: mean enrichment with a subject-bootstrap 95 % interval, energy, pointing game."""
    from alzmri.evaluation.stats import bootstrap_ci, mean_metric

    summary: dict[str, Any] = {}
    for diagnosis, part in table.groupby("diagnosis"):
        part = part[np.isfinite(part["truth_enrichment"].astype(float))]
        if part.empty:
            continue
        summary[str(diagnosis)] = {
            "n_scans": int(len(part)),
            "enrichment": bootstrap_ci(mean_metric("truth_enrichment"), part.reset_index(drop=True), n_resamples=2000, seed=0),
            "energy_inside": float(part["truth_energy_inside"].mean()),
            "volume_share": float(part["truth_volume_share"].mean()),
            "pointing_game": float(part["truth_pointing_game"].astype(bool).mean()),
        }
    return summary


def target_for(target: str, classes: list[str], diagnosis: str, probs: np.ndarray) -> int:
    """Index of the class a scan's map explains: the predicted one, the true one, or a named one."""
    if target == "predicted":
        return int(probs.argmax())
    name = diagnosis if target == "true" else target
    if name not in classes:
        what = f"scan diagnosis {name!r}" if target == "true" else f"--target {name!r}"
        raise AlzmriError(f"{what} is not a class of this model ({', '.join(classes)}); use --target predicted, true or one of them")
    return classes.index(name)


def map_function(method: str, smooth: float) -> Any:
    """``compute(model, volume, *, target, **kw)``: :func:`attribute` for ``method``, then Gaussian
    smoothing with sigma ``smooth`` voxels when > 0 (the same map for the scan and the sanity checks)."""

    def compute(model: Any, volume: np.ndarray, *, target: int | None = None, **kw: Any) -> np.ndarray:
        result = attribute(model, volume, method, target=target, **kw)
        return ndimage.gaussian_filter(result, smooth) if smooth > 0 else result

    return compute


def label_randomized_model(path: Path, explained: Any, classes: list[str], hp: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The model (and hparams) of a ``--shuffle-labels`` run, checked to match the explained model's classes, preprocessing and age input."""
    model, other = load_classifier(checkpoint_of(path))
    if list(other["classes"]) != classes:
        raise AlzmriError(f"--label-randomized model has classes {other['classes']}, the explained model {classes}; train both on the same classes")
    if checkpoint_preprocess(other) != checkpoint_preprocess(hp):
        raise AlzmriError("--label-randomized model was trained on differently preprocessed scans; train it on the same cache")
    if uses_age(model) != uses_age(explained):
        raise AlzmriError("--label-randomized model and the explained model differ in their age input")
    if not other.get("train_config", {}).get("shuffle_labels", False):
        raise AlzmriError(f"--label-randomized {path} was not trained with --shuffle-labels; train one with 'alzmri train CACHE SPLIT --shuffle-labels'")
    return model, other


def brain_mask(volume: np.ndarray) -> np.ndarray:
    """The brain in a preprocessed volume: voxels above the constant background (the minimum)."""
    brain = volume > volume.min() + 1e-6
    return brain if brain.any() else np.ones_like(volume, dtype=bool)


def _save_nifti(array: np.ndarray, path: Path, affine: np.ndarray | None) -> None:
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4) if affine is None else affine), str(tmp))


def explain(config: ExplainConfig) -> dict[str, Any]:
    """Maps, pictures, a per-scan table and the sanity check (see the module docstring)."""
    checkpoint = checkpoint_of(config.run)
    model, hp = load_classifier(checkpoint)
    classes = list(hp["classes"])
    rows = scans_to_explain(config, hp)
    if not rows:
        raise AlzmriError("no scans to explain")
    if config.truth is not None and config.scan:
        raise AlzmriError("--truth scores cached scans: use it with --cache and --split")
    if (config.truth is not None or config.regions) and any(r["affine"] is None for r in rows):
        raise AlzmriError(f"cache {config.cache} predates grid affines; re-run the same 'alzmri preprocess' command (it only redoes the fast steps)")
    needs_age = uses_age(model)
    if needs_age and any(not np.isfinite(r["age"]) for r in rows):
        raise AlzmriError("this model uses age, but some scans have none; explain scans from a cache whose labels have ages")
    out = Path(config.out) if config.out else (Path(config.run) if Path(config.run).is_dir() else checkpoint.parent) / f"explain-{config.method}"
    out.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {"layer": config.layer} if config.layer else {}
    if config.occlusion_size is not None:
        if config.method != "occlusion":
            raise AlzmriError("--occlusion-size applies to --method occlusion only")
        options["mask_size"] = config.occlusion_size
    # After 'register' the grid's world is MNI, not the scan's: mapping back needs the inverse
    # registration, which the cache does not keep; the map then stays on the (MNI) model grid.
    registered = "register" in checkpoint_preprocess(hp).steps
    if config.regions and not registered and config.truth is None:
        raise AlzmriError("--regions needs scans registered to MNI152 ('register' in the preprocessing steps), "
                          "or --truth with a synthetic cohort (each of its scans carries its own atlas labels)")
    if config.target not in ("predicted", "true"):
        target_for(config.target, classes, "", np.zeros(len(classes)))
    elif config.target == "true" and any(not r["diagnosis"] for r in rows):
        raise AlzmriError("--target true needs each scan's diagnosis: explain scans from a cache and split, or name a class")
    if config.regions and config.truth is not None:
        labels_path(config.truth, rows[0]["participant_id"], rows[0]["session_id"])  # fail before any work
        from alzmri.io.templates import load_desikan_killiany_on_mni

        atlas_names = load_desikan_killiany_on_mni()[1]
        print("regions: each scan's own Desikan-Killiany labels from --truth (its true anatomy, no registration)")
    compute_map = map_function(config.method, config.smooth)
    shuffled = None
    if config.label_randomized is not None:
        shuffled, shuffled_hp = label_randomized_model(config.label_randomized, model, classes, hp)
    label_similarity: list[float] = []
    region_rows: list[pd.DataFrame] = []
    table = []
    keys = [(str(r["participant_id"]), str(r["session_id"])) for r in rows]
    names = [join_ids(*key) or f"scan{i}" for i, key in enumerate(keys)]
    check_distinct(keys, names, "explain")
    for i, row in enumerate(rows):
        volume = row["volume"]
        age = row["age"] if needs_age else None
        x = torch.from_numpy(volume)[None, None]
        with torch.no_grad():
            extra = [torch.tensor([age], dtype=torch.float32)] if needs_age else []
            probs = torch.softmax(model(x, *extra), dim=1)[0].numpy()
        predicted = classes[int(probs.argmax())]
        row["target"] = target_for(config.target, classes, row["diagnosis"], probs)
        brain = brain_mask(volume)
        raw = compute_map(model, volume, target=row["target"], model_name=hp["model_name"], age=age, **options)
        heat = np.clip(raw, 0, None) * brain
        if shuffled is not None:
            other = compute_map(shuffled, volume, target=row["target"], model_name=shuffled_hp["model_name"], age=age, **options)
            label_similarity.append(map_similarity(raw, other, absolute=config.method in GRADIENT_METHODS)["spearman"])
        mask, cut = threshold_map(heat, config.threshold, percentile=config.percentile, k=config.k, mask=brain)
        parts = components(mask, heat, top=None)
        profile = depth_profile(heat)
        name = names[i]
        folder = out / name
        folder.mkdir(exist_ok=True)
        _save_nifti(heat, folder / "map.nii.gz", row["affine"])
        if registered is False and row["affine"] is not None and str(row.get("source", "")).endswith((".nii", ".nii.gz")) and Path(row["source"]).is_file():
            scan = nib.load(row["source"])
            with atomic_path(folder / "map_scan_space.nii.gz") as tmp:
                back = resample_between(heat, row["affine"], scan.shape[:3], scan.affine, order=1)
                nib.save(nib.Nifti1Image(back, scan.affine), str(tmp))
        title = f"{name}: predicted {predicted} (p = {probs.max():.2f})" + (f", true {row['diagnosis']}" if row["diagnosis"] else "")
        if classes[row["target"]] != predicted:
            title += f"; map explains {classes[row['target']]}"
        plot_triplanar(volume, heat, folder / "overlay.png", predicted=predicted, mask=mask, title=title)
        plot_depth_profile(profile, folder / "depth_profile.png", title=title)
        if config.gif:
            write_sweep_gif(volume, heat, folder / "sweep.gif", predicted=predicted)
        top = parts[0] if parts else {}
        scores = {}
        if config.truth is not None:
            truth = truth_on_grid(truth_path(config.truth, row["participant_id"], row["session_id"]), heat.shape, row["affine"])
            scores = {f"truth_{k}": v for k, v in score_map(heat, truth, brain, config.truth_level).items()}
        if config.regions:
            if config.truth is not None:
                grid_labels = labels_on_grid(labels_path(config.truth, row["participant_id"], row["session_id"]), heat.shape, row["affine"])
                per_region = region_attribution(heat, grid_labels, atlas_names)
            else:
                per_region = region_attribution(heat, *labels_for_grid(heat.shape, row["affine"]))
            groups = group_attribution(per_region, region_groups() | {PLANTED: PLANTED_LABELS})
            both = pd.concat([per_region.assign(kind="region"), groups.assign(kind="group")], ignore_index=True)
            region_rows.append(both.assign(scan=name, participant_id=row["participant_id"], **{"class": row["diagnosis"] or predicted}))
            planted = groups.set_index("name").loc[PLANTED]
            scores = {**scores, "planted_regions_enrichment": float(planted["enrichment"]), "planted_regions_share": float(planted["attribution_share"])}
        table.append({
            "participant_id": row["participant_id"], "session_id": row["session_id"], "diagnosis": row["diagnosis"], "predicted": predicted,
            **{f"prob_{c}": round(float(p), 6) for c, p in zip(classes, probs, strict=True)}, "explained": classes[row["target"]],
            "threshold": round(float(cut), 6), "kept_voxels": int(mask.sum()), "components": len(parts),
            "top_component_share": round(float(top.get("attribution_share", float("nan"))), 4),
            "peak_voxel": "x".join(map(str, np.unravel_index(int(np.argmax(heat)), heat.shape))),
            **{f"depth_peak_{axis.split()[0]}": int(np.nanargmax(p)) if np.isfinite(p).any() else -1 for axis, p in profile.items()},
            **scores, **({"label_randomized_spearman": round(label_similarity[-1], 4)} if shuffled is not None else {}),
        })  # fmt: skip
        held = f"top region holds {top['attribution_share']:.0%} of the map" if top else "no positive evidence"
        print(f"[{i + 1}/{len(rows)}] {title}: {held} → {folder}", flush=True)
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "method": config.method, "n_scans": len(rows), "out": str(out)}
    write_manifest(pd.DataFrame(table), out / "explain.tsv")
    if config.regions:
        result["regions"] = region_summary(pd.concat(region_rows, ignore_index=True), out)
    if config.truth is not None:
        result["truth"] = truth_summary(pd.DataFrame(table))
        atomic_write_text(out / "truth.json", json.dumps(result["truth"], indent=2, default=float) + "\n")
        for diagnosis, s in result["truth"].items():
            e = s["enrichment"]
            print(f"planted atrophy, {diagnosis} scans ({s['n_scans']}): enrichment {e['estimate']:.2f} [{e['low']:.2f}, {e['high']:.2f}] "
                  f"(1 = chance), energy inside {s['energy_inside']:.0%} of the map on {s['volume_share']:.0%} of the brain, "
                  f"pointing game {s['pointing_game']:.0%}")  # fmt: skip
    if shuffled is not None:
        verdict = summarize_label_randomization(label_similarity)
        result["label_randomization"] = {"run": str(config.label_randomized), **verdict}
        atomic_write_text(out / "label_randomization.json", json.dumps(result["label_randomization"], indent=2, default=float) + "\n")
        print(f"sanity check (label randomisation): {verdict['message']}")
    if config.sanity:
        first = rows[0]
        steps = cascading_randomization(model, first["volume"], compute_map, age=first["age"] if needs_age else None, target=first["target"],
                                        absolute=config.method in GRADIENT_METHODS, model_name=hp["model_name"], **options)  # fmt: skip
        verdict = summarize(steps)
        result["sanity"] = {"scan": table[0]["participant_id"], "steps": steps, **verdict}
        atomic_write_text(out / "sanity.json", json.dumps(result["sanity"], indent=2, default=float) + "\n")
        print(f"sanity check (parameter randomisation, {len(steps)} layers): {verdict['message']}")
    return result
