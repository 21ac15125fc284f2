"""Does fusing genetics with MRI help, on a cohort where we know it should? (issue 16)

Usage (from the repository root, after ``make setup``)::

    .venv/bin/python benchmarks/fusion_study.py                    # 300 subjects, 5 folds, 20 epochs
    .venv/bin/python benchmarks/fusion_study.py --subjects 120 --epochs 5 --folds 3   # a quick look

A synthetic cohort (``alzmri synth``: CN/AD, one scan per subject at 2 mm, AD atrophy x
``--atrophy``) with synthetic genetics: APOE ε4 frequency 0.14 (CN) to 0.38 (AD), ``--snps`` SNP
dosages of which ``--causal`` carry a per-allele odds ratio ``--odds-ratio`` between CN and AD,
the rest null, 1 % of cells missing. MRI and genetics each carry part of the diagnosis,
independently given the diagnosis, so a model that reads both should beat either alone, and
one fed other people's genes (the shuffled control) should not beat MRI-only.

The scans are preprocessed like the demo (2 mm, 32³); ``alzmri ablate-fusion`` then trains
genetics_only, mri_only (resnet10_3d), fusion_concat, fusion_xattn and shuffled_genetics on the
same subject-level 5 folds (the fusion encoder: resnet10_3d read at ``layer3``, 2³ = 8 image
tokens at 32³) and compares them on the pooled out-of-fold predictions. Everything is cached in
``--out`` (re-running resumes). Writes ``PREFIX[-seedS][-frozen].json`` and ``.md`` under
``benchmarks/results/fusion_study`` (``--prefix``, default ``fusion_study``).

Several seeds (other folds and initialisations, the same cohort), then their mean::

    for s in 0 1 2; do .venv/bin/python benchmarks/fusion_study.py --atrophy 0.8 --frozen --seed $s --prefix mid-mri; done
    .venv/bin/python benchmarks/fusion_study.py --frozen --combine-seeds 0 1 2 --prefix mid-mri

``--combine-seeds`` averages each arm's out-of-fold probabilities over the seeds (every subject
is scored, in every seed, by a model that never saw it), compares the arms on those, lists each
seed's AUC, and recomputes each seed's attention ranking from its fold checkpoints
(``PREFIX-seeds0-1-2[-frozen].json/.md``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def build_cohort(out: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    from alzmri.cli.commands.demo import DEMO_PREPROCESS
    from alzmri.data.synth import SynthConfig, synthesize_cohort
    from alzmri.io.bids import load_scans
    from alzmri.preprocessing.runner import preprocess_scans

    bids, cache = out / "bids", out / "cache"
    synthesize_cohort(SynthConfig(subjects=args.subjects, classes=["CN", "AD"], sessions=(1, 1), voxel_size=2.0, atrophy_scale=args.atrophy, snps=args.snps,
                                  causal_snps=args.causal, snp_odds_ratio=args.odds_ratio, seed=0, workers=args.threads), bids, progress=True)  # fmt: skip
    preprocess_scans(load_scans(bids), cache, DEMO_PREPROCESS.model_copy(update={"size": 32, "spacing": 2.0}), workers=args.threads, report=False)
    return cache, bids / "phenotype" / "genetics.tsv"


def markdown(result: dict[str, Any], truth: dict[str, Any]) -> str:
    lines = ["| arm | model | AUC [95 % CI] | balanced accuracy [95 % CI] |", "|---|---|---|---|"]
    for r in result["arms"]:
        model = r["model"] + (f" (encoder {r['encoder']}" + (f" at {r['encoder_layer']}" if r.get("encoder_layer") else "") + ")" if r["encoder"] else "")
        auc, bacc = r["auc"], r["balanced_accuracy"]
        lines.append(f"| {r['arm']} | {model} | {auc['estimate']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}] | {bacc['estimate']:.3f} [{bacc['low']:.3f}, {bacc['high']:.3f}] |")
    lines += ["", "| A − B (same subjects) | AUC difference [95 % CI] | DeLong p | balanced-accuracy difference [95 % CI] | McNemar p |", "|---|---|---|---|---|"]
    for c in result["comparisons"]:
        lines.append(f"| {c['a']} − {c['b']} | {c['auc_diff']:+.3f} [{c['auc_diff_low']:+.3f}, {c['auc_diff_high']:+.3f}] | {c['delong_p']:.2g} "
                     f"| {c['bacc_diff']:+.3f} [{c['bacc_diff_low']:+.3f}, {c['bacc_diff_high']:+.3f}] | {c['mcnemar_p']:.2g} |")  # fmt: skip
    causal = set(truth["causal_snps"])
    for arm, ranking in result["attention"].items():
        lines += ["", f"{arm}: genetic columns by attention from the image tokens (mean over the held-out scans of every fold; uniform = {ranking[0]['uniform']:.4f})", "",
                  "| rank | column | planted effect | attention | mean rank over folds | value-norm share (rank) |", "|---|---|---|---|---|---|"]  # fmt: skip
        for r in ranking[:10]:
            norm = f"{r['value_norm_share']:.4f} ({r['value_norm_rank']})" if "value_norm_share" in r else "–"
            lines.append(f"| {r['rank']} | {r['column']} | {planted_effect(r['column'], causal)} | {r['attention']:.4f} | {r['mean_fold_rank']:.1f} | {norm} |")
        apoe = next(r for r in ranking if r["column"] == "apoe")
        lines.append(f"\nAPOE: rank {apoe['rank']} of {len(ranking)}; causal SNPs in the top 10: {sum(r['column'] in causal for r in ranking[:10])} of {len(causal)}")
        if "value_norm_share" in apoe:
            by_norm = sorted(ranking, key=lambda r: r["value_norm_rank"])
            lines.append(f"By attention-weighted value norm: APOE rank {apoe['value_norm_rank']} of {len(ranking)}; "
                         f"causal SNPs in the top 10: {sum(r['column'] in causal for r in by_norm[:10])} of {len(causal)}")  # fmt: skip
    return "\n".join(lines) + "\n"


def planted_effect(column: str, causal: set[str]) -> str:
    return "APOE" if column == "apoe" else ("causal SNP" if column in causal else "null")


def run_tag(lr: float, seed: int) -> str:
    """The part of an ablation folder's (and results file's) name that says its learning rate and seed."""
    return ("" if lr == 3e-4 else f"-lr{lr:g}") + ("" if seed == 0 else f"-seed{seed}")


def seed_dir(out: Path, lr: float, seed: int) -> Path:
    return out / f"ablation{run_tag(lr, seed)}"


def combine_seeds(args: argparse.Namespace) -> None:
    """Each arm's out-of-fold probabilities averaged over the seeds' ablations (each subject scored, in every seed, by a model that never saw it), then compared."""
    import pandas as pd

    from alzmri.evaluation.fusion_ablation import FROZEN, PAIRS, arm_metrics, attention_ranking, compare_arms
    from alzmri.evaluation.predictions import read_predictions
    from alzmri.io.manifest import write_manifest

    suffix = FROZEN if args.frozen else ""
    arms = ["genetics_only", "mri_only", "fusion_concat", "fusion_xattn", "shuffled_genetics"]
    folder = {arm: arm if arm in ("genetics_only", "mri_only") else arm + suffix for arm in arms}
    lr_part = run_tag(args.lr, 0)
    records = [args.results / f"{args.prefix}{run_tag(args.lr, seed)}{suffix}.json" for seed in args.combine_seeds]
    cohorts = [json.loads(r.read_text())["cohort"] for r in records if r.is_file()]
    if len(cohorts) != len(records) or any(c != cohorts[0] for c in cohorts):
        raise SystemExit(f"the seeds' results ({', '.join(map(str, records))}) are missing or record different cohorts")
    cohort = cohorts[0]
    combined = args.out / f"seeds-mean{lr_part}{suffix}"
    truth = json.loads((args.out / "bids" / "derivatives" / "synth" / "genetics_truth.json").read_text())
    causal = set(truth["causal_snps"])
    per_seed, rows, folders = {}, [], {}
    for arm in arms:
        tables = []
        for seed in args.combine_seeds:
            path = seed_dir(args.out, args.lr, seed) / folder[arm] / "oof_predictions.tsv"
            if not path.is_file():
                raise SystemExit(f"{path} is missing: run the study with --seed {seed} first")
            table, classes = read_predictions(path)
            tables.append(table.set_index(["participant_id", "session_id"]).sort_index())
            per_seed[(arm, seed)] = arm_metrics(table, classes, args.bootstrap, seed)["auc"]["estimate"]
        probs = [f"prob_{c}" for c in classes]
        if any(not t.index.equals(tables[0].index) or not t["diagnosis"].equals(tables[0]["diagnosis"]) for t in tables):
            raise SystemExit(f"the seeds' {arm} predictions do not score the same scans with the same labels")
        mean = tables[0].copy()
        mean[probs] = sum(t[probs] for t in tables) / len(tables)
        mean["predicted"] = mean[probs].idxmax(axis=1).str.removeprefix("prob_")
        folders[arm] = combined / arm
        folders[arm].mkdir(parents=True, exist_ok=True)
        write_manifest(mean.reset_index().drop(columns=["fold"], errors="ignore"), folders[arm] / "oof_predictions.tsv")
        rows.append({"arm": arm, **arm_metrics(mean.reset_index(), classes, args.bootstrap, 0)})
    comparisons = compare_arms(folders, list(PAIRS), args.bootstrap, 0)
    rankings = {}
    for arm in ("fusion_xattn", "shuffled_genetics"):
        for seed in args.combine_seeds:
            ranking = attention_ranking(seed_dir(args.out, args.lr, seed) / folder[arm], args.out / "cache", seed_dir(args.out, args.lr, seed) / "folds")
            rankings[(arm, seed)] = ranking.set_index("column")
    summary = {"seeds": args.combine_seeds, "frozen": args.frozen, "cohort": cohort, "per_seed_auc": {f"{a}/{s}": v for (a, s), v in per_seed.items()}, "arms": rows, "comparisons": comparisons,
               "attention": {f"{a}/{s}": t.reset_index().to_dict("records") for (a, s), t in rankings.items()}, "truth": truth}  # fmt: skip
    name = f"{args.prefix}{lr_part}-seeds{'-'.join(map(str, args.combine_seeds))}{suffix}"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    text = seeds_markdown(rows, comparisons, per_seed, rankings, args.combine_seeds, causal)
    (args.results / f"{name}.md").write_text(text)
    print(text)


def seeds_markdown(rows: list[dict[str, Any]], comparisons: list[dict[str, Any]], per_seed: dict[tuple[str, int], float],
                   rankings: dict[tuple[str, int], Any], seeds: list[int], causal: set[str]) -> str:  # fmt: skip
    from alzmri.fusion.attention import add_ranks

    lines = ["| arm | AUC per seed (" + ", ".join(map(str, seeds)) + ") | AUC of the seed-mean prediction [95 % CI] | balanced accuracy [95 % CI] |", "|---|---|---|---|"]
    for r in rows:
        auc, bacc = r["auc"], r["balanced_accuracy"]
        each = " / ".join(f"{per_seed[(r['arm'], s)]:.3f}" for s in seeds)
        lines.append(f"| {r['arm']} | {each} | {auc['estimate']:.3f} [{auc['low']:.3f}, {auc['high']:.3f}] | {bacc['estimate']:.3f} [{bacc['low']:.3f}, {bacc['high']:.3f}] |")
    lines += ["", "| A − B (same subjects, seed-mean predictions) | AUC difference [95 % CI] | DeLong p | balanced-accuracy difference [95 % CI] | McNemar p |", "|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c['a']} − {c['b']} | {c['auc_diff']:+.3f} [{c['auc_diff_low']:+.3f}, {c['auc_diff_high']:+.3f}] | {c['delong_p']:.2g} "
                     f"| {c['bacc_diff']:+.3f} [{c['bacc_diff_low']:+.3f}, {c['bacc_diff_high']:+.3f}] | {c['mcnemar_p']:.2g} |")  # fmt: skip
    for arm in ("fusion_xattn", "shuffled_genetics"):
        tables = [rankings[(arm, s)] for s in seeds]
        mean = add_ranks(sum(t[["attention", "value_norm_share"]] for t in tables) / len(tables))
        uniform = 1 / len(mean)
        lines += ["", f"{arm}: genetic columns, attention and value-norm share averaged over the seeds (uniform = {uniform:.4f})", "",
                  "| column | planted effect | attention (rank) | value-norm share (rank) | attention rank per seed | value-norm rank per seed |", "|---|---|---|---|---|---|"]  # fmt: skip
        for column, r in mean.sort_values("value_norm_rank").head(10).iterrows():
            lines.append(f"| {column} | {planted_effect(column, causal)} | {r['attention']:.4f} ({int(r['rank'])}) | {r['value_norm_share']:.4f} ({int(r['value_norm_rank'])}) | "
                         + " / ".join(str(t.loc[column, "rank"]) for t in tables) + " | " + " / ".join(str(t.loc[column, "value_norm_rank"]) for t in tables) + " |")
        top = {key: set(mean.sort_values(key).head(10).index) for key in ("rank", "value_norm_rank")}
        lines.append(f"\nAPOE: attention rank {mean.loc['apoe', 'rank']} (per seed " + " / ".join(str(t.loc['apoe', 'rank']) for t in tables)
                     + f"), value-norm rank {mean.loc['apoe', 'value_norm_rank']} (per seed " + " / ".join(str(t.loc['apoe', 'value_norm_rank']) for t in tables)
                     + f") of {len(mean)}; causal SNPs in the top 10: {len(top['rank'] & causal)} of {len(causal)} by attention, {len(top['value_norm_rank'] & causal)} by value norm")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/alzmri-fusion-study"))
    parser.add_argument("--subjects", type=int, default=300)
    parser.add_argument("--atrophy", type=float, default=1.0)
    parser.add_argument("--snps", type=int, default=40)
    parser.add_argument("--causal", type=int, default=8)
    parser.add_argument("--odds-ratio", type=float, default=2.0)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-4, help="learning rate of every arm (train's default 3e-4)")
    parser.add_argument("--frozen", action="store_true", help="two-stage: the fusion arms take each fold's mri_only encoder, frozen (--encoder-from-mri-only)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and of every arm's training (the cohort stays seed 0)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "fusion_study")
    parser.add_argument("--prefix", default="fusion_study", help="file-name prefix of the results (one per cohort)")
    parser.add_argument("--combine-seeds", type=int, nargs="+", metavar="S",
                        help="after the study has run with each of these --seed values: average each arm's out-of-fold probabilities over them and compare")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the seed-mean comparison")
    args = parser.parse_args()
    if args.combine_seeds:
        combine_seeds(args)
        return

    from alzmri.evaluation.config import FusionAblationConfig
    from alzmri.evaluation.fusion_ablation import ablate

    start = time.perf_counter()
    cache, genetics = build_cohort(args.out, args)
    lr_tag = run_tag(args.lr, args.seed)
    tag = lr_tag + ("-frozen" if args.frozen else "")
    config = FusionAblationConfig(cache=cache, genetics=genetics, out=args.out / f"ablation{lr_tag}", folds=args.folds, epochs=args.epochs, patience=args.patience, lr=args.lr,
                                  encoder_from_mri_only=args.frozen,
                                  encoder="resnet10_3d", encoder_layer="layer3", progress=False, threads=args.threads, trackers=[], seed=args.seed)  # fmt: skip
    result = ablate(config)
    truth = json.loads((args.out / "bids" / "derivatives" / "synth" / "genetics_truth.json").read_text())
    args.results.mkdir(parents=True, exist_ok=True)
    summary = {"cohort": {k: getattr(args, k) for k in ("subjects", "atrophy", "snps", "causal", "odds_ratio")}, "folds": args.folds, "epochs": args.epochs, "lr": args.lr, "seed": args.seed,
               "patience": args.patience, "seconds": round(time.perf_counter() - start), "truth": truth, **result}  # fmt: skip
    (args.results / f"{args.prefix}{tag}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (args.results / f"{args.prefix}{tag}.md").write_text(markdown(result, truth))
    print(markdown(result, truth))


if __name__ == "__main__":
    main()
