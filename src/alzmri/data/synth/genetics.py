"""Synthetic genetics with a known truth: APOE genotypes and SNP dosages tied to each subject's disease.

Every subject gets a *risk* in [0, 1]: the rank of its diagnosis among the cohort's classes
(cross-sectional: CN 0, MCI 0.5, AD 1), or, in a longitudinal cohort (where everybody reaches
the last stage), the percentile of its own ``stage_factor`` (how much atrophy each stage brings).
Genotypes are drawn from allele frequencies that move with the risk, as in a case-control
sample (Hardy-Weinberg within each subject's risk level):

* **APOE**: the ε4 allele frequency goes from 0.14 at risk 0 to 0.38 at risk 1 (about the
  frequencies reported in cognitively normal and AD groups of European ancestry); the other
  alleles are ε3 (92 %) or ε2. Written as genotype strings (``e3/e4``).
* **SNPs** ``snp_001`` …: minor allele frequency 0.05–0.5; the first ``causal_snps`` of a
  shuffled order carry a per-allele odds ratio ``snp_odds_ratio`` between risk 0 and risk 1
  (allele frequency ``p·OR^r / (1 − p + p·OR^r)``), the rest none. 1 % of the SNP calls are
  missing (empty), as in real genotyping.

The draw depends only on the seed and the planned subjects, so the same cohort gets the same
table. ``derivatives/synth/genetics_truth.json`` names the causal SNPs and every frequency.
"""

from __future__ import annotations

from typing import Any

import numpy as np

APOE_E4_FREQUENCY = (0.14, 0.38)  # ε4 allele frequency at risk 0 and at risk 1
APOE_E2_SHARE = 0.08  # of the non-ε4 alleles
MISSING_RATE = 0.01


def _risks(subjects: list[Any], classes: tuple[str, ...], longitudinal: bool) -> np.ndarray:
    if longitudinal:
        factor = np.array([float(s.stage_factor) for s in subjects])
        return (np.argsort(np.argsort(factor, kind="stable"), kind="stable") / max(len(subjects) - 1, 1)).astype(float)
    rank = {c: i for i, c in enumerate(classes)}
    return np.array([rank[s.diagnosis] / max(len(classes) - 1, 1) for s in subjects], dtype=float)


def _at_risk(p: np.ndarray | float, odds_ratio: np.ndarray | float, risk: np.ndarray) -> np.ndarray:
    """The allele frequency at each risk level: odds of the allele multiplied by ``odds_ratio ** risk``."""
    scaled = np.asarray(p) * np.asarray(odds_ratio) ** risk
    return scaled / (1.0 - np.asarray(p) + scaled)


def plan_genetics(subjects: list[Any], classes: tuple[str, ...], longitudinal: bool, snps: int, causal: int, odds_ratio: float,
                  seed: int) -> tuple[list[str], list[list[str]], dict[str, Any]]:
    """The genetics table (header, rows) and its truth.

    Args:
        subjects: the planned cohort (``participant_id``, ``diagnosis``, ``stage_factor``).
        classes: the cohort's diagnoses in order of severity.
        longitudinal: whether risk follows ``stage_factor`` (longitudinal cohorts) instead of the diagnosis.
        snps: number of SNP columns.
        causal: how many of them carry the effect.
        odds_ratio: per-allele odds ratio of a causal SNP between risk 0 and risk 1.
        seed: the cohort's seed.
    """
    rng = np.random.default_rng([int(seed), 0x6E6E])
    risk = _risks(subjects, classes, longitudinal)
    e4_odds = APOE_E4_FREQUENCY[1] / (1 - APOE_E4_FREQUENCY[1]) / (APOE_E4_FREQUENCY[0] / (1 - APOE_E4_FREQUENCY[0]))
    e4 = _at_risk(APOE_E4_FREQUENCY[0], e4_odds, risk)
    alleles = []
    for p in e4:
        pair = ["e4" if rng.random() < p else ("e2" if rng.random() < APOE_E2_SHARE else "e3") for _ in range(2)]
        alleles.append("/".join(sorted(pair)))
    maf = rng.uniform(0.05, 0.5, size=snps)
    order = rng.permutation(snps)
    effect = np.ones(snps)
    effect[order[: min(causal, snps)]] = odds_ratio
    names = [f"snp_{i + 1:03d}" for i in range(snps)]
    frequency = _at_risk(maf[None, :], effect[None, :], risk[:, None])  # (subjects, snps)
    dosage = rng.binomial(2, frequency)
    missing = rng.random(dosage.shape) < MISSING_RATE
    rows = [[s.participant_id, alleles[i], *("" if missing[i, j] else str(int(dosage[i, j])) for j in range(snps))] for i, s in enumerate(subjects)]
    truth = {
        "risk": "percentile of stage_factor" if longitudinal else f"rank of the diagnosis among {', '.join(classes)} (0 to 1)",
        "apoe_e4_allele_frequency": {"risk_0": APOE_E4_FREQUENCY[0], "risk_1": APOE_E4_FREQUENCY[1]},
        "causal_snps": sorted(names[j] for j in order[: min(causal, snps)]),
        "odds_ratio_per_allele": odds_ratio,
        "minor_allele_frequency": {n: round(float(m), 4) for n, m in zip(names, maf, strict=True)},
        "missing_rate": MISSING_RATE,
    }
    return ["participant_id", "APOE", *names], rows, truth
