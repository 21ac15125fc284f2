"""Paired comparisons of two classifiers evaluated on the same cases or the same folds.

* :func:`delong_test` / :func:`delong_ci`: ROC AUCs on the same cases (DeLong et al. 1988).
* :func:`mcnemar_test`: accuracies on the same cases (McNemar 1947).
* :func:`corrected_resampled_ttest`: a metric over the same cross-validation folds, with
  the variance correction for overlapping training sets (Nadeau & Bengio 2003).
* :func:`bayesian_correlated_ttest`: the Bayesian counterpart, with a region of practical
  equivalence (Benavoli et al. 2017).

The case-level tests assume independent cases: pass one row per *subject* (or aggregate a
subject's scans first), otherwise repeated scans of one person masquerade as evidence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from alzmri.evaluation.stats._checks import (
    as_bool_vector,
    as_vector,
    check_level,
    check_number,
    check_positive,
    check_same_length,
)
from alzmri.utils.errors import AlzmriError

ArrayLike = Any


def _labels_and_scores(y_true_bool: ArrayLike, **scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Validated labels and a ``(k, n)`` score matrix; at least two cases of each class."""
    y = as_bool_vector(y_true_bool, "y_true_bool")
    arrays = {name: as_vector(s, name) for name, s in scores.items()}
    check_same_length(y_true_bool=y, **arrays)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos < 2 or n_neg < 2:
        raise AlzmriError(
            f"DeLong needs at least 2 positive and 2 negative cases, got {n_pos} positive and {n_neg} negative"
        )
    return y, np.vstack(list(arrays.values()))


def _delong_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for ``k`` score rows on the same cases.

    Structural components (DeLong, DeLong & Clarke-Pearson 1988, Biometrics 44:837) for
    positives ``X_1..X_m`` and negatives ``Y_1..Y_n``, with
    ``psi(X, Y) = 1`` if ``Y < X``, ``1/2`` if ``Y = X``, ``0`` if ``Y > X``:

    * ``V10(X_i) = (1/n) sum_j psi(X_i, Y_j)`` (fraction of negatives below positive ``i``),
    * ``V01(Y_j) = (1/m) sum_i psi(X_i, Y_j)`` (fraction of positives above negative ``j``),
    * ``AUC = mean_i V10(X_i) = mean_j V01(Y_j)``,
    * ``S10``, ``S01``: sample covariance matrices (divisor ``m - 1``, ``n - 1``) of the
      ``V10`` and ``V01`` vectors across the ``k`` score rows, and
      ``S = S10 / m + S01 / n`` estimates ``Cov(AUC_r, AUC_s)``.

    The components come from midranks in ``O(k N log N)`` (Sun & Xu 2014, IEEE SPL 21:1389):
    with ``T_Z`` the midranks in the pooled sample and ``T_X``, ``T_Y`` within each class,
    ``V10(X_i) = (T_Z(X_i) - T_X(X_i)) / n`` and ``V01(Y_j) = 1 - (T_Z(Y_j) - T_Y(Y_j)) / m``.
    """
    pos, neg = scores[:, y], scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    tz = stats.rankdata(np.hstack([pos, neg]), axis=1)
    auc = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2.0) / (m * n)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    s10 = np.atleast_2d(np.cov(v10, ddof=1))
    s01 = np.atleast_2d(np.cov(v01, ddof=1))
    return auc, s10 / m + s01 / n


def _normal_test(diff: float, var: float) -> tuple[float, float]:
    """``z = diff / sqrt(var)`` and the two-sided normal p-value ``2 (1 - Phi(|z|))``.

    A zero variance (e.g. two constant score vectors, or two perfect classifiers) gives
    ``z = 0, p = 1`` when ``diff = 0`` and ``z = +-inf, p = 0`` otherwise.
    """
    if var > 0:
        z = diff / np.sqrt(var)
    else:
        z = 0.0 if diff == 0 else float(np.copysign(np.inf, diff))
    return float(z), float(2.0 * stats.norm.sf(abs(z)))


def delong_test(
    y_true_bool: ArrayLike, scores_a: ArrayLike, scores_b: ArrayLike, level: float = 0.95
) -> dict[str, float]:
    """DeLong's test for the difference of two correlated ROC AUCs.

    Both score vectors rate the same cases. With ``S`` the DeLong covariance matrix of
    ``(AUC_a, AUC_b)`` (see :func:`_delong_components`, DeLong et al. 1988),
    ``Var(AUC_a - AUC_b) = S_aa + S_bb - 2 S_ab``, ``z = (AUC_a - AUC_b) / sqrt(Var)`` and
    ``p = 2 (1 - Phi(|z|))``. Also the Wald interval ``diff +- z_{1-alpha/2} sqrt(Var)``.

    Args:
        y_true_bool: true condition (True = positive class); >= 2 cases of each class.
        scores_a: scores of model A (higher = more likely positive).
        scores_b: scores of model B, same cases, same order.
        level: coverage of the interval for the difference.

    Returns:
        ``{"auc_a", "auc_b", "diff", "var_a", "var_b", "cov", "z", "p_value", "low",
        "high"}`` with ``diff = auc_a - auc_b`` and ``low``/``high`` its interval.
    """
    level = check_level(level)
    y, scores = _labels_and_scores(y_true_bool, scores_a=scores_a, scores_b=scores_b)
    auc, cov = _delong_components(y, scores)
    diff = float(auc[0] - auc[1])
    var = max(float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1]), 0.0)  # clip rounding below 0
    z, p = _normal_test(diff, var)
    half = float(stats.norm.ppf(0.5 + level / 2)) * np.sqrt(var)
    return {
        "auc_a": float(auc[0]),
        "auc_b": float(auc[1]),
        "diff": diff,
        "var_a": float(cov[0, 0]),
        "var_b": float(cov[1, 1]),
        "cov": float(cov[0, 1]),
        "z": z,
        "p_value": p,
        "low": diff - half,
        "high": diff + half,
    }


def delong_ci(y_true_bool: ArrayLike, scores: ArrayLike, level: float = 0.95) -> dict[str, float]:
    """A Wald interval for one ROC AUC with DeLong's variance.

    ``AUC +- z_{1-alpha/2} sqrt(S10 / m + S01 / n)`` (DeLong et al. 1988), clipped to
    [0, 1]. The normal approximation is poor for AUC near 1 with few cases; the
    subject-level bootstrap (:func:`alzmri.evaluation.stats.bootstrap.bootstrap_ci` with
    :func:`~alzmri.evaluation.stats.bootstrap.auc_metric`) does not rely on it and also
    handles repeated scans per subject.

    Args:
        y_true_bool: true condition (True = positive class); >= 2 cases of each class.
        scores: higher = more likely positive.
        level: interval coverage.

    Returns:
        ``{"auc", "var", "low", "high"}``.
    """
    level = check_level(level)
    y, s = _labels_and_scores(y_true_bool, scores=scores)
    auc, cov = _delong_components(y, s)
    a, var = float(auc[0]), max(float(cov[0, 0]), 0.0)
    half = float(stats.norm.ppf(0.5 + level / 2)) * np.sqrt(var)
    return {"auc": a, "var": var, "low": max(0.0, a - half), "high": min(1.0, a + half)}


def mcnemar_test(correct_a: ArrayLike, correct_b: ArrayLike, exact: bool | None = None) -> dict[str, Any]:
    """McNemar's test for paired accuracies.

    Only discordant cases carry information: ``b`` = A right and B wrong, ``c`` = A wrong
    and B right. Under H0 (equal accuracy) ``b ~ Binomial(b + c, 1/2)``.

    * exact (default when ``b + c < 25``): two-sided binomial p-value
      (``scipy.stats.binomtest``); ``statistic = min(b, c)``.
    * asymptotic: ``chi2 = (max(|b - c| - 1, 0))^2 / (b + c)`` with Edwards' continuity
      correction, ``p = P(chi2_1 > chi2)`` (McNemar 1947, Psychometrika 12:153;
      Edwards 1948).

    With no discordant pairs the p-value is 1.

    Args:
        correct_a: per case, whether model A was right (bool or 0/1).
        correct_b: per case, whether model B was right; same cases, same order.
        exact: force the exact (True) or chi-square (False) version; ``None`` chooses.

    Returns:
        ``{"b", "c", "statistic", "p_value", "method"}`` with ``method`` ``"exact"`` or
        ``"chi2"``.
    """
    a = as_bool_vector(correct_a, "correct_a")
    bb = as_bool_vector(correct_b, "correct_b")
    check_same_length(correct_a=a, correct_b=bb)
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    n = b + c
    use_exact = n < 25 if exact is None else bool(exact)
    if use_exact:
        p = float(stats.binomtest(b, n, 0.5).pvalue) if n > 0 else 1.0
        return {"b": b, "c": c, "statistic": float(min(b, c)), "p_value": min(p, 1.0), "method": "exact"}
    stat = max(abs(b - c) - 1.0, 0.0) ** 2 / n if n > 0 else 0.0
    return {"b": b, "c": c, "statistic": float(stat), "p_value": float(stats.chi2.sf(stat, 1)), "method": "chi2"}


def _fold_diffs(diffs: ArrayLike, n_train: float, n_test: float) -> tuple[np.ndarray, float]:
    """Validated per-fold differences and the correlation factor ``n_test / n_train``."""
    d = as_vector(diffs, "diffs", min_len=2)
    ratio = check_positive(n_test, "n_test") / check_positive(n_train, "n_train")
    return d, ratio


def corrected_resampled_ttest(
    diffs: ArrayLike, n_train: float, n_test: float, level: float = 0.95
) -> dict[str, float]:
    """Nadeau & Bengio's corrected resampled t-test over cross-validation folds.

    For ``k`` per-fold differences ``d_j = metric_A - metric_B`` (same folds for both
    models) with mean ``d_bar`` and sample variance ``s^2`` (divisor ``k - 1``), the
    overlap of training sets is accounted for by inflating the variance of the mean:
    ``Var = (1/k + n_test / n_train) s^2``; ``t = d_bar / sqrt(Var)`` with ``k - 1``
    degrees of freedom, two-sided ``p = 2 P(T_{k-1} > |t|)`` (Nadeau & Bengio 2003,
    Machine Learning 52:239; Bouckaert & Frank 2004). For repeated k-fold, ``k`` is the
    total number of folds over all repeats. Zero spread gives ``t = 0, p = 1`` when
    ``d_bar = 0`` and ``t = +-inf, p = 0`` otherwise.

    Args:
        diffs: per-fold differences (at least two).
        n_train: training cases (subjects) per fold.
        n_test: test cases per fold.
        level: coverage of the interval for the mean difference.

    Returns:
        ``{"mean_diff", "sd", "se", "t", "df", "p_value", "low", "high"}``.
    """
    level = check_level(level)
    d, ratio = _fold_diffs(diffs, n_train, n_test)
    k = d.size
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    se = float(np.sqrt((1.0 / k + ratio) * sd**2))
    if se > 0:
        t = mean / se
    else:
        t = 0.0 if mean == 0 else float(np.copysign(np.inf, mean))
    df = k - 1
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    return {
        "mean_diff": mean,
        "sd": sd,
        "se": se,
        "t": float(t),
        "df": int(df),
        "p_value": float(2.0 * stats.t.sf(abs(t), df)),
        "low": mean - half,
        "high": mean + half,
    }


def bayesian_correlated_ttest(
    diffs: ArrayLike, n_train: float, n_test: float, rope: float = 0.01
) -> dict[str, float]:
    """Bayesian correlated t-test with a region of practical equivalence (ROPE).

    Benavoli, Corani, Demšar & Zaffalon (2017, JMLR 18(77)): with the same correlation
    ``rho = n_test / (n_test + n_train)`` as Nadeau & Bengio and a non-informative prior,
    the posterior of the mean difference ``mu`` is Student-t with ``k - 1`` degrees of
    freedom, location ``d_bar`` and scale ``sqrt((1/k + rho / (1 - rho)) s^2)``
    (``rho / (1 - rho) = n_test / n_train``). Then, with ``F`` its cdf
    (``scipy.stats.t.cdf``):

    * ``P(A better) = P(mu > rope) = 1 - F(rope)``,
    * ``P(rope) = P(-rope <= mu <= rope) = F(rope) - F(-rope)``,
    * ``P(B better) = P(mu < -rope) = F(-rope)``.

    ``diffs`` are ``metric_A - metric_B`` for a higher-is-better metric. With zero spread
    the posterior is a point mass at ``d_bar``.

    Args:
        diffs: per-fold differences (at least two).
        n_train: training cases per fold.
        n_test: test cases per fold.
        rope: half-width of the region of practical equivalence (same units as the
            metric, e.g. 0.01 = one accuracy point), >= 0.

    Returns:
        ``{"p_a_better", "p_rope", "p_b_better", "mean", "scale", "df"}``.
    """
    d, ratio = _fold_diffs(diffs, n_train, n_test)
    r = check_number(rope, "rope")
    k = d.size
    mean = float(d.mean())
    scale = float(np.sqrt((1.0 / k + ratio) * d.var(ddof=1)))
    df = k - 1
    if scale > 0:
        below, above = stats.t.cdf([-r, r], df, loc=mean, scale=scale)
        p_b, p_rope, p_a = float(below), float(above - below), float(stats.t.sf(r, df, loc=mean, scale=scale))
    else:
        p_a, p_b = float(mean > r), float(mean < -r)
        p_rope = 1.0 - p_a - p_b
    return {"p_a_better": p_a, "p_rope": p_rope, "p_b_better": p_b, "mean": mean, "scale": scale, "df": int(df)}
