"""``explain(config)``: attribution maps of a trained model for cached or raw scans.

Per scan, in ``OUT/<participant>_<session>/``:

    map.nii.gz         the positive part of the map inside the brain, on the model's input
                       grid, with that grid's world affine from the preprocessing record. The
                       brain is the mask the preprocessing stored for the scan (cache
                       ``masks/``), else one estimated from the volume's background
                       (:mod:`alzmri.explain.brain`)
    map_scan_space.nii.gz  the same map resampled (trilinear) onto the original scan's grid
                       (NIfTI sources; after 'register' through the recorded registration)
    overlay.png        tri-planar view through the map's peak, thresholded region outlined in
                       yellow, the brain in cyan; a note for an empty map (middle slices) or one
                       whose evidence lies mostly outside the brain (then shown unmasked)
    sweep.gif          axial, coronal and sagittal sweeps (``--gif``)
    depth_profile.png  attribution per slice along each axis
    summary.json       the scan's row of explain.tsv

and ``OUT/explain.tsv`` (one row per scan: prediction, threshold, surviving components, depth
peaks, the share of positive evidence outside the brain and its flag, whether the map is
empty, and a ``note`` in words), ``OUT/sanity.json`` (``--sanity``: cascading parameter
randomisation on the first scan, Adebayo et al. 2018) and ``OUT/label_randomization.json``
(``--label-randomized RUN``: per scan, the Spearman correlation between this model's map and
that of a model trained on shuffled labels, and the verdict).
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
from alzmri.data.provenance import describe_seen, find_seen
from alzmri.data.splits import read_split_dir
from alzmri.evaluation.predict import checkpoint_genetics, checkpoint_preprocess, load_classifier, uses_age
from alzmri.explain.attribution import attribute
from alzmri.explain.brain import MOSTLY_OUTSIDE, describe_evidence, evidence_location, outside_note, scan_brain_mask
from alzmri.explain.config import ExplainConfig
from alzmri.explain.depth_profile import depth_profile, plot_depth_profile
from alzmri.explain.overlay import plot_triplanar, write_sweep_gif
from alzmri.explain.regions import aggregate_by_class, group_attribution, labels_for_grid, plot_top_regions, region_attribution, region_groups
from alzmri.io.checkpoint import checkpoint_of
from alzmri.io.grids import resample_between
from alzmri.explain.sanity import GRADIENT_METHODS, cascading_randomization, map_similarity, summarize, summarize_label_randomization
from alzmri.explain.thresholds import components, threshold_map
from alzmri.fusion.xattn import WithFixedGenetics
from alzmri.models import model_info
from alzmri.io.manifest import write_manifest
from alzmri.data.synth.derivatives import labels_on_grid, labels_path, strength_on_grid, truth_path
from alzmri.explain.truth import score_map
from alzmri.preprocessing.cache import load_array, load_mask, qc_record_name, read_cache
from alzmri.preprocessing.pipeline import output_affine, scanner_affine
from alzmri.utils.atomic import atomic_path, atomic_write_text
from alzmri.utils.errors import AlzmriError
from alzmri.utils.hashing import content_digest
from alzmri.utils.jsonable import strict_json
from alzmri.utils.names import check_distinct, join_ids


def stored_mask(path: Any) -> np.ndarray | None:
    """A cache manifest's brain mask (boolean), or None when none is listed or its file is gone."""
    if not isinstance(path, str) or not path or not Path(path).is_file():
        return None
    return load_mask(path)


def scans_to_explain(config: ExplainConfig, hp: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{participant_id, session_id, diagnosis, age, volume, affine, source, mask}]`` from raw scans or a cache split.

    ``mask`` is the preprocessing's brain mask on the model grid, or None (caches made before
    masks were stored, pipelines without skull stripping).
    """
    if config.scan and (config.cache or config.split):
        raise AlzmriError("give either --scan or --cache with --split, not both")
    rows: list[dict[str, Any]] = []
    if config.scan:
        from alzmri.io.volumes import scan_stem
        from alzmri.preprocessing.pipeline import run_prefix, run_suffix

        preprocess = checkpoint_preprocess(hp)
        for path in config.scan[: config.limit]:
            array, mask, qc = run_suffix(run_prefix(path, preprocess), preprocess)  # preprocess_image, keeping the mask
            rows.append({"participant_id": scan_stem(path), "session_id": "", "diagnosis": "", "age": float("nan"), "volume": array,
                         "affine": output_affine(qc), "scanner_affine": scanner_affine(qc), "source": str(path), "mask": mask, "source_hash": content_digest(path)})  # fmt: skip
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
        qc = json.loads(record.read_text()) if record.is_file() else {}
        affine = output_affine(qc)
        rows.append({**{k: row.get(k, "") for k in ("participant_id", "session_id", "diagnosis")}, "age": float(row.get("age", float("nan"))),
                     "volume": np.asarray(load_array(row["array"]), dtype=np.float32), "affine": affine, "scanner_affine": scanner_affine(qc), "source": row.get("source", ""),
                     "mask": stored_mask(row.get("mask")), "image_hash": content_digest(row["array"]), "source_hash": row.get("source_hash", "")})  # fmt: skip
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


def analyse_map(raw: np.ndarray, brain: np.ndarray, config: ExplainConfig) -> dict[str, Any]:
    """A map's positive part, restricted to the brain, thresholded, with where its evidence lies.

    Returns:
        ``heat`` (the positive part inside the brain), ``shown`` (what the overlay shows: ``heat``,
        or the whole positive part when the evidence lies mostly outside the brain, so the
        picture shows it), ``evidence`` (:func:`alzmri.explain.brain.evidence_location`), the
        thresholded ``mask``, its ``threshold`` (NaN when nothing inside the brain is positive)
        and the connected ``parts``, strongest first.
    """
    positive = np.clip(raw, 0, None)
    evidence = evidence_location(positive, brain)
    heat = positive * brain
    if heat.any():
        mask, cut = threshold_map(heat, config.threshold, percentile=config.percentile, k=config.k, mask=brain)
        parts = components(mask, heat, top=None)
    else:  # nothing to threshold: no region "holds" a share of nothing
        mask, cut, parts = np.zeros(heat.shape, dtype=bool), float("nan"), []
    shown = positive if evidence["mostly_outside_brain"] else heat
    return {"heat": heat, "shown": shown, "evidence": evidence, "mask": mask, "threshold": float(cut), "parts": parts}


def evidence_columns(analysis: dict[str, Any], brain_source: str) -> dict[str, Any]:
    """The explain.tsv columns on where a map's evidence lies, and the ``note`` in words."""
    evidence, parts = analysis["evidence"], analysis["parts"]
    top = parts[0]["attribution_share"] if parts else None
    return {
        "brain_mask": brain_source,
        "map_empty": evidence["empty"],
        "outside_brain_share": round(evidence["outside_brain_share"], 4),
        "outside_brain_volume_share": round(evidence["outside_brain_volume_share"], 4),
        "evidence_outside_brain": evidence["mostly_outside_brain"],
        "note": describe_evidence(evidence, top),
    }


def report_maps(table: list[dict[str, Any]], names: list[str], sources: list[str]) -> dict[str, list[str]]:
    """Print which brain masks were used, which maps are empty and which lie mostly outside the brain."""
    estimated = sources.count("estimated")
    if estimated:
        print(f"brain mask: estimated from the background for {estimated} of {len(sources)} scans (no mask stored by the preprocessing: "
              "a cache made before masks were stored, or a pipeline without skull stripping)")  # fmt: skip
    empty = [n for n, r in zip(names, table, strict=True) if r["map_empty"]]
    outside = [n for n, r in zip(names, table, strict=True) if r["evidence_outside_brain"]]
    if empty:
        print(f"{len(empty)} of {len(table)} maps are empty (no positive evidence anywhere): {', '.join(empty)}")
    if outside:
        print(f"warning: {len(outside)} of {len(table)} maps hold more than {MOSTLY_OUTSIDE:.0%} of their positive evidence outside the brain, "
              f"denser there than inside (a shortcut or an artefact, not anatomy; column evidence_outside_brain): {', '.join(outside)}")  # fmt: skip
    return {"empty_maps": empty, "outside_brain": outside}


def atlas_regions(heat: np.ndarray, brain: np.ndarray, affine: np.ndarray) -> tuple[pd.DataFrame, float]:
    """Region attribution on the MNI atlas and the share of the brain the atlas labels.

    The atlas is put on the model grid through the grid's recorded voxel-to-world affine: for
    scans in MNI152 space (registered by alzmri, or normalised before) world is MNI mm, whatever
    the crop and resize did to the grid. A low share of labelled brain means the grid is not
    where the atlas is (scans declared MNI152 that are not).
    """
    labels, atlas_names = labels_for_grid(heat.shape, affine)
    coverage = float((labels[brain] != 0).mean()) if brain.any() else 0.0
    return region_attribution(heat, labels, atlas_names), coverage


def _save_nifti(array: np.ndarray, path: Path, affine: np.ndarray | None) -> None:
    with atomic_path(path) as tmp:
        nib.save(nib.Nifti1Image(array.astype(np.float32), np.eye(4) if affine is None else affine), str(tmp))


def in_mni_space(config: ExplainConfig, hp: dict[str, Any]) -> bool:
    """Whether the model grid's world is MNI152: alzmri registered the scans, or ``--input-space MNI152`` says they came so.

    Scans normalised by SPM or Clinica carry affines to MNI mm; alzmri's reorient, resample,
    crop and resize keep world coordinates (the recorded output affine maps the cropped, resized
    grid to the same mm), so the atlas goes onto the model grid exactly as after 'register'.
    """
    return "register" in checkpoint_preprocess(hp).steps or config.input_space == "MNI152"


def seen_by_model(rows: list[dict[str, Any]], hp: dict[str, Any], cache: Path | None) -> list[str]:
    """Per scan, ``train``/``val`` when the model trained or was validated on it (else ``""``); warns once."""
    scans = pd.DataFrame([{k: r.get(k, "") for k in ("participant_id", "session_id", "image_hash", "source_hash")} for r in rows])
    seen = find_seen(hp.get("training_data"), scans, cache)
    if not seen.empty:
        print(f"warning: explaining {describe_seen(seen)}: their maps show what the model fitted, not how it generalises "
              "(column seen_in_training)")  # fmt: skip
    found = dict(zip(seen["position"], seen["seen_in"], strict=True))
    return [found.get(i, "") for i in range(len(rows))]


def with_genetics(rows: list[dict[str, Any]], genetics: Any) -> tuple[list[dict[str, Any]], tuple[np.ndarray, np.ndarray, list[str]]]:
    """The rows a fusion model can explain and their ``(features, present, column names)``.

    Under ``--missing-genetics drop`` (the model never saw a participant without genetics) scans
    of participants missing from the table are left out, with a note; otherwise they get the
    missing-genetics token.
    """
    features, present = genetics.inputs([r["participant_id"] for r in rows])
    if not present.any() and not genetics.drops_missing:
        print(f"warning: no scan's participant_id is in the genetic table {genetics.table.source}: every scan is explained with the "
              "missing-genetics token (raw scans are named by file; explain cached scans with --cache and --split to match participants)")  # fmt: skip
    if genetics.drops_missing and not present.all():
        print(f"{int((~present).sum())} of {len(rows)} scans have no genetic row (matched by participant_id) and are left out (the model was trained with --missing-genetics drop)")
        keep = np.flatnonzero(present)
        if not len(keep):
            raise AlzmriError(f"none of the scans' participants is in the genetic table {genetics.table.source}; pass --genetics TABLE")
        rows, features, present = [rows[i] for i in keep], features[keep], present[keep]
    return rows, (features, present, list(genetics.encoder.groups))


def explain(config: ExplainConfig) -> dict[str, Any]:
    """Maps, pictures, a per-scan table and the sanity check (see the module docstring)."""
    checkpoint = checkpoint_of(config.run)
    model, hp = load_classifier(checkpoint)
    fusion = bool(hp.get("model_name")) and model_info(hp["model_name"]).uses_genetics
    if fusion and "encoder" not in model_info(hp["model_name"]).defaults:
        raise AlzmriError(f"{hp['model_name']} does not look at the image, so there is no map to explain; its genetic columns are ranked by 'alzmri ablate-fusion'")
    if hp.get("preprocess", {}).get("kind") == "slices":
        from alzmri.explain.slices import explain_slices

        if fusion:
            raise AlzmriError(f"explaining a 2D fusion model ({hp['model_name']}) is not supported yet; 'alzmri evaluate' and 'alzmri ablate-fusion' work on it")
        out = Path(config.out) if config.out else (Path(config.run) if Path(config.run).is_dir() else checkpoint.parent) / f"explain-{config.method}"
        return explain_slices(config, model, hp, out)
    classes = list(hp["classes"])
    # After 'register' the grid's world is MNI, not the scan's; the recorded scanner affine (grid ->
    # scan world, through the registration) maps maps back and the synthetic truth onto the grid.
    registered = "register" in checkpoint_preprocess(hp).steps
    if config.regions and not in_mni_space(config, hp) and config.truth is None:
        raise AlzmriError("--regions needs scans in MNI152 space: registered to MNI152 by alzmri ('register' in the preprocessing steps), "
                          "or already normalised (SPM, Clinica): say so with --input-space MNI152; "
                          "or --truth with a synthetic cohort (each of its scans carries its own atlas labels)")  # fmt: skip
    rows = scans_to_explain(config, hp)
    genetic_inputs = None
    if fusion:
        rows, genetic_inputs = with_genetics(rows, checkpoint_genetics(hp, config.genetics))
    if not rows:
        raise AlzmriError("no scans to explain")
    seen_in = seen_by_model(rows, hp, config.cache)
    if config.truth is not None and config.scan:
        raise AlzmriError("--truth scores cached scans: use it with --cache and --split")
    if (config.truth is not None or config.regions) and any(r["affine"] is None for r in rows):
        raise AlzmriError(f"cache {config.cache} predates grid affines; re-run the same 'alzmri preprocess' command (it only redoes the fast steps)")
    if config.truth is not None and any(r["scanner_affine"] is None for r in rows):
        raise AlzmriError(f"cache {config.cache} predates scanner affines (grid -> scan world, needed to put the truth on the grid); re-run the same "
                          "'alzmri preprocess' command (registered caches redo the registration once)")  # fmt: skip
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
    if config.target not in ("predicted", "true"):
        target_for(config.target, classes, "", np.zeros(len(classes)))
    elif config.target == "true" and any(not r["diagnosis"] for r in rows):
        raise AlzmriError("--target true needs each scan's diagnosis: explain scans from a cache and split, or name a class")
    if config.regions and config.truth is not None:
        labels_path(config.truth, rows[0]["participant_id"], rows[0]["session_id"])  # fail before any work
        from alzmri.io.templates import load_desikan_killiany_on_mni

        atlas_names = load_desikan_killiany_on_mni()[1]
        print("regions: each scan's own Desikan-Killiany labels from --truth (its true anatomy, no registration)")
    elif config.regions and not registered:
        print("regions: scans declared in MNI152 space (--input-space MNI152): the atlas goes onto each model grid through its recorded affine, "
              "no registration")  # fmt: skip
    compute_map = map_function(config.method, config.smooth)
    shuffled = None
    if config.label_randomized is not None:
        if fusion:
            raise AlzmriError("--label-randomized is not supported for fusion models yet; their control is 'alzmri ablate-fusion' (shuffled_genetics)")
        shuffled, shuffled_hp = label_randomized_model(config.label_randomized, model, classes, hp)
    label_similarity: list[float] = []
    region_rows: list[pd.DataFrame] = []
    table = []
    brain_sources: list[str] = []
    off_atlas: list[str] = []
    keys = [(str(r["participant_id"]), str(r["session_id"])) for r in rows]
    names = [join_ids(*key) or f"scan{i}" for i, key in enumerate(keys)]
    check_distinct(keys, names, "explain")
    nets = []
    for i, row in enumerate(rows):
        volume = row["volume"]
        age = row["age"] if needs_age else None
        x = torch.from_numpy(volume)[None, None]
        net = WithFixedGenetics(model, genetic_inputs[0][i], genetic_inputs[1][i]).eval() if genetic_inputs is not None else model
        nets.append(net)
        with torch.no_grad():
            extra = [torch.tensor([age], dtype=torch.float32)] if needs_age else []
            probs = torch.softmax(net(x, *extra), dim=1)[0].numpy()
        predicted = classes[int(probs.argmax())]
        row["predicted_index"] = int(probs.argmax())
        row["target"] = target_for(config.target, classes, row["diagnosis"], probs)
        brain, brain_source = scan_brain_mask(volume, row.get("mask"))
        brain_sources.append(brain_source)
        row["brain"] = brain
        raw = compute_map(net, volume, target=row["target"], model_name=hp["model_name"], age=age, **options)
        if not np.isfinite(raw).all():
            raise AlzmriError(f"the {config.method} map of {names[i]} has {int((~np.isfinite(raw)).sum())} NaN or infinite voxels "
                              "(the model's output or gradient is not finite for this scan); check the scan and the checkpoint")  # fmt: skip
        if shuffled is not None:
            other = compute_map(shuffled, volume, target=row["target"], model_name=shuffled_hp["model_name"], age=age, **options)
            label_similarity.append(map_similarity(raw, other, absolute=config.method in GRADIENT_METHODS)["spearman"])
        analysis = analyse_map(raw, brain, config)
        heat, mask, parts = analysis["heat"], analysis["mask"], analysis["parts"]
        profile = depth_profile(heat)
        name = names[i]
        folder = out / name
        folder.mkdir(exist_ok=True)
        _save_nifti(heat, folder / "map.nii.gz", row["affine"])
        to_scan = row["scanner_affine"] if row["scanner_affine"] is not None else (None if registered else row["affine"])  # older unregistered caches: the same
        if to_scan is not None and str(row.get("source", "")).endswith((".nii", ".nii.gz")) and Path(row["source"]).is_file():
            scan = nib.load(row["source"])
            with atomic_path(folder / "map_scan_space.nii.gz") as tmp:
                back = resample_between(heat, to_scan, scan.shape[:3], scan.affine, order=1)
                nib.save(nib.Nifti1Image(back, scan.affine), str(tmp))
        title = f"{name}: predicted {predicted} (p = {probs.max():.2f})" + (f", true {row['diagnosis']}" if row["diagnosis"] else "")
        if classes[row["target"]] != predicted:
            title += f"; map explains {classes[row['target']]}"
        plot_triplanar(volume, analysis["shown"], folder / "overlay.png", predicted=predicted, mask=mask, title=title, brain=brain,
                       note=outside_note(analysis["evidence"]))  # fmt: skip
        plot_depth_profile(profile, folder / "depth_profile.png", title=title)
        if config.gif:
            write_sweep_gif(volume, analysis["shown"], folder / "sweep.gif", predicted=predicted)
        top = parts[0] if parts else {}
        scores = {}
        if config.truth is not None:
            truth = strength_on_grid(truth_path(config.truth, row["participant_id"], row["session_id"]), heat.shape, row["scanner_affine"])
            scores = {f"truth_{k}": v for k, v in score_map(heat, truth, brain, config.truth_level).items()}
        if config.regions:
            if config.truth is not None:
                grid_labels = labels_on_grid(labels_path(config.truth, row["participant_id"], row["session_id"]), heat.shape, row["scanner_affine"])
                per_region = region_attribution(heat, grid_labels, atlas_names)
            else:
                per_region, coverage = atlas_regions(heat, brain, row["affine"])
                scores["atlas_coverage"] = round(coverage, 4)
                if coverage < 0.5:
                    off_atlas.append(name)
            groups = group_attribution(per_region, region_groups() | {PLANTED: PLANTED_LABELS})
            both = pd.concat([per_region.assign(kind="region"), groups.assign(kind="group")], ignore_index=True)
            region_rows.append(both.assign(scan=name, participant_id=row["participant_id"], **{"class": row["diagnosis"] or predicted}))
            planted = groups.set_index("name").loc[PLANTED]
            scores = {**scores, "planted_regions_enrichment": float(planted["enrichment"]), "planted_regions_share": float(planted["attribution_share"])}
        table.append({
            "participant_id": row["participant_id"], "session_id": row["session_id"], "diagnosis": row["diagnosis"], "predicted": predicted,
            **{f"prob_{c}": round(float(p), 6) for c, p in zip(classes, probs, strict=True)}, "explained": classes[row["target"]],
            "threshold": round(analysis["threshold"], 6), "kept_voxels": int(mask.sum()), "components": len(parts),
            "top_component_share": round(float(top.get("attribution_share", float("nan"))), 4),
            "peak_voxel": "x".join(map(str, np.unravel_index(int(np.argmax(heat)), heat.shape))) if heat.any() else "",
            **evidence_columns(analysis, brain_source),
            **{f"depth_peak_{axis.split()[0]}": int(np.nanargmax(p)) if np.isfinite(p).any() else -1 for axis, p in profile.items()},
            **scores, **({"label_randomized_spearman": round(label_similarity[-1], 4)} if shuffled is not None else {}),
            "seen_in_training": seen_in[i],
        })  # fmt: skip
        atomic_write_text(folder / "summary.json", json.dumps(strict_json(table[-1]), indent=1) + "\n")
        print(f"[{i + 1}/{len(rows)}] {title}: {table[-1]['note']} → {folder}", flush=True)
    result: dict[str, Any] = {"checkpoint": str(checkpoint), "method": config.method, "n_scans": len(rows), "out": str(out)}
    write_manifest(pd.DataFrame(table), out / "explain.tsv")
    result.update(report_maps(table, names, brain_sources))
    if off_atlas:
        print(f"warning: on {len(off_atlas)} of {len(rows)} scans less than half of the brain lies on the atlas (column atlas_coverage): "
              f"are they really in MNI152 space? {', '.join(off_atlas)}")  # fmt: skip
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
    if genetic_inputs is not None and hasattr(model, "genetic_to_image"):
        from alzmri.explain.fusion_attention import explain_attention

        features, present, columns = genetic_inputs
        result["attention"] = explain_attention(model, rows, features, present, classes, columns, names, out)
    if config.sanity:
        first = rows[0]
        steps = cascading_randomization(nets[0], first["volume"], compute_map, age=first["age"] if needs_age else None, target=first["target"],
                                        absolute=config.method in GRADIENT_METHODS, model_name=hp["model_name"], **options)  # fmt: skip
        verdict = summarize(steps)
        result["sanity"] = {"scan": table[0]["participant_id"], "steps": steps, **verdict}
        atomic_write_text(out / "sanity.json", json.dumps(result["sanity"], indent=2, default=float) + "\n")
        print(f"sanity check (parameter randomisation, {len(steps)} layers): {verdict['message']}")
    return result
