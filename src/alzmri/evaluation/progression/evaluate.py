"""``alzmri evaluate-progression``: generated futures against each held-out subject's true future.

For every held-out subject with images at adjacent stages (the same slice), the run's generator
for that transition is applied to the earlier image and compared with the later one, beside two
baselines a generator must beat to have learned anything about the person:

* **no change**: the input itself;
* **mean change**: the input plus the run's average training change of that transition.

The chain (each generator's output feeding the next) is run from every first-stage image and
scored against the true image at each later stage (drift), by a stage classifier (does the
predicted stage advance?) and by FID on the classifier's features (and on a user's feature
network). The change map (generated − input) is compared with where the synthetic truth planted
the change between the two visits (``--truth``, :mod:`alzmri.evaluation.progression.truth`) and,
on registered inputs, with atlas regions (enrichment: mean |change| in a region over mean
|change| in the brain; 1 = no preference). Intervals resample subjects (paired: every method on
the same resamples).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alzmri.data.audit import check_split
from alzmri.data.dataset import select_scans
from alzmri.data.inputs import describe, read_inputs, same_inputs, stored_inputs
from alzmri.data.slices.atlas import REGION_GROUPS, atlas_labels, region_masks
from alzmri.data.splits import read_split_dir
from alzmri.evaluation.config import EvaluateProgressionConfig
from alzmri.evaluation.progression.features import FeatureFile, StageClassifier, check_classifier_stages, fid
from alzmri.evaluation.progression.image_metrics import image_metrics
from alzmri.evaluation.progression.truth import planted_between, planted_strengths
from alzmri.evaluation.stats.bootstrap import bootstrap_many, mean_metric
from alzmri.generate.data import chain_starts, from_unit, load_stage_images, stage_members, transition_pairs
from alzmri.generate.run import CHECKPOINT, ProgressionRun, load_run
from alzmri.generate.samples import chain_figure
from alzmri.utils.atomic import atomic_path, atomic_write_text
from alzmri.utils.errors import AlzmriError
from alzmri.utils.jsonable import strict_json

METRICS = ("mse", "psnr", "ssim", "ms_ssim", "mse_brain", "psnr_brain", "ssim_brain", "lpips")
METHODS = ("generator", "no_change", "mean_change")
_HIGHER_BETTER = {"psnr", "ssim", "ms_ssim", "psnr_brain", "ssim_brain"}  # lpips and mse: lower


def check_inputs(run: ProgressionRun, inputs: Any, where: str) -> None:
    """Refuse inputs prepared differently from the run's training data."""
    expected = stored_inputs(run.inputs, "the progression run")
    if not same_inputs(expected, inputs):
        raise AlzmriError(f"{where} was prepared differently from the run's training data (run: {describe(expected)}; {where}: {describe(inputs)}); "
                          "use inputs made with the same preprocessing and slicing")  # fmt: skip


def _scores(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray, lpips: Any) -> dict[str, np.ndarray]:
    """The image metrics (and LPIPS when a network is given) of ``pred`` against ``truth``."""
    values = {k: v for k, v in image_metrics(pred, truth, mask).items() if k in METRICS}
    if lpips is not None:
        import torch

        with torch.no_grad():
            values["lpips"] = np.concatenate([lpips(torch.from_numpy(pred[i : i + 32]), torch.from_numpy(truth[i : i + 32])).numpy()
                                              for i in range(0, len(pred), 32)])  # fmt: skip
    return values


def _local_regions(images: Any, start: np.ndarray, end: np.ndarray, regions: dict[str, np.ndarray] | None, planted: tuple[np.ndarray, float] | None) -> dict[str, np.ndarray]:
    """The regions of each (start, end) pair: the truth's planted change between the two visits, and atlas regions of the start."""
    local = {} if planted is None else {"planted": planted_between(planted[0], images.rows, start, end) >= planted[1]}
    return local | {r: m[start] for r, m in (regions or {}).items()}


def _pair_table(run: ProgressionRun, images: Any, k: int, pairs: np.ndarray, regions: dict[str, np.ndarray] | None, lpips: Any = None,
                planted: tuple[np.ndarray, float] | None = None) -> pd.DataFrame:
    x, y, mask = images.images[pairs[:, 0]], images.images[pairs[:, 1]], images.masks[pairs[:, 1]]
    predictions = {"generator": run.apply(x, k), "no_change": x, "mean_change": np.clip(x + run.mean_change[k], -1, 1)}
    rows = images.rows.iloc[pairs[:, 0]]
    table = pd.DataFrame({"participant_id": rows["participant_id"].to_numpy(), "slice_id": rows["slice_id"].to_numpy(),
                          "from_session": rows["session_id"].to_numpy(), "to_session": images.rows["session_id"].to_numpy()[pairs[:, 1]],
                          "transition": f"{run.stages[k]} → {run.stages[k + 1]}", "step": k + 1})  # fmt: skip
    for method, pred in predictions.items():
        for name, values in _scores(pred, y, mask, lpips).items():
            table[f"{name}__{method}"] = values
    local = _local_regions(images, pairs[:, 0], pairs[:, 1], regions, planted)
    if local:
        brain = images.masks[pairs[:, 0], 0] > 0
        for kind, change in (("generator", predictions["generator"] - x), ("truth", y - x)):
            for region, value in enrichment(change, brain, local).items():
                table[f"enrichment_{region}__{kind}"] = value
    return table


def enrichment(change: np.ndarray, brain: np.ndarray, regions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per image and region: mean |change| in the region (inside the brain) over mean |change| in the brain (NaN: under 5 region pixels, or no change)."""
    magnitude = np.abs(change[:, change.shape[1] // 2])
    axes = tuple(range(1, magnitude.ndim))
    whole = (magnitude * brain).sum(axis=axes) / np.maximum(brain.sum(axis=axes), 1)
    out = {}
    for name, mask in regions.items():
        inside = mask & brain
        count = inside.sum(axis=axes)
        value = (magnitude * inside).sum(axis=axes) / np.maximum(count, 1) / np.maximum(whole, 1e-12)
        out[name] = np.where((count >= 5) & (whole > 0), value, np.nan)  # no change at all: no preference, not "avoids the region"
    return out


def _chain_tables(run: ProgressionRun, images: Any, classifier: StageClassifier | None, lpips: Any = None,
                  regions: dict[str, np.ndarray] | None = None, planted: tuple[np.ndarray, float] | None = None) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """One row per first-stage image and chain step (0 = the input): truth metrics where the true image exists, classifier stage."""
    stages = run.stages
    first, truths = chain_starts(images.rows, stages)
    x0 = images.images[first]
    steps = [x0, *run.chain(x0)] if len(first) else []
    tables = []
    cumulative = np.concatenate([np.zeros_like(run.mean_change[:1]), np.cumsum(run.mean_change, axis=0)])  # step s: sum of the first s mean changes
    for s, generated in enumerate(steps):
        rows = images.rows.iloc[first]
        table = pd.DataFrame({"participant_id": rows["participant_id"].to_numpy(), "slice_id": rows["slice_id"].to_numpy(),
                              "session_id": rows["session_id"].to_numpy(), "step": s, "stage": stages[s]})  # fmt: skip
        truth = truths[:, s]
        have = truth >= 0
        table["has_truth"] = have
        if s and have.any():
            predictions = {"generator": generated[have], "no_change": x0[have], "mean_change": np.clip(x0[have] + cumulative[s], -1, 1)}
            for method, pred in predictions.items():
                for name, values in _scores(pred, images.images[truth[have]], images.masks[truth[have]], lpips).items():
                    column = np.full(len(table), np.nan)
                    column[have] = values
                    table[f"{name}__{method}"] = column
            local = _local_regions(images, first[have], truth[have], regions, planted)
            if local:  # the change accumulated over s steps, generated and true
                brain = images.masks[first[have], 0] > 0
                for kind, change in (("generator", generated[have] - x0[have]), ("truth", images.images[truth[have]] - x0[have])):
                    for region, value in enrichment(change, brain, local).items():
                        column = np.full(len(table), np.nan)
                        column[have] = value
                        table[f"enrichment_{region}__{kind}"] = column
        if classifier is not None:
            probs, _ = classifier.run(from_unit(generated, run.scale))
            ranks = check_classifier_stages(classifier, stages)
            ordered = probs[:, [ranks[st] for st in stages]]
            table["expected_stage"] = ordered @ np.arange(len(stages)) / np.maximum(ordered.sum(axis=1), 1e-12)
            table["predicted_stage"] = [stages[i] for i in ordered.argmax(axis=1)]
            table["predicted_rank"] = ordered.argmax(axis=1)
        tables.append(table)
    return (pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()), dict(enumerate(steps))


def _ci(table: pd.DataFrame, columns: list[str], config: EvaluateProgressionConfig) -> dict[str, dict[str, float]]:
    columns = [c for c in columns if c in table.columns and table[c].notna().any()]
    if not columns or table.empty:
        return {}
    out = {}
    for column in columns:
        part = table[table[column].notna()]
        out[column] = bootstrap_many({column: mean_metric(column)}, part, n_resamples=config.bootstrap, seed=config.seed)[column]
        out[column]["n_subjects"] = int(part["participant_id"].nunique())
        out[column]["n_images"] = int(len(part))
    return out


def _with_differences(table: pd.DataFrame) -> pd.DataFrame:
    table = table.copy()
    for metric in METRICS:
        if f"{metric}__generator" in table.columns:
            for baseline in ("no_change", "mean_change"):
                table[f"{metric}__generator_minus_{baseline}"] = table[f"{metric}__generator"] - table[f"{metric}__{baseline}"]
    return table


def _fid_table(run: ProgressionRun, images: Any, steps: dict[int, np.ndarray], extractors: dict[str, Any]) -> list[dict[str, Any]]:
    """FID of generated images against the real images of the stage they claim, per feature network, with the no-change baseline."""
    members = stage_members(images.rows, run.stages)
    out = []
    for name, extract in extractors.items():
        real = {k: extract(from_unit(images.images[m], run.scale)) if len(m) else np.zeros((0, 1)) for k, m in enumerate(members)}
        for k in range(len(run.stages) - 1):
            source = images.images[members[k]]
            if not len(source) or len(real[k + 1]) < 2:
                continue
            generated = run.apply(source, k)
            out.append({"features": name, "kind": "one step", "stage": run.stages[k + 1], "from": run.stages[k],
                        "fid_generator": fid(extract(from_unit(generated, run.scale)), real[k + 1]),
                        "fid_no_change": fid(real[k], real[k + 1]),
                        "fid_mean_change": fid(extract(from_unit(np.clip(source + run.mean_change[k], -1, 1), run.scale)), real[k + 1]),
                        "n_generated": len(source), "n_real": len(real[k + 1])})  # fmt: skip
        starts = extract(from_unit(steps[0], run.scale)) if 0 in steps and len(steps[0]) else None  # the chains' inputs, not every first-stage image
        for s, generated in steps.items():
            if s == 0 or len(real[s]) < 2:
                continue
            out.append({"features": name, "kind": "chain", "stage": run.stages[s], "from": run.stages[0],
                        "fid_generator": fid(extract(from_unit(generated, run.scale)), real[s]),
                        "fid_no_change": fid(starts, real[s]) if starts is not None else float("nan"),
                        "fid_mean_change": float("nan"), "n_generated": len(generated), "n_real": len(real[s])})  # fmt: skip
    return out


def _stage_summary(chain: pd.DataFrame, stages: list[str], config: EvaluateProgressionConfig) -> dict[str, Any]:
    """Does the predicted stage advance along the chain? Per step: mean expected stage (CI), share predicted as the step's stage; per subject: advance at every step."""
    if chain.empty or "expected_stage" not in chain.columns:
        return {}
    per_step = {}
    for s, part in chain.groupby("step"):
        ci = bootstrap_many({"expected": mean_metric("expected_stage")}, part, n_resamples=config.bootstrap, seed=config.seed)["expected"]
        per_step[int(s)] = {"stage": stages[int(s)], "expected_stage": ci, "share_predicted_as_stage": float((part["predicted_rank"] == s).mean()),
                            "counts": {st: int((part["predicted_stage"] == st).sum()) for st in stages}}  # fmt: skip
    wide = chain.pivot_table(index=["participant_id", "slice_id"], columns="step", values="expected_stage")
    steps = sorted(wide.columns)
    increases = np.stack([(wide[b] > wide[a]).to_numpy() for a, b in zip(steps, steps[1:], strict=False)], axis=1) if len(steps) > 1 else np.zeros((len(wide), 0), bool)
    every = increases.all(axis=1) if increases.size else np.zeros(len(wide), bool)
    by_subject = pd.DataFrame({"participant_id": wide.index.get_level_values(0), "every": every.astype(float)})
    share = bootstrap_many({"every": mean_metric("every")}, by_subject, n_resamples=config.bootstrap, seed=config.seed)["every"]
    return {"per_step": per_step, "advances_every_step": share, "advances_per_step": [float(increases[:, i].mean()) for i in range(increases.shape[1])],
            "images": int(len(wide)), "subjects": int(by_subject["participant_id"].nunique())}  # fmt: skip


def evaluate_progression(config: EvaluateProgressionConfig) -> dict[str, Any]:
    """Score a run on the held-out subjects; writes tables, summary.json, report.md and figures; returns the summary."""
    run = load_run(config.run)
    cache, inputs = read_inputs(config.cache)
    check_inputs(run, inputs, f"cache {config.cache}")
    splits = read_split_dir(config.split)
    check_split(splits, config.split)
    rows = select_scans(cache, splits[config.data], config.data)
    seen = sorted(set(rows["participant_id"].astype(str)) & set(run.train_subjects))
    if seen:
        raise AlzmriError(f"{len(seen)} subjects of the {config.data} split were in the run's training data (e.g. {seen[0]}): use the split the run was trained with")
    chose = sorted(set(rows["participant_id"].astype(str)) & set(run.chosen_on))
    if chose:
        raise AlzmriError(f"{len(chose)} subjects of the {config.data} split chose this checkpoint's epoch (the lowest validation MSE, e.g. {chose[0]}): "
                          f"score the test split, or name the run's {CHECKPOINT} (not chosen on them)")  # fmt: skip
    rows = rows[rows["diagnosis"].isin(run.stages)]
    if rows.empty:
        raise AlzmriError(f"the {config.data} split has no images of the run's stages ({', '.join(run.stages)})")
    images, _ = load_stage_images(rows, run.spatial_dims, run.scale)
    if tuple(images.images.shape[1:]) != tuple(run.shape):
        raise AlzmriError(f"the cache's images are {'x'.join(map(str, images.images.shape[1:]))}, the run's {'x'.join(map(str, run.shape))}")
    classifier = StageClassifier(config.classifier) if config.classifier else None
    if classifier is not None:
        check_classifier_stages(classifier, run.stages)
        if not same_inputs(classifier.inputs, inputs):
            raise AlzmriError(f"the classifier {config.classifier} was trained on inputs prepared differently from the run's ({describe(classifier.inputs)}); train it on the same cache")
    extractors: dict[str, Any] = {}
    if classifier is not None:
        extractors["classifier"] = lambda a: classifier.run(a)[1]
    if config.feature_net:
        network = FeatureFile(config.feature_net)
        extractors[f"file:{Path(config.feature_net).name}"] = network.features
    lpips = None
    if config.lpips:
        from alzmri.models.lpips import load_lpips

        if run.spatial_dims != 2 or min(run.shape[1:]) < 32 or run.shape[0] not in (1, 3):
            raise AlzmriError(f"LPIPS is for 2D images of 1 or 3 channels and at least 32² (AlexNet's five levels); the run's images are {'x'.join(map(str, run.shape))}")
        lpips = load_lpips(list(config.lpips))
    out = Path(config.out) if config.out else run.folder / f"eval-{config.data}"
    out.mkdir(parents=True, exist_ok=True)

    labels = atlas_labels(images.rows, inputs, Path(config.cache), run.shape)
    regions = region_masks(labels) if labels is not None else None
    planted = (planted_strengths(images.rows, inputs, Path(config.cache), run.shape, config.truth), config.truth_level) if config.truth else None
    pairs = transition_pairs(images.rows, run.stages)
    pair_table = pd.concat([_pair_table(run, images, k, p, regions, lpips, planted) for k, p in enumerate(pairs) if len(p)],
                           ignore_index=True) if any(len(p) for p in pairs) else pd.DataFrame()  # fmt: skip
    chain, steps = _chain_tables(run, images, classifier, lpips, regions, planted)
    summary: dict[str, Any] = {"run": str(run.path), "pairing_trained": run.pairing, "stages": run.stages, "data": config.data,
                               "images": len(images), "subjects": int(images.rows["participant_id"].nunique()),
                               "true_future": bool(len(pair_table)), "bootstrap": config.bootstrap}  # fmt: skip
    if not len(pair_table):
        summary["note"] = "no held-out subject has images at adjacent stages: no true future exists here, so nothing below compares a generated image with the person's own later image"
    summary["transitions"] = {}
    if len(pair_table):
        wide = _with_differences(pair_table)
        metric_columns = [c for c in wide.columns if "__" in c]
        for label, part in wide.groupby("transition", sort=False):
            summary["transitions"][label] = _ci(part, metric_columns, config)
    summary["chain"] = {}
    scored = chain[chain.get("has_truth", pd.Series(dtype=bool)).astype(bool) & (chain["step"] > 0)] if not chain.empty else chain
    if not scored.empty and any(c.endswith("__generator") for c in scored.columns):
        wide = _with_differences(scored)
        for s, part in wide.groupby("step"):
            summary["chain"][run.stages[int(s)]] = _ci(part, [c for c in wide.columns if "__" in c], config)
    summary["predicted_stage"] = _stage_summary(chain, run.stages, config)
    summary["fid"] = _fid_table(run, images, steps, extractors)
    summary["regions"] = "atlas regions on the registered grid, each grown by 1 pixel" if regions is not None else "not available: the inputs are not registered to MNI152"
    if planted is not None:
        summary["planted"] = f"where the truth ({config.truth}) planted change between the two visits (strength ≥ {config.truth_level:g} of full scale)"

    _write_tables(out, pair_table, chain, summary)
    _figures(out, run, images, steps, chain)
    report = render_report(summary)
    atomic_write_text(out / "report.md", report)
    summary["out"] = str(out)
    return summary


OUTPUTS = ("pairs.tsv", "chain.tsv", "summary.json", "report.md", "chain_examples.png", "predicted_stage.png")


def _write_tables(out: Path, pairs: pd.DataFrame, chain: pd.DataFrame, summary: dict[str, Any]) -> None:
    for name in OUTPUTS:  # an earlier evaluation's files must not sit beside this one's
        (out / name).unlink(missing_ok=True)
    for name, table in (("pairs.tsv", pairs), ("chain.tsv", chain)):
        if not table.empty:
            with atomic_path(out / name) as tmp:
                table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    atomic_write_text(out / "summary.json", json.dumps(strict_json(summary), indent=2) + "\n")


def _figures(out: Path, run: ProgressionRun, images: Any, steps: dict[int, np.ndarray], chain: pd.DataFrame) -> None:
    if not steps:
        return
    first, truths = chain_starts(images.rows, run.stages)
    rows = []
    for j in range(min(4, len(first))):
        r = images.rows.iloc[first[j]]
        truth = [images.images[t] if t >= 0 else None for t in truths[j]]
        rows.append({"name": f"{r['participant_id']} {r['slice_id']}".strip(), "start": 0, "images": [steps[s][j] for s in sorted(steps)],
                     "truth": truth if any(t is not None for t in truth[1:]) else None})  # fmt: skip
    chain_figure(rows, run.stages, out / "chain_examples.png", title="held-out subjects: generated chain (top) and true later images (below, where known)")
    if "expected_stage" in chain.columns:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.2))
        for _, group in chain.groupby(["participant_id", "slice_id"]):
            ax.plot(group["step"], group["expected_stage"], color="0.75", lw=0.6)
        mean = chain.groupby("step")["expected_stage"].mean()
        ax.plot(mean.index, mean.values, "o-", color="C3", lw=2, label="mean")
        ax.plot(range(len(run.stages)), range(len(run.stages)), "--", color="C0", lw=1, label="the stage each step claims")
        ax.set_xticks(range(len(run.stages)), [f"{'input' if i == 0 else 'step ' + str(i)}\n{s}" for i, s in enumerate(run.stages)], fontsize=6)
        ax.set_yticks(range(len(run.stages)), run.stages, fontsize=6)
        ax.set_ylabel("classifier's expected stage", fontsize=7)
        ax.legend(fontsize=6)
        fig.tight_layout()
        with atomic_path(out / "predicted_stage.png") as tmp:
            fig.savefig(tmp, dpi=130, format="png")
        plt.close(fig)


def _fmt(ci: dict[str, float] | None, digits: int = 4) -> str:
    if not ci:
        return "–"
    return f"{ci['estimate']:.{digits}f} [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"


def render_report(summary: dict[str, Any]) -> str:
    """The summary as Markdown tables (generator vs baselines per transition and chain step; stages; FID; enrichment)."""
    lines = [f"# Progression evaluation ({summary['data']} subjects)", "",
             f"Run: `{summary['run']}` (trained {summary['pairing_trained']}); stages {' → '.join(summary['stages'])}; "
             f"{summary['images']} images of {summary['subjects']} subjects. Intervals: 95 % subject bootstrap ({summary['bootstrap']} resamples).", ""]  # fmt: skip
    if summary.get("note"):
        lines += [f"**{summary['note']}.**", ""]
    for title, block in (("One step from the real image (against the true next-stage image)", summary["transitions"]), ("The chain from the first stage (against the true image at each stage)", summary["chain"])):
        if not block:
            continue
        lines += [f"## {title}", ""]
        for label, cis in block.items():
            n = next((v for k, v in cis.items() if k.endswith("__generator")), {})
            lines += [f"### {label} ({n.get('n_images', 0)} images, {n.get('n_subjects', 0)} subjects)", "",
                      "| metric | generator | no change | mean change | generator − no change | generator − mean change |", "|---|---|---|---|---|---|"]  # fmt: skip
            for metric in METRICS:
                if f"{metric}__generator" not in cis:
                    continue
                better = "higher" if metric in _HIGHER_BETTER else "lower"
                lines.append(f"| {metric} ({better} is better) | " + " | ".join(_fmt(cis.get(f"{metric}__{m}")) for m in
                             ("generator", "no_change", "mean_change", "generator_minus_no_change", "generator_minus_mean_change")) + " |")  # fmt: skip
            regions = [r for r in ("planted", *REGION_GROUPS) if f"enrichment_{r}__generator" in cis]
            if regions:  # planted: where the truth changed the brain between the two visits (--truth)
                lines += ["", "| region | enrichment of the generated change | of the true change |", "|---|---|---|"]
                lines += [f"| {r} | {_fmt(cis.get(f'enrichment_{r}__generator'), 2)} | {_fmt(cis.get(f'enrichment_{r}__truth'), 2)} |" for r in regions]
            lines.append("")
    stage = summary.get("predicted_stage") or {}
    if stage:
        lines += ["## The classifier's stage along the chain", "", "| step | claims | expected stage (0 = first) | predicted as that stage |", "|---|---|---|---|"]
        for s, v in stage["per_step"].items():
            lines.append(f"| {s} | {v['stage']} | {_fmt(v['expected_stage'], 2)} | {v['share_predicted_as_stage']:.1%} |")
        lines += ["", f"Expected stage rises at every step for {_fmt(stage['advances_every_step'], 3)} of {stage['images']} chains ({stage['subjects']} subjects); "
                  f"per step: {', '.join(f'{x:.1%}' for x in stage['advances_per_step'])}.", ""]  # fmt: skip
    if summary.get("fid"):
        lines += ["## FID (features of the named network; generated vs the real images of the stage)", "", "| features | kind | from → stage | generator | no change | mean change | n generated / real |", "|---|---|---|---|---|---|---|"]
        for row in summary["fid"]:
            lines.append(f"| {row['features']} | {row['kind']} | {row['from']} → {row['stage']} | {row['fid_generator']:.3f} | {row['fid_no_change']:.3f} | "
                         f"{row['fid_mean_change']:.3f} | {row['n_generated']} / {row['n_real']} |")  # fmt: skip
        lines.append("")
    lines.append(f"Regions: {summary['regions']}." + (f" Planted: {summary['planted']}." if summary.get("planted") else ""))
    return "\n".join(lines) + "\n"
