"""Tests of alzmri.evaluation.stats: bootstrap, Bayesian clinical view, paired tests, calibration."""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import balanced_accuracy_score, brier_score_loss, roc_auc_score

from alzmri.evaluation.stats import (
    WeightedMetric,
    accuracy_metric,
    auc_metric,
    balanced_accuracy_metric,
    bayesian_correlated_ttest,
    beta_posterior,
    bootstrap_ci,
    bootstrap_many,
    brier_score,
    choose_threshold,
    corrected_resampled_ttest,
    delong_ci,
    delong_test,
    expected_calibration_error,
    kfold_summary,
    likelihood_ratio_posteriors,
    likelihood_ratios,
    mcnemar_test,
    mean_metric,
    predictive_value_posteriors,
    predictive_values,
    reliability_curve,
    sensitivity_specificity_posteriors,
)
from alzmri.utils.errors import AlzmriError

# --------------------------------------------------------------------------- helpers


def predictions_table(n_subjects: int = 150, seed: int = 0, sd_subject: float = 1.0, sd_scan: float = 0.5) -> pd.DataFrame:
    """A predictions table with 1-3 correlated sessions per subject (subject-level diagnosis)."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_subjects):
        ad = rng.random() < 0.5
        mu = 1.0 * ad + rng.normal(0, sd_subject)
        for _ in range(rng.integers(1, 4)):
            score = mu + rng.normal(0, sd_scan)
            rows.append((f"sub-{s:03d}", "AD" if ad else "CN", score, "AD" if score > 0.5 else "CN"))
    return pd.DataFrame(rows, columns=["participant_id", "diagnosis", "prob_AD", "predicted"])


def _delong_direct(y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> dict[str, float]:
    """DeLong, DeLong & Clarke-Pearson (1988), straight from the paper with explicit loops.

    X = scores of the positive (diseased) cases, Y = scores of the negatives;
    psi(X, Y) = 1 if Y < X, 1/2 if Y == X, 0 if Y > X. theta = (1/mn) sum_i sum_j psi;
    V10(X_i) = (1/n) sum_j psi(X_i, Y_j); V01(Y_j) = (1/m) sum_i psi(X_i, Y_j);
    S10_rs = sum_i (V10_r(X_i) - theta_r)(V10_s(X_i) - theta_s) / (m - 1), S01 likewise with
    n - 1; S = S10/m + S01/n; z = (theta_a - theta_b) / sqrt(S_aa + S_bb - 2 S_ab).
    """

    def psi(x: float, yv: float) -> float:
        return 1.0 if yv < x else (0.5 if yv == x else 0.0)

    models = [list(map(float, scores_a)), list(map(float, scores_b))]
    pos = [i for i in range(len(y)) if y[i]]
    neg = [j for j in range(len(y)) if not y[j]]
    m, n = len(pos), len(neg)
    theta, v10, v01 = [], [], []
    for s in models:
        row10 = [sum(psi(s[i], s[j]) for j in neg) / n for i in pos]
        row01 = [sum(psi(s[i], s[j]) for i in pos) / m for j in neg]
        theta.append(sum(psi(s[i], s[j]) for i in pos for j in neg) / (m * n))
        v10.append(row10)
        v01.append(row01)
    cov = [[0.0, 0.0], [0.0, 0.0]]
    for r in range(2):
        for t in range(2):
            s10 = sum((v10[r][i] - theta[r]) * (v10[t][i] - theta[t]) for i in range(m)) / (m - 1)
            s01 = sum((v01[r][j] - theta[r]) * (v01[t][j] - theta[t]) for j in range(n)) / (n - 1)
            cov[r][t] = s10 / m + s01 / n
    var = cov[0][0] + cov[1][1] - 2 * cov[0][1]
    z = (theta[0] - theta[1]) / math.sqrt(var)
    return {
        "auc_a": theta[0],
        "auc_b": theta[1],
        "var_a": cov[0][0],
        "var_b": cov[1][1],
        "cov": cov[0][1],
        "z": z,
        "p_value": math.erfc(abs(z) / math.sqrt(2)),
    }


# --------------------------------------------------------------------------- bootstrap


def _simulate_cluster_data(rng: np.random.Generator, n_subjects: int, kappa: float, sd_scan: float) -> pd.DataFrame:
    """Subjects with 1-3 strongly correlated sessions; known true accuracy 0.8 and AUC.

    Accuracy: subject i has P(correct) = p_i ~ Beta(0.8 kappa, 0.2 kappa), shared by its
    sessions, so the scan-level accuracy targets E[p_i] = 0.8 and the within-subject
    correlation is 1 / (1 + kappa). AUC: subject mean mu_i ~ N(delta * y_i, 1) and session
    score mu_i + N(0, sd_scan^2); every positive/negative pair comes from two different
    subjects, so the true AUC is Phi(delta / sqrt(2 (1 + sd_scan^2))).
    """
    sessions = rng.integers(1, 4, size=n_subjects)
    y = rng.random(n_subjects) < 0.5
    p = rng.beta(0.8 * kappa, 0.2 * kappa, size=n_subjects)
    mu = 1.0 * y + rng.normal(0, 1, size=n_subjects)
    subj = np.repeat(np.arange(n_subjects), sessions)
    n_rows = subj.size
    return pd.DataFrame(
        {
            "participant_id": subj,
            "row_id": np.arange(n_rows),
            "correct": (rng.random(n_rows) < p[subj]).astype(float),
            "diagnosis": np.where(y[subj], "AD", "CN"),
            "prob_AD": mu[subj] + rng.normal(0, sd_scan, size=n_rows),
        }
    )


def test_subject_bootstrap_covers_truth_and_scan_bootstrap_undercovers() -> None:
    """~95 % coverage when resampling subjects; clearly less when resampling scans.

    200 simulated studies of 100 subjects, each with 1-3 sessions whose outcomes are
    strongly correlated (within-subject correlation 0.8 for correctness). For speed each
    interval uses 500 resamples (not the default 2,000) and the vectorised metrics.
    """
    true_acc = 0.8
    delta, sd_scan = 1.0, 0.3
    true_auc = stats.norm.cdf(delta / np.sqrt(2 * (1 + sd_scan**2)))
    rng = np.random.default_rng(12345)
    metrics = {"acc": mean_metric("correct"), "auc": auc_metric("AD")}
    hits = {(g, m): 0 for g in ("participant_id", "row_id") for m in metrics}
    n_sim = 200
    for sim in range(n_sim):
        table = _simulate_cluster_data(rng, n_subjects=100, kappa=0.25, sd_scan=sd_scan)
        for group in ("participant_id", "row_id"):
            ci = bootstrap_many(metrics, table, group_col=group, n_resamples=500, seed=sim)
            hits[group, "acc"] += ci["acc"]["low"] <= true_acc <= ci["acc"]["high"]
            hits[group, "auc"] += ci["auc"]["low"] <= true_auc <= ci["auc"]["high"]
    coverage = {k: v / n_sim for k, v in hits.items()}
    for m in metrics:
        assert 0.90 <= coverage["participant_id", m] <= 0.99, coverage
        # the naive scan-level bootstrap ignores the clustering: intervals too narrow
        assert coverage["row_id", m] < 0.88, coverage
        assert coverage["row_id", m] < coverage["participant_id", m] - 0.06, coverage


def test_resamples_draw_whole_subjects_with_replacement() -> None:
    table = predictions_table(n_subjects=40, seed=1)
    sizes = table.groupby("participant_id").size()
    seen: list[pd.Series] = []

    def record(sub: pd.DataFrame) -> float:
        seen.append(sub.groupby("participant_id").size())
        return float(len(sub))

    bootstrap_ci(record, table, n_resamples=50, seed=3)
    assert len(seen) == 51  # the full table once, then one call per resample
    repeated = 0
    for counts in seen[1:]:
        multiplicity = counts / sizes[counts.index]
        assert np.allclose(multiplicity, np.round(multiplicity))  # whole subjects only
        assert multiplicity.sum() == pytest.approx(40)  # n_subjects draws per resample
        repeated += int((multiplicity > 1).any())
    assert repeated == 50  # drawing 40 of 40 with replacement repeats someone (almost surely)


def test_weighted_fast_path_equals_plain_callables() -> None:
    table = predictions_table(n_subjects=60, seed=2)
    plain = {
        "auc": lambda t: roc_auc_score(t["diagnosis"] == "AD", t["prob_AD"]),
        "acc": lambda t: float((t["diagnosis"] == t["predicted"]).mean()),
        "bal": lambda t: balanced_accuracy_score(t["diagnosis"], t["predicted"]),
    }
    fast = {"auc": auc_metric("AD"), "acc": accuracy_metric(), "bal": balanced_accuracy_metric()}
    for method in ("percentile", "basic", "bca"):
        a = bootstrap_many(plain, table, n_resamples=100, seed=7, method=method)
        b = bootstrap_many(fast, table, n_resamples=100, seed=7, method=method)
        for name in plain:
            for key in ("estimate", "low", "high"):
                assert a[name][key] == pytest.approx(b[name][key], abs=1e-12), (method, name, key)
            assert a[name]["n_valid"] == b[name]["n_valid"] == 100
    # the metrics themselves, with unit weights, equal sklearn on the full table
    assert fast["auc"](table) == pytest.approx(roc_auc_score(table["diagnosis"] == "AD", table["prob_AD"]), abs=1e-12)
    assert fast["bal"](table) == pytest.approx(balanced_accuracy_score(table["diagnosis"], table["predicted"]))


def test_bootstrap_interval_methods_relate_as_defined() -> None:
    table = predictions_table(n_subjects=100, seed=4)
    pct = bootstrap_ci(auc_metric("AD"), table, n_resamples=400, seed=1)
    basic = bootstrap_ci(auc_metric("AD"), table, n_resamples=400, seed=1, method="basic")
    est = pct["estimate"]
    assert basic["low"] == pytest.approx(2 * est - pct["high"])
    assert basic["high"] == pytest.approx(2 * est - pct["low"])
    bca = bootstrap_ci(auc_metric("AD"), table, n_resamples=400, seed=1, method="bca")
    assert bca["low"] < est < bca["high"]
    assert abs(bca["high"] - bca["low"] - (pct["high"] - pct["low"])) < 0.05
    # same seed -> same draws -> same interval; another seed -> different
    assert bootstrap_ci(auc_metric("AD"), table, n_resamples=400, seed=1) == pct
    assert bootstrap_ci(auc_metric("AD"), table, n_resamples=400, seed=2) != pct


def test_bootstrap_matches_scipy_with_one_row_per_subject() -> None:
    """With one row per subject the cluster bootstrap is the ordinary one: compare with scipy.

    Different random draws, so agreement is up to Monte Carlo error (20,000 resamples each).
    """
    x = np.random.default_rng(0).exponential(size=60)  # skewed: BCa differs from percentile
    table = pd.DataFrame({"participant_id": np.arange(60), "x": x})
    for ours, theirs in (("percentile", "percentile"), ("basic", "basic"), ("bca", "BCa")):
        ci = bootstrap_ci(mean_metric("x"), table, n_resamples=20000, method=ours, seed=1)
        ref = stats.bootstrap((x,), np.mean, n_resamples=20000, method=theirs, rng=2).confidence_interval
        assert ci["low"] == pytest.approx(ref.low, abs=0.012), ours
        assert ci["high"] == pytest.approx(ref.high, abs=0.012), ours


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
def test_undefined_resamples_are_dropped_and_counted() -> None:
    # 1 positive subject among 6: about (5/6)^6 = 33 % of resamples have no positive
    table = pd.DataFrame(
        {
            "participant_id": [0, 0, 1, 2, 2, 3, 4, 5],
            "diagnosis": ["AD", "AD", "CN", "CN", "CN", "CN", "CN", "CN"],
            "prob_AD": [0.9, 0.7, 0.2, 0.3, 0.8, 0.1, 0.4, 0.5],
        }
    )
    fast = bootstrap_ci(auc_metric("AD"), table, n_resamples=400, seed=0)
    # sklearn returns NaN (with a warning) when one class is absent
    slow = bootstrap_ci(lambda t: roc_auc_score(t["diagnosis"] == "AD", t["prob_AD"]), table, n_resamples=400, seed=0)
    assert fast["n_valid"] == slow["n_valid"]
    assert 0.55 < fast["n_valid"] / 400 < 0.80
    assert fast["low"] == pytest.approx(slow["low"]) and fast["high"] == pytest.approx(slow["high"])
    # a metric NaN on the full table gives NaN throughout
    none = bootstrap_ci(auc_metric("MCI", score_col="prob_AD"), table, n_resamples=20)
    assert np.isnan(none["estimate"]) and np.isnan(none["low"]) and none["n_valid"] == 0


def test_bootstrap_speed() -> None:
    """2,000 resamples of a 300-row table: plain callable and vectorised path."""
    table = predictions_table(n_subjects=150, seed=5).iloc[:300]
    assert len(table) == 300
    t0 = time.perf_counter()
    bootstrap_ci(lambda t: float((t["diagnosis"] == t["predicted"]).mean()), table)
    plain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    bootstrap_many({"auc": auc_metric("AD"), "acc": accuracy_metric()}, table)
    fast_s = time.perf_counter() - t0
    assert plain_s < 5.0, plain_s  # ~1.3 s on a laptop core; generous for slow CI
    assert fast_s < 1.0, fast_s


def test_kfold_summary_matches_numpy_scipy() -> None:
    values = [0.81, 0.77, 0.85, 0.79, 0.83]
    out = kfold_summary(values, level=0.9)
    v = np.array(values)
    low, high = stats.t.interval(0.9, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert out["mean"] == pytest.approx(v.mean())
    assert out["sd"] == pytest.approx(np.std(v, ddof=1))
    assert out["low"] == pytest.approx(low) and out["high"] == pytest.approx(high)
    assert out["n"] == 5


# --------------------------------------------------------------------------- Bayes


def test_beta_posterior_matches_scipy() -> None:
    out = beta_posterior(18, 20, prior=(1, 1), level=0.9)
    assert (out["alpha"], out["beta"]) == (19, 3)
    assert out["mean"] == pytest.approx(19 / 22)
    low, high = stats.beta.interval(0.9, 19, 3)
    assert out["low"] == pytest.approx(low) and out["high"] == pytest.approx(high)
    jeffreys = beta_posterior(0, 10, prior=(0.5, 0.5))
    assert jeffreys["alpha"] == 0.5 and jeffreys["beta"] == 10.5
    assert beta_posterior(0, 0)["mean"] == 0.5  # no data: the prior


def test_sensitivity_specificity_posteriors_counts() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    yhat = np.array([1, 1, 1, 0, 0, 0, 0, 0, 1, 1], dtype=bool)
    out = sensitivity_specificity_posteriors(y, yhat)
    assert (out["tp"], out["fn"], out["tn"], out["fp"]) == (3, 1, 4, 2)
    assert out["sensitivity"]["mean"] == pytest.approx(4 / 6)  # Beta(1 + 3, 1 + 1)
    assert out["specificity"]["mean"] == pytest.approx(5 / 8)  # Beta(1 + 4, 1 + 2)


def test_predictive_values_worked_example() -> None:
    out = predictive_values(0.9, 0.8, 0.1)
    assert out["ppv"] == pytest.approx(0.09 / (0.09 + 0.18)) and out["ppv"] == pytest.approx(1 / 3)
    assert out["npv"] == pytest.approx(0.72 / (0.72 + 0.01))
    arr = predictive_values(0.9, 0.8, np.array([0.1, 0.5]))
    assert arr["ppv"][1] == pytest.approx(0.45 / (0.45 + 0.1))
    # never-positive test: PPV undefined
    assert np.isnan(predictive_values(0.0, 1.0, 0.2)["ppv"])


def test_predictive_value_posteriors() -> None:
    big = predictive_value_posteriors(tp=9000, fn=1000, tn=8000, fp=2000, prevalence=0.1, seed=1)
    plug = predictive_values(0.9, 0.8, 0.1)
    assert big["ppv"]["mean"] == pytest.approx(plug["ppv"], abs=0.003)
    assert big["npv"]["mean"] == pytest.approx(plug["npv"], abs=0.003)
    assert big["ppv"]["low"] < plug["ppv"] < big["ppv"]["high"]
    small = predictive_value_posteriors(tp=9, fn=1, tn=8, fp=2, prevalence=0.1, seed=1)
    assert small["ppv"]["high"] - small["ppv"]["low"] > 5 * (big["ppv"]["high"] - big["ppv"]["low"])

    prev = np.linspace(0.01, 0.5, 50)
    curve = predictive_value_posteriors(tp=45, fn=5, tn=80, fp=20, prevalence=prev, n_draws=5000)
    assert curve["ppv"]["mean"].shape == (50,)
    assert np.all(np.diff(curve["ppv"]["mean"]) > 0)  # PPV rises with prevalence
    assert np.all(np.diff(curve["npv"]["mean"]) < 0)  # NPV falls
    assert np.all(curve["ppv"]["low"] <= curve["ppv"]["mean"]) and np.all(curve["ppv"]["mean"] <= curve["ppv"]["high"])


def test_likelihood_ratios() -> None:
    out = likelihood_ratios(0.9, 0.8)
    assert out["lr_pos"] == pytest.approx(4.5) and out["lr_neg"] == pytest.approx(0.125)
    edge = likelihood_ratios(np.array([0.9, 0.0, 1.0]), np.array([1.0, 1.0, 0.0]))
    assert np.isinf(edge["lr_pos"][0]) and np.isnan(edge["lr_pos"][1])
    assert np.isnan(edge["lr_neg"][2])  # (1 - 1) / 0
    assert np.isinf(likelihood_ratios(0.5, 0.0)["lr_neg"])
    post = likelihood_ratio_posteriors(tp=9000, fn=1000, tn=8000, fp=2000, seed=2)
    assert post["lr_pos"]["median"] == pytest.approx(4.5, rel=0.02)
    assert post["lr_pos"]["low"] < 4.5 < post["lr_pos"]["high"]
    assert post["lr_neg"]["low"] < 0.125 < post["lr_neg"]["high"]


def test_choose_threshold_known_answers() -> None:
    neg = [0.1, 0.2, 0.3, 0.4, 0.6]
    pos = [0.45, 0.5, 0.7, 0.8, 0.9]
    y = np.r_[np.zeros(5, bool), np.ones(5, bool)]
    s = np.r_[neg, pos]
    # J by threshold: .9 .2 | .8 .4 | .7 .6 | .6 .4 | .5 .6 | .45 .8 (max) | .4 .6 ...
    assert choose_threshold(y, s) == {"threshold": 0.45, "sensitivity": 1.0, "specificity": 0.8}
    assert choose_threshold(y, s, rule="sensitivity", target=0.7) == {
        "threshold": 0.5,
        "sensitivity": 0.8,
        "specificity": 0.8,
    }
    assert choose_threshold(y, s, rule="sensitivity", target=0.6)["threshold"] == 0.7
    # tied J (0.6 at thresholds 0.7, 0.5, 0.35): the highest threshold wins
    s_tied = np.r_[neg, [0.35, 0.5, 0.7, 0.8, 0.9]]
    assert choose_threshold(y, s_tied)["threshold"] == 0.7


def test_choose_threshold_sensitivity_target_met_and_tight() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(300) < 0.4
    s = rng.normal(size=300) + 1.2 * y
    for target in (0.8, 0.9, 0.95):
        out = choose_threshold(y, s, rule="sensitivity", target=target)
        called = s >= out["threshold"]
        assert called[y].mean() >= target and out["sensitivity"] == pytest.approx(called[y].mean())
        assert out["specificity"] == pytest.approx((~called[~y]).mean())
        higher = np.unique(s[s > out["threshold"]])
        assert (s[y] >= higher.min()).mean() < target  # the next threshold up misses the target


# --------------------------------------------------------------------------- paired comparisons


def test_delong_matches_direct_1988_formulas_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = np.array([1, 0, 1, 1, 0, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 0], dtype=bool)
    a = rng.integers(1, 6, size=y.size) + 2 * y  # integer scores: plenty of ties
    b = rng.integers(1, 4, size=y.size) + y
    out = delong_test(y, a, b)
    ref = _delong_direct(y, a, b)
    for key in ("auc_a", "auc_b", "var_a", "var_b", "cov", "z", "p_value"):
        assert out[key] == pytest.approx(ref[key], abs=1e-10), key
    assert out["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert out["auc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert out["diff"] == pytest.approx(out["auc_a"] - out["auc_b"])
    one = delong_ci(y, a)
    assert one["auc"] == pytest.approx(ref["auc_a"]) and one["var"] == pytest.approx(ref["var_a"], abs=1e-12)
    assert 0.0 <= one["low"] < one["auc"] < one["high"] <= 1.0


def test_delong_variance_agrees_with_paired_bootstrap() -> None:
    rng = np.random.default_rng(1)
    m = n = 150
    y = np.r_[np.ones(m, bool), np.zeros(n, bool)]
    latent = rng.normal(size=m + n) + 1.0 * y
    a = latent + rng.normal(0, 0.5, m + n)  # two correlated models
    b = latent + rng.normal(0, 1.0, m + n)
    out = delong_test(y, a, b)

    # stratified paired bootstrap (resample positives and negatives, same cases for both models)
    n_boot = 4000
    pos_i = rng.integers(0, m, size=(n_boot, m))
    neg_i = m + rng.integers(0, n, size=(n_boot, n))
    idx = np.hstack([pos_i, neg_i])

    def auc_rows(s: np.ndarray) -> np.ndarray:  # Mann-Whitney U / (m n), row-wise
        ranks = stats.rankdata(s[idx], axis=1)
        return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)

    diff_sd = np.std(auc_rows(a) - auc_rows(b), ddof=1)
    delong_sd = math.sqrt(out["var_a"] + out["var_b"] - 2 * out["cov"])
    assert delong_sd == pytest.approx(diff_sd, rel=0.10)
    assert math.sqrt(out["var_a"]) == pytest.approx(np.std(auc_rows(a), ddof=1), rel=0.10)
    assert out["low"] < out["diff"] < out["high"]


def test_delong_identical_scores() -> None:
    y = np.array([0, 0, 1, 1, 0, 1], dtype=bool)
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    out = delong_test(y, s, s)
    assert out["diff"] == 0 and out["z"] == 0 and out["p_value"] == 1.0


def test_mcnemar_exact_and_chi2() -> None:
    # b = 7 (A right, B wrong), c = 2 (A wrong, B right), 11 concordant
    a = np.r_[np.ones(7), np.zeros(2), np.ones(6), np.zeros(5)].astype(bool)
    b = np.r_[np.zeros(7), np.ones(2), np.ones(6), np.zeros(5)].astype(bool)
    out = mcnemar_test(a, b)
    assert (out["b"], out["c"], out["method"]) == (7, 2, "exact")
    assert out["p_value"] == pytest.approx(2 * (1 + 9 + 36) / 2**9)  # 2 P(X <= 2), X ~ Bin(9, 1/2)
    assert out["p_value"] == pytest.approx(stats.binomtest(7, 9, 0.5).pvalue)

    a = np.r_[np.ones(40), np.zeros(20), np.ones(30)].astype(bool)
    b = np.r_[np.zeros(40), np.ones(20), np.ones(30)].astype(bool)
    out = mcnemar_test(a, b)
    assert out["method"] == "chi2"
    assert out["statistic"] == pytest.approx((40 - 20 - 1) ** 2 / 60)
    assert out["p_value"] == pytest.approx(stats.chi2.sf(361 / 60, 1))
    forced = mcnemar_test(a, b, exact=True)
    assert forced["method"] == "exact" and forced["p_value"] == pytest.approx(stats.binomtest(40, 60).pvalue)
    same = mcnemar_test(a, a)
    assert (same["b"], same["c"], same["p_value"]) == (0, 0, 1.0)


def test_corrected_resampled_ttest_by_hand() -> None:
    d = np.array([0.02, 0.03, -0.01, 0.04, 0.01, 0.02, 0.03, 0.00, 0.02, 0.01])
    out = corrected_resampled_ttest(d, n_train=90, n_test=10)
    k, mean, s2 = 10, d.mean(), d.var(ddof=1)
    t = mean / math.sqrt((1 / k + 10 / 90) * s2)
    assert out["mean_diff"] == pytest.approx(mean)
    assert out["t"] == pytest.approx(t) and out["df"] == 9
    assert out["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), 9))
    naive = stats.ttest_1samp(d, 0.0)
    assert out["p_value"] > naive.pvalue  # the correction widens, never narrows


def test_bayesian_correlated_ttest() -> None:
    d = np.array([0.02, 0.03, -0.01, 0.04, 0.01, 0.02, 0.03, 0.00, 0.02, 0.01])
    out = bayesian_correlated_ttest(d, n_train=90, n_test=10, rope=0.01)
    probs = (out["p_a_better"], out["p_rope"], out["p_b_better"])
    assert sum(probs) == pytest.approx(1.0) and min(probs) >= 0
    assert out["p_a_better"] > out["p_b_better"]
    better = bayesian_correlated_ttest(d + 0.02, 90, 10, rope=0.01)
    assert better["p_a_better"] > out["p_a_better"] and better["p_b_better"] < out["p_b_better"]
    wide = bayesian_correlated_ttest(d, 90, 10, rope=0.05)
    assert wide["p_rope"] > out["p_rope"]
    flipped = bayesian_correlated_ttest(-d, 90, 10, rope=0.01)
    assert flipped["p_a_better"] == pytest.approx(out["p_b_better"])
    # rope = 0: P(B better) is the one-sided p-value of the corrected t-test
    freq = corrected_resampled_ttest(d, 90, 10)
    assert bayesian_correlated_ttest(d, 90, 10, rope=0.0)["p_b_better"] == pytest.approx(freq["p_value"] / 2)


# --------------------------------------------------------------------------- calibration


def test_brier_against_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.4
    p = np.clip(0.4 + 0.3 * (y - 0.4) + rng.normal(0, 0.2, 200), 0, 1)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p))
    assert brier_score(y, np.column_stack([1 - p, p])) == pytest.approx(brier_score_loss(y, p))
    labels = rng.integers(0, 3, 200)
    probs = rng.dirichlet([1, 1, 1], size=200)
    expected = np.mean(np.sum((probs - np.eye(3)[labels]) ** 2, axis=1))
    assert brier_score(labels, probs) == pytest.approx(expected)
    assert brier_score(labels, probs) == pytest.approx(brier_score_loss(labels, probs, labels=[0, 1, 2]))
    names = np.array(["CN", "MCI", "AD"])[labels]
    assert brier_score(names, probs, classes=["CN", "MCI", "AD"]) == pytest.approx(expected)
    assert brier_score(np.eye(3)[labels], probs) == pytest.approx(expected)


def test_ece_calibrated_vs_overconfident() -> None:
    rng = np.random.default_rng(0)
    n = 20000
    logits = rng.normal(0, 1.5, size=(n, 3))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = (rng.random(n)[:, None] > np.cumsum(probs, axis=1)).sum(axis=1)  # y ~ Categorical(probs)
    ece_cal = expected_calibration_error(labels, probs)
    assert ece_cal < 0.015
    sharp = np.exp(logits / 0.4) / np.exp(logits / 0.4).sum(axis=1, keepdims=True)  # over-confident
    assert expected_calibration_error(labels, sharp) > 0.08
    assert expected_calibration_error(labels, probs, strategy="quantile") < 0.015

    curve = reliability_curve(labels, sharp, n_bins=10)
    assert curve["count"].sum() == n and curve["bin_edges"].shape == (11,)
    full = curve["count"] > 0
    assert np.all(curve["accuracy"][full] <= curve["confidence"][full] + 0.01)  # over-confident everywhere
    assert np.all(np.isnan(curve["confidence"][~full]))


def test_ece_by_hand() -> None:
    # binary vector: confidences 0.9 (x2, one right) and 0.6 (x2, both right)
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.9, 0.6, 0.4])
    # bin (0.8, 0.9]: conf .9, acc .5 -> gap .4; bin (0.5, 0.6]: conf .6, acc 1 -> gap .4
    assert expected_calibration_error(y, p) == pytest.approx(0.4)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call",
    [
        lambda: delong_test([1, 0, 1, 0], [0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4]),
        lambda: delong_test([1, 1, 1, 1], [0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]),
        lambda: delong_ci([0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4, np.nan]),
        lambda: mcnemar_test([1, 0, 1], [1, 0]),
        lambda: sensitivity_specificity_posteriors([1, 0, 1], [1, 0]),
        lambda: choose_threshold([1, 1, 1], [0.2, 0.3, 0.4]),
        lambda: choose_threshold([1, 0, 1], [0.2, 0.3, 0.4], rule="sensitivity", target=1.5),
        lambda: predictive_values(0.9, 0.8, 0.0),
        lambda: predictive_values(0.9, 0.8, 1.5),
        lambda: predictive_values(1.2, 0.8, 0.2),
        lambda: predictive_value_posteriors(9, 1, 8, 2, prevalence=1.5),
        lambda: predictive_value_posteriors(9, 1, 8, 2, prevalence=np.array([0.1, 0.0])),
        lambda: predictive_value_posteriors(-1, 1, 8, 2, prevalence=0.1),
        lambda: beta_posterior(5, 3),
        lambda: beta_posterior(-1, 3),
        lambda: beta_posterior(1, 3, level=1.0),
        lambda: kfold_summary([0.8]),
        lambda: corrected_resampled_ttest([0.1, 0.2], n_train=0, n_test=10),
        lambda: bayesian_correlated_ttest([0.1, 0.2], 90, 10, rope=-0.1),
        lambda: brier_score([0, 1, 1], [0.2, 0.7]),
        lambda: brier_score(["a", "b"], [[0.5, 0.5], [0.2, 0.8]]),
        lambda: expected_calibration_error([0, 1], [[0.5, 0.6], [0.2, 0.8]]),
        lambda: expected_calibration_error([0, 1], [0.2, 0.7], strategy="nope"),
        lambda: bootstrap_ci(lambda t: 0.0, pd.DataFrame({"x": [1, 2]})),
        lambda: bootstrap_ci(lambda t: 0.0, pd.DataFrame({"participant_id": []})),
        lambda: bootstrap_ci(lambda t: 0.0, pd.DataFrame({"participant_id": [1, 2]}), method="bogus"),
        lambda: bootstrap_ci(lambda t: 0.0, pd.DataFrame({"participant_id": [1, 2]}), n_resamples=0),
        lambda: bootstrap_ci(auc_metric("AD"), pd.DataFrame({"participant_id": [1, 2], "diagnosis": ["AD", "CN"]})),
    ],
)
def test_bad_input_raises_alzmri_error(call) -> None:
    with pytest.raises(AlzmriError):
        call()


def test_weighted_metric_is_a_plain_metric_too() -> None:
    table = predictions_table(n_subjects=30, seed=9)
    metric = WeightedMetric(lambda t: (lambda w: w @ t["prob_AD"].to_numpy() / w.sum(axis=1)), name="mean score")
    assert metric(table) == pytest.approx(table["prob_AD"].mean())
    assert bootstrap_ci(metric, table, n_resamples=100)["estimate"] == pytest.approx(table["prob_AD"].mean())
