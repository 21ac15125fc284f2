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
``--out`` (re-running resumes). Writes ``fusion_study.json`` and ``fusion_study.md`` under
``benchmarks/results/fusion_study``.
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
                  "| rank | column | planted effect | attention | mean rank over folds |", "|---|---|---|---|---|"]  # fmt: skip
        for r in ranking[:10]:
            planted = "APOE" if r["column"] == "apoe" else ("causal SNP" if r["column"] in causal else "null")
            lines.append(f"| {r['rank']} | {r['column']} | {planted} | {r['attention']:.4f} | {r['mean_fold_rank']:.1f} |")
        apoe = next(r for r in ranking if r["column"] == "apoe")
        lines.append(f"\nAPOE: rank {apoe['rank']} of {len(ranking)}; causal SNPs in the top 10: {sum(r['column'] in causal for r in ranking[:10])} of {len(causal)}")
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
    args = parser.parse_args()

    from alzmri.evaluation.config import FusionAblationConfig
    from alzmri.evaluation.fusion_ablation import ablate

    start = time.perf_counter()
    cache, genetics = build_cohort(args.out, args)
    lr_tag = ("" if args.lr == 3e-4 else f"-lr{args.lr:g}") + ("" if args.seed == 0 else f"-seed{args.seed}")
    tag = lr_tag + ("-frozen" if args.frozen else "")
    config = FusionAblationConfig(cache=cache, genetics=genetics, out=args.out / f"ablation{lr_tag}", folds=args.folds, epochs=args.epochs, patience=args.patience, lr=args.lr,
                                  encoder_from_mri_only=args.frozen,
                                  encoder="resnet10_3d", encoder_layer="layer3", progress=False, threads=args.threads, trackers=[], seed=args.seed)  # fmt: skip
    result = ablate(config)
    truth = json.loads((args.out / "bids" / "derivatives" / "synth" / "genetics_truth.json").read_text())
    args.results.mkdir(parents=True, exist_ok=True)
    summary = {"cohort": {k: getattr(args, k) for k in ("subjects", "atrophy", "snps", "causal", "odds_ratio")}, "folds": args.folds, "epochs": args.epochs, "lr": args.lr, "seed": args.seed,
               "patience": args.patience, "seconds": round(time.perf_counter() - start), "truth": truth, **result}  # fmt: skip
    (args.results / f"fusion_study{tag}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (args.results / f"fusion_study{tag}.md").write_text(markdown(result, truth))
    print(markdown(result, truth))


if __name__ == "__main__":
    main()
