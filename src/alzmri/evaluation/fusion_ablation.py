"""``alzmri ablate-fusion``: genetics-only, MRI-only, concatenation and cross-attention fusion, and a shuffled-genetics control.

Every arm is an ``alzmri cv`` run on the **same** subject-level stratified group folds (made once
in ``OUT/folds``), with the genetic table aligned by participant_id and its encoders fitted on
each fold's training subjects. The MRI-only arm (the fusion models' image encoder alone) gets
the table too, only to score the same participants (``--missing-genetics``). The
shuffled-genetics arm is ``fusion_xattn`` with the genetic rows permuted across participants: if
it is no better than MRI-only, the fusion gain comes from each person's own genes.

Each arm's out-of-fold test predictions (every subject scored once, by the fold that held it
out) are pooled into ``ARM/oof_predictions.tsv``; per subject (probabilities averaged over its
sessions), AUC and balanced accuracy get bootstrap 95 % intervals over subjects, and the pairs are compared as ``alzmri compare`` does (DeLong on the same
subjects, McNemar, a paired bootstrap of the balanced-accuracy difference). For the
cross-attention arms, the attention the image tokens give each genetic column is averaged over
the held-out scans of every fold and ranked.

Layout of ``OUT``::

    folds/fold-<k>/                 the shared splits
    <arm>/                          an 'alzmri cv' folder (fold-<k> runs, cv_folds.tsv) + oof_predictions.tsv
    ablation.tsv                    one row per arm: AUC and balanced accuracy with intervals
    comparisons.tsv                 one row per compared pair
    attention_genetic_<arm>.tsv     genetic columns ranked by attention (fusion_xattn, and the shuffled control)
    ablation.json                   all of the above
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alzmri.evaluation.config import CrossValidateConfig, FusionAblationConfig
from alzmri.io.manifest import write_manifest
from alzmri.utils.atomic import atomic_write_text
from alzmri.utils.errors import AlzmriError

PAIRS = (("fusion_xattn", "mri_only"), ("fusion_xattn", "genetics_only"), ("fusion_xattn", "fusion_concat"),
         ("fusion_concat", "mri_only"), ("shuffled_genetics", "mri_only"), ("fusion_xattn", "shuffled_genetics"))  # fmt: skip
_ATTENTION_ARMS = ("fusion_xattn", "shuffled_genetics")


FROZEN = "-frozen"


def arm_settings(arm: str, encoder: str, layer: str | None = None, frozen_from: Path | None = None) -> dict[str, Any]:
    """The model, encoder (its token layer, and the cv folder whose fold encoders it takes, frozen) and shuffling of one arm."""
    fused = {"encoder": encoder, "encoder_layer": layer}
    if frozen_from is not None:
        fused["freeze_encoder"] = frozen_from / "fold-{fold}" / "checkpoints" / "best-loss.ckpt"
    return {
        "genetics_only": {"model": "genetics_only", "encoder": None, "encoder_layer": None, "shuffle_genetics": False},
        "mri_only": {"model": encoder, "encoder": None, "encoder_layer": None, "shuffle_genetics": False},
        "fusion_concat": {"model": "fusion_concat", **fused, "shuffle_genetics": False},
        "fusion_xattn": {"model": "fusion_xattn", **fused, "shuffle_genetics": False},
        "shuffled_genetics": {"model": "fusion_xattn", **fused, "shuffle_genetics": True},
    }[arm]


def pooled_predictions(arm_dir: Path) -> pd.DataFrame:
    """The test rows of every fold's predictions, one table (each subject once)."""
    parts = []
    for table in sorted(arm_dir.glob("fold-*/eval-test/predictions.tsv")):
        rows = pd.read_csv(table, sep="\t", dtype={"participant_id": str, "session_id": str}, keep_default_na=False)
        parts.append(rows[rows["split"] == "test"].assign(fold=int(table.parent.parent.name.removeprefix("fold-"))))
    if not parts:
        raise AlzmriError(f"{arm_dir} has no fold predictions (fold-*/eval-test/predictions.tsv)")
    pooled = pd.concat(parts, ignore_index=True)
    if pooled.groupby("participant_id")["fold"].nunique().max() > 1:
        raise AlzmriError(f"a subject is in the test set of two folds in {arm_dir}: the folds are not a partition")
    return pooled


def _interval(ci: dict[str, Any]) -> str:
    return f"{ci['estimate']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]"


def arm_metrics(table: pd.DataFrame, classes: list[str], n_resamples: int, seed: int) -> dict[str, Any]:
    """Per subject (probabilities averaged over sessions, as ``compare`` pairs them): AUC (the positive class, or macro one-vs-rest)
    and balanced accuracy of the pooled predictions, with bootstrap intervals over subjects."""
    from alzmri.evaluation.metrics import subject_level
    from alzmri.evaluation.report import confidence_intervals

    subjects = subject_level(table, classes)
    ci = confidence_intervals(subjects, classes, n_resamples=n_resamples, level=0.95, seed=seed)
    return {"n_subjects": len(subjects), "n_scans": len(table), "auc": ci["macro_auc"], "balanced_accuracy": ci["balanced_accuracy"]}


def compare_arms(folders: dict[str, Path], pairs: list[tuple[str, str]], n_resamples: int, seed: int) -> list[dict[str, Any]]:
    """DeLong, McNemar and the paired balanced-accuracy difference of each pair, on the pooled predictions."""
    from alzmri.evaluation.compare_runs import compare_predictions

    rows = []
    for a, b in pairs:
        result = compare_predictions(folders[a] / "oof_predictions.tsv", folders[b] / "oof_predictions.tsv", "test", n_resamples, seed)
        for cls, d in result["delong"].items():
            diff = result["balanced_accuracy_difference"]
            rows.append({"a": a, "b": b, "class": cls, "n_subjects": result["n_subjects"], "auc_a": d["auc_a"], "auc_b": d["auc_b"], "auc_diff": d["diff"],
                         "auc_diff_low": d["low"], "auc_diff_high": d["high"], "delong_p": d["p_value"], "bacc_diff": diff["estimate"],
                         "bacc_diff_low": diff["low"], "bacc_diff_high": diff["high"], "mcnemar_p": result["mcnemar"]["p_value"]})  # fmt: skip
    return rows


def attention_ranking(arm_dir: Path, cache: Path, split_root: Path) -> pd.DataFrame:
    """Genetic columns ranked by the image tokens' attention, averaged over the held-out scans of every fold."""
    from alzmri.data.dataset import CachedVolumeDataset, select_scans
    from alzmri.data.genetics import WithGenetics
    from alzmri.data.splits import read_split_dir
    from alzmri.evaluation.predict import checkpoint_genetics, load_classifier
    from alzmri.fusion.attention import add_ranks, collect_attention, genetic_ranking
    from alzmri.preprocessing.cache import read_cache

    scans_all, _ = read_cache(cache)
    tables = []
    for run in sorted(arm_dir.glob("fold-*/checkpoints/best-loss.ckpt")):
        k = run.parent.parent.name.removeprefix("fold-")
        model, hp = load_classifier(run)
        genetics = checkpoint_genetics(hp)
        assert genetics is not None
        test = select_scans(scans_all, read_split_dir(split_root / f"fold-{k}")["test"], "test")
        test = genetics.select(test[test["diagnosis"].isin(hp["classes"])].reset_index(drop=True), "test")
        dataset = WithGenetics(CachedVolumeDataset(test, hp["classes"]), *genetics.inputs(test["participant_id"]))
        columns = list(genetics.encoder.groups)
        tables.append(genetic_ranking(collect_attention(model, dataset), columns, list(hp["classes"])).assign(fold=int(k)))
    if not tables:
        raise AlzmriError(f"{arm_dir} has no fold checkpoints")
    every = pd.concat(tables, ignore_index=True)
    mean = every.drop(columns=["rank", "value_norm_rank", "fold"]).groupby("column", sort=False).mean(numeric_only=True)
    mean["mean_fold_rank"] = every.groupby("column")["rank"].mean()
    return add_ranks(mean).sort_values("rank").reset_index()


def ablate(config: FusionAblationConfig) -> dict[str, Any]:
    """Run every arm's cross-validation on the same folds, then compare them (see the module docstring)."""
    from alzmri.data.inputs import read_inputs, spatial_dims
    from alzmri.evaluation.cross_validate import cross_validate, make_folds
    from alzmri.evaluation.predictions import read_predictions
    from alzmri.fusion.registry import DEFAULT_ENCODER

    out = Path(config.out)
    _, inputs = read_inputs(config.cache)
    encoder = config.encoder or DEFAULT_ENCODER[spatial_dims(inputs)]
    split_root = Path(config.split) if config.split is not None else make_folds(config)
    shared = config.model_dump(include=set(CrossValidateConfig.model_fields) - {"out", "split", "model", "encoder", "encoder_layer", "shuffle_genetics", "run_name", "freeze_encoder"})
    arms = list(config.arms)
    frozen_from = None
    if config.encoder_from_mri_only:
        if "mri_only" not in arms:
            raise AlzmriError("--encoder-from-mri-only takes each fold's encoder from the mri_only arm: keep mri_only in --arms")
        arms = ["mri_only"] + [a for a in arms if a != "mri_only"]  # its encoders first
        frozen_from = out / "mri_only"
    suffix = FROZEN if frozen_from is not None else ""
    fused = {arm for arm in arms if arm_settings(arm, encoder)["encoder"] is not None}  # the arms with an image encoder
    folders = {arm: out / (arm + suffix if arm in fused else arm) for arm in arms}
    settings = {arm: arm_settings(arm, encoder, config.encoder_layer, frozen_from if arm in fused else None) for arm in arms}
    for arm in arms:
        print(f"══ arm {arm}{' (frozen mri_only encoder)' if 'freeze_encoder' in settings[arm] else ''} " + "═" * 50)
        cross_validate(CrossValidateConfig(**shared, **settings[arm], out=folders[arm], split=split_root))
    rows, classes = [], None
    for arm in config.arms:
        pooled = pooled_predictions(folders[arm])
        write_manifest(pooled, folders[arm] / "oof_predictions.tsv")
        _, classes = read_predictions(folders[arm] / "oof_predictions.tsv")
        rows.append({"arm": arm, **{k: str(v) if isinstance(v, Path) else v for k, v in settings[arm].items()}, **arm_metrics(pooled, classes, config.bootstrap, config.seed)})
    pairs = [p for p in PAIRS if p[0] in config.arms and p[1] in config.arms]
    comparisons = compare_arms(folders, pairs, config.bootstrap, config.seed)
    attention = {arm: attention_ranking(folders[arm], config.cache, split_root) for arm in _ATTENTION_ARMS if arm in config.arms}
    table = pd.DataFrame([{"arm": r["arm"], "model": r["model"], "encoder": r["encoder"] or "", "n_subjects": r["n_subjects"],
                           "auc": r["auc"]["estimate"], "auc_low": r["auc"]["low"], "auc_high": r["auc"]["high"],
                           "balanced_accuracy": r["balanced_accuracy"]["estimate"], "bacc_low": r["balanced_accuracy"]["low"],
                           "bacc_high": r["balanced_accuracy"]["high"]} for r in rows])  # fmt: skip
    write_manifest(table, out / f"ablation{suffix}.tsv")
    if comparisons:
        write_manifest(pd.DataFrame(comparisons), out / f"comparisons{suffix}.tsv")
    for arm, ranking in attention.items():
        write_manifest(ranking, out / f"attention_genetic_{arm}{suffix}.tsv")
    result = {"cache": str(config.cache), "genetics": str(config.genetics), "folds": str(split_root), "encoder": encoder, "classes": classes,
              "encoder_from_mri_only": config.encoder_from_mri_only, "arms": rows, "comparisons": comparisons,
              "attention": {a: t.to_dict("records") for a, t in attention.items()}}  # fmt: skip
    atomic_write_text(out / f"ablation{suffix}.json", json.dumps(result, indent=2, default=_json) + "\n")
    print(format_ablation(result))
    return result


def _json(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


def format_ablation(result: dict[str, Any]) -> str:
    """The arms, the comparisons and the top-attended genetic columns as text."""
    lines = [f"pooled out-of-fold test predictions ({result['arms'][0]['n_subjects']} subjects; 95 % CI: subject bootstrap)",
             f"{'arm':20s} {'AUC':>24s} {'balanced accuracy':>24s}"]  # fmt: skip
    lines += [f"{r['arm']:20s} {_interval(r['auc']):>24s} {_interval(r['balanced_accuracy']):>24s}" for r in result["arms"]]
    if result["comparisons"]:
        lines.append("\npaired on the same subjects: A − B")
        for c in result["comparisons"]:
            lines.append(f"{c['a']:>18s} − {c['b']:<14s} AUC {c['auc_diff']:+.3f} [{c['auc_diff_low']:+.3f}, {c['auc_diff_high']:+.3f}] DeLong p = {c['delong_p']:.3g}; "
                         f"bal. acc. {c['bacc_diff']:+.3f} [{c['bacc_diff_low']:+.3f}, {c['bacc_diff_high']:+.3f}], McNemar p = {c['mcnemar_p']:.3g}")  # fmt: skip
    for arm, ranking in result["attention"].items():
        top = ", ".join(f"{r['column']} ({r['attention']:.3f})" for r in ranking[:5])
        lines.append(f"\n{arm}: most-attended genetic columns (image → genetics attention; uniform {ranking[0]['uniform']:.3f}): {top}")
    return "\n".join(lines)
