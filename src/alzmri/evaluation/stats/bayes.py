"""The clinical view of a binary test: posteriors of sensitivity/specificity, predictive values.

Everything here is binary -- one class (e.g. ``AD``) is "positive" and every other class
is "negative" -- because that is the question a clinician asks of a test. Sensitivity
and specificity are properties of the test; the predictive values also depend on the
prevalence of disease in the population where the test is *used*, which is almost never
the class balance of a research data set. :func:`predictive_value_posteriors` therefore
takes the prevalence as an input (a number or a whole curve of them).

Uncertainty is Bayesian with conjugate Beta priors: with a ``Beta(a, b)`` prior and ``k``
successes in ``n`` trials the posterior of the proportion is ``Beta(a + k, b + n - k)``
(e.g. Gelman et al. 2013, *Bayesian Data Analysis*, §2.4). The default ``Beta(1, 1)`` is
the uniform prior; ``(0.5, 0.5)`` is Jeffreys' prior.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import roc_curve

from alzmri.evaluation.stats._checks import (
    as_bool_vector,
    as_vector,
    check_count,
    check_level,
    check_positive,
    check_same_length,
)
from alzmri.utils.errors import AlzmriError

ArrayLike = Any


def _check_prior(prior: tuple[float, float]) -> tuple[float, float]:
    try:
        a, b = prior
    except (TypeError, ValueError):
        raise AlzmriError(f"prior must be a pair (alpha, beta), got {prior!r}") from None
    return check_positive(a, "prior alpha"), check_positive(b, "prior beta")


def _check_unit_interval(values: ArrayLike, name: str, *, open_interval: bool) -> np.ndarray:
    """A float array with every value in [0, 1] (or (0, 1) when ``open_interval``)."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise AlzmriError(f"{name} must be numeric") from None
    if arr.size == 0:
        raise AlzmriError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise AlzmriError(f"{name} contains NaN or infinite values")
    if open_interval:
        if np.any((arr <= 0) | (arr >= 1)):
            raise AlzmriError(f"{name} must be strictly between 0 and 1, got {_show(arr)}")
    elif np.any((arr < 0) | (arr > 1)):
        raise AlzmriError(f"{name} must be between 0 and 1, got {_show(arr)}")
    return arr


def _show(arr: np.ndarray) -> str:
    bad = arr.ravel()
    return f"{bad[0]:g}" if bad.size == 1 else f"values in [{bad.min():g}, {bad.max():g}]"


def _out(x: np.ndarray, scalar: bool) -> float | np.ndarray:
    return float(x) if scalar else x


def beta_posterior(
    successes: float, trials: float, prior: tuple[float, float] = (1.0, 1.0), level: float = 0.95
) -> dict[str, float]:
    """Beta posterior of a binomial proportion with an equal-tailed credible interval.

    ``p | k, n ~ Beta(alpha, beta)`` with ``alpha = a + k``, ``beta = b + n - k`` for a
    ``Beta(a, b)`` prior; mean ``alpha / (alpha + beta)`` and interval
    ``[F^-1(alpha_l / 2), F^-1(1 - alpha_l / 2)]`` of that Beta (``alpha_l = 1 - level``),
    from ``scipy.stats.beta``. With zero trials the posterior is the prior.

    Args:
        successes: ``k``, a non-negative count.
        trials: ``n >= k``.
        prior: ``(a, b)``, both > 0.
        level: credibility of the interval.

    Returns:
        ``{"mean", "low", "high", "alpha", "beta"}``.
    """
    level = check_level(level)
    a0, b0 = _check_prior(prior)
    k = check_count(successes, "successes")
    n = check_count(trials, "trials")
    if k > n:
        raise AlzmriError(f"successes ({successes}) cannot exceed trials ({trials})")
    a, b = a0 + k, b0 + (n - k)
    low, high = stats.beta.ppf([(1 - level) / 2, (1 + level) / 2], a, b)
    return {"mean": a / (a + b), "low": float(low), "high": float(high), "alpha": a, "beta": b}


def _confusion(y_true_bool: ArrayLike, y_pred_bool: ArrayLike) -> tuple[int, int, int, int]:
    y = as_bool_vector(y_true_bool, "y_true_bool")
    yhat = as_bool_vector(y_pred_bool, "y_pred_bool")
    check_same_length(y_true_bool=y, y_pred_bool=yhat)
    tp = int(np.sum(y & yhat))
    fn = int(np.sum(y & ~yhat))
    tn = int(np.sum(~y & ~yhat))
    fp = int(np.sum(~y & yhat))
    return tp, fn, tn, fp


def sensitivity_specificity_posteriors(
    y_true_bool: ArrayLike,
    y_pred_bool: ArrayLike,
    prior: tuple[float, float] = (1.0, 1.0),
    level: float = 0.95,
) -> dict[str, Any]:
    """Beta posteriors of sensitivity ``TP / (TP + FN)`` and specificity ``TN / (TN + FP)``.

    Sensitivity is the proportion of positives called positive, specificity the proportion
    of negatives called negative; each gets :func:`beta_posterior`. Rows should be
    independent -- pass one prediction per subject (e.g. the latest scan, or a subject-level
    aggregate), not every scan, or the posteriors will be too narrow.

    Args:
        y_true_bool: true condition (True = positive class).
        y_pred_bool: test result (True = called positive).
        prior: Beta prior ``(a, b)`` used for both proportions.
        level: credibility of the intervals.

    Returns:
        ``{"sensitivity": beta_posterior(...), "specificity": beta_posterior(...),
        "tp", "fn", "tn", "fp"}``.
    """
    tp, fn, tn, fp = _confusion(y_true_bool, y_pred_bool)
    return {
        "sensitivity": beta_posterior(tp, tp + fn, prior=prior, level=level),
        "specificity": beta_posterior(tn, tn + fp, prior=prior, level=level),
        "tp": tp,
        "fn": fn,
        "tn": tn,
        "fp": fp,
    }


def predictive_values(
    sensitivity: ArrayLike, specificity: ArrayLike, prevalence: ArrayLike
) -> dict[str, float | np.ndarray]:
    """Positive and negative predictive values by Bayes' rule.

    ``PPV = se p / (se p + (1 - sp)(1 - p))`` and
    ``NPV = sp (1 - p) / (sp (1 - p) + (1 - se) p)`` for sensitivity ``se``, specificity
    ``sp`` and prevalence ``p`` (Altman & Bland 1994, BMJ 309:102). Inputs broadcast
    against each other; a value is NaN where its denominator is 0 (PPV when ``se = 0`` and
    ``sp = 1``: the test never calls anyone positive; NPV when ``se = 1`` and ``sp = 0``).

    Args:
        sensitivity: in [0, 1]; number or array.
        specificity: in [0, 1]; number or array.
        prevalence: in (0, 1); number or array.

    Returns:
        ``{"ppv", "npv"}``: floats when every input is a number, else arrays.
    """
    se = _check_unit_interval(sensitivity, "sensitivity", open_interval=False)
    sp = _check_unit_interval(specificity, "specificity", open_interval=False)
    p = _check_unit_interval(prevalence, "prevalence", open_interval=True)
    try:
        se, sp, p = np.broadcast_arrays(se, sp, p)
    except ValueError:
        raise AlzmriError("sensitivity, specificity and prevalence have incompatible shapes") from None
    ppv, npv = _bayes_rule(se, sp, p)
    scalar = ppv.ndim == 0
    return {"ppv": _out(ppv, scalar), "npv": _out(npv, scalar)}


def _bayes_rule(se: np.ndarray, sp: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PPV and NPV (NaN for a zero denominator); inputs already broadcastable."""
    tp_rate = se * p  # P(test +, disease)
    fp_rate = (1.0 - sp) * (1.0 - p)  # P(test +, no disease)
    tn_rate = sp * (1.0 - p)  # P(test -, no disease)
    fn_rate = (1.0 - se) * p  # P(test -, disease)
    with np.errstate(invalid="ignore", divide="ignore"):
        ppv = np.where(tp_rate + fp_rate > 0, tp_rate / (tp_rate + fp_rate), np.nan)
        npv = np.where(tn_rate + fn_rate > 0, tn_rate / (tn_rate + fn_rate), np.nan)
    return ppv, npv


def _se_sp_draws(
    tp: float, fn: float, tn: float, fp: float, n_draws: int, seed: int | np.random.Generator | None,
    prior: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Independent posterior draws ``se ~ Beta(a + TP, b + FN)``, ``sp ~ Beta(a + TN, b + FP)``."""
    counts = {name: check_count(v, name) for name, v in (("tp", tp), ("fn", fn), ("tn", tn), ("fp", fp))}
    a, b = _check_prior(prior)
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 2:
        raise AlzmriError(f"n_draws must be an integer >= 2, got {n_draws!r}")
    rng = np.random.default_rng(seed)
    se = rng.beta(a + counts["tp"], b + counts["fn"], size=n_draws)
    sp = rng.beta(a + counts["tn"], b + counts["fp"], size=n_draws)
    return se, sp


def _summarise(draws: np.ndarray, level: float, scalar: bool) -> dict[str, float | np.ndarray]:
    """Posterior mean, median and equal-tailed interval along axis 0 (NaN draws ignored)."""
    q = np.nanquantile(draws, [(1 - level) / 2, 0.5, (1 + level) / 2], axis=0)
    return {
        "mean": _out(np.nanmean(draws, axis=0), scalar),
        "median": _out(q[1], scalar),
        "low": _out(q[0], scalar),
        "high": _out(q[2], scalar),
    }


def predictive_value_posteriors(
    tp: float,
    fn: float,
    tn: float,
    fp: float,
    prevalence: ArrayLike,
    n_draws: int = 20000,
    seed: int | np.random.Generator | None = 0,
    level: float = 0.95,
    prior: tuple[float, float] = (1.0, 1.0),
) -> dict[str, Any]:
    """Posterior of PPV and NPV at a given prevalence, by Monte Carlo.

    Draws ``se ~ Beta(a + TP, b + FN)`` and ``sp ~ Beta(a + TN, b + FP)`` independently
    (uniform prior ``a = b = 1`` by default), maps every draw through Bayes' rule
    (:func:`predictive_values`) at each prevalence, and summarises the draws by their mean,
    median and equal-tailed ``level`` interval. The prevalence is treated as known (it is
    the setting the test is used in), so a curve over prevalences shows how the same test
    performs in, e.g., memory-clinic referrals (high prevalence) versus screening (low).

    Args:
        tp: true positives (positives called positive).
        fn: false negatives.
        tn: true negatives.
        fp: false positives.
        prevalence: number or 1-D array, each in (0, 1).
        n_draws: Monte Carlo draws.
        seed: seed or generator for the draws.
        level: credibility of the intervals.
        prior: Beta prior ``(a, b)`` for sensitivity and specificity.

    Returns:
        ``{"prevalence", "ppv": {"mean", "median", "low", "high"}, "npv": {...}}``; the
        numbers are floats for a scalar prevalence and arrays (one per prevalence) otherwise.
    """
    level = check_level(level)
    p = _check_unit_interval(prevalence, "prevalence", open_interval=True)
    if p.ndim > 1:
        raise AlzmriError(f"prevalence must be a number or a 1-D array, got shape {p.shape}")
    se, sp = _se_sp_draws(tp, fn, tn, fp, n_draws, seed, prior)
    scalar = p.ndim == 0
    ppv, npv = _bayes_rule(se[:, None], sp[:, None], np.atleast_1d(p)[None, :])
    if scalar:
        ppv, npv = ppv[:, 0], npv[:, 0]
    return {
        "prevalence": _out(p, scalar),
        "ppv": _summarise(ppv, level, scalar),
        "npv": _summarise(npv, level, scalar),
    }


def likelihood_ratios(sensitivity: ArrayLike, specificity: ArrayLike) -> dict[str, float | np.ndarray]:
    """Positive and negative likelihood ratios.

    ``LR+ = se / (1 - sp)`` and ``LR- = (1 - se) / sp`` (Deeks & Altman 2004, BMJ 329:168);
    post-test odds = pre-test odds x LR. A zero denominator gives ``inf`` (``sp = 1`` for
    LR+, ``sp = 0`` for LR-) unless the numerator is also 0, which gives NaN.

    Args:
        sensitivity: in [0, 1]; number or array.
        specificity: in [0, 1]; number or array (broadcast against ``sensitivity``).

    Returns:
        ``{"lr_pos", "lr_neg"}``: floats for numbers, arrays otherwise.
    """
    se = _check_unit_interval(sensitivity, "sensitivity", open_interval=False)
    sp = _check_unit_interval(specificity, "specificity", open_interval=False)
    try:
        se, sp = np.broadcast_arrays(se, sp)
    except ValueError:
        raise AlzmriError("sensitivity and specificity have incompatible shapes") from None
    lr_pos, lr_neg = _lr(se, sp)
    scalar = lr_pos.ndim == 0
    return {"lr_pos": _out(lr_pos, scalar), "lr_neg": _out(lr_neg, scalar)}


def _lr(se: np.ndarray, sp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return se / (1.0 - sp), (1.0 - se) / sp  # x/0 -> inf, 0/0 -> nan


def likelihood_ratio_posteriors(
    tp: float,
    fn: float,
    tn: float,
    fp: float,
    n_draws: int = 20000,
    seed: int | np.random.Generator | None = 0,
    level: float = 0.95,
    prior: tuple[float, float] = (1.0, 1.0),
) -> dict[str, dict[str, float]]:
    """Posterior of LR+ and LR- from the same Beta draws as :func:`predictive_value_posteriors`.

    ``se ~ Beta(a + TP, b + FN)``, ``sp ~ Beta(a + TN, b + FP)``; each draw gives
    ``LR+ = se / (1 - sp)`` and ``LR- = (1 - se) / sp``. The ratios are heavy-tailed --
    with no false positives the posterior mean of LR+ does not even exist, since
    ``E[1 / (1 - sp)]`` diverges for ``1 - sp ~ Beta(1, .)`` -- so report the median and
    the interval; the Monte Carlo mean is given for completeness only.

    Args:
        tp: true positives.
        fn: false negatives.
        tn: true negatives.
        fp: false positives.
        n_draws: Monte Carlo draws.
        seed: seed or generator for the draws.
        level: credibility of the intervals.
        prior: Beta prior ``(a, b)`` for sensitivity and specificity.

    Returns:
        ``{"lr_pos": {"mean", "median", "low", "high"}, "lr_neg": {...}}``.
    """
    level = check_level(level)
    se, sp = _se_sp_draws(tp, fn, tn, fp, n_draws, seed, prior)
    lr_pos, lr_neg = _lr(se, sp)
    return {"lr_pos": _summarise(lr_pos, level, True), "lr_neg": _summarise(lr_neg, level, True)}


def choose_threshold(
    y_true_bool: ArrayLike, scores: ArrayLike, rule: str = "youden", target: float = 0.9
) -> dict[str, float]:
    """An operating threshold on a score, by Youden's J or by a sensitivity target.

    The test calls a case positive when ``score >= threshold`` (the convention of
    ``sklearn.metrics.roc_curve``, whose distinct score values are the candidates).

    * ``rule="youden"``: maximise ``J = sensitivity + specificity - 1 = TPR - FPR``
      (Youden 1950, Cancer 3:32); ties go to the highest threshold.
    * ``rule="sensitivity"``: the highest threshold whose sensitivity is ``>= target`` --
      i.e. the most specific operating point that still finds the required fraction of
      cases, the usual requirement for a rule-out test.

    Choose the threshold on *validation* data and apply it unchanged to the test set:
    a threshold tuned on the test set makes the test sensitivity/specificity (and every
    predictive value derived from them) optimistically biased.

    Args:
        y_true_bool: true condition (True = positive class); both classes needed.
        scores: higher = more likely positive (e.g. ``prob_AD``).
        rule: ``"youden"`` or ``"sensitivity"``.
        target: required sensitivity in (0, 1] for ``rule="sensitivity"``.

    Returns:
        ``{"threshold", "sensitivity", "specificity"}`` at the chosen threshold, on the
        data given.
    """
    y = as_bool_vector(y_true_bool, "y_true_bool")
    s = as_vector(scores, "scores")
    check_same_length(y_true_bool=y, scores=s)
    if y.all() or not y.any():
        raise AlzmriError("choose_threshold needs both positive and negative cases")
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    keep = np.isfinite(thr)  # drop sklearn's leading +inf "nobody positive" point
    fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
    if rule == "youden":
        j = tpr - fpr
        # first (near-)maximum = highest threshold, as thr is decreasing; the tolerance makes
        # exact ties such as 0.8 - 0.2 vs 0.6 - 0.0 tie in floating point too
        i = int(np.flatnonzero(j >= j.max() - 1e-12)[0])
    elif rule == "sensitivity":
        t = float(target)
        if not 0.0 < t <= 1.0:
            raise AlzmriError(f"target sensitivity must be in (0, 1], got {target!r}")
        i = int(np.flatnonzero(tpr >= t - 1e-12)[0])  # the lowest threshold always has TPR = 1
    else:
        raise AlzmriError(f"unknown threshold rule {rule!r}; choose 'youden' or 'sensitivity'")
    return {"threshold": float(thr[i]), "sensitivity": float(tpr[i]), "specificity": float(1.0 - fpr[i])}
