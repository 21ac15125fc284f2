"""Subject-level (cluster) bootstrap confidence intervals, and fold summaries.

Why subjects and not scans
--------------------------
Scans of one participant (several sessions, or several visits) are strongly correlated:
a classifier that is right about one is usually right about the others. Resampling
*scans* treats them as independent and so underestimates the sampling variance: the
intervals come out too narrow and cover the truth less often than claimed. The
bootstrap here resamples *subjects* with replacement (the cluster or "block" bootstrap:
Davison & Hinkley 1997, *Bootstrap Methods and their Application*, §3.8; Field & Welsh
2007, JRSS-B 69:369) -- every row of a drawn subject comes along, and a subject drawn
twice contributes its rows twice.

Two ways to evaluate a metric on the resamples
----------------------------------------------
* Any callable ``metric_fn(table) -> float`` is evaluated on each resampled table
  (``table.iloc[rows]``; the index of the subset may contain duplicates).
* A :class:`WeightedMetric` is evaluated for all resamples at once. Drawing a subject
  ``k`` times is the same as giving each of its rows weight ``k``, so a metric that is
  a functional of the weighted empirical distribution (a mean, a recall, an AUC) can be
  computed for a whole ``(n_resamples, n_rows)`` weight matrix with a few matrix
  products. :func:`accuracy_metric`, :func:`balanced_accuracy_metric`,
  :func:`mean_metric` and :func:`auc_metric` build such metrics; they give exactly the
  values the callable path gives on the same draws, only 10-1000x faster.

Both paths use the same subject draws for a given ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from alzmri.evaluation.stats._checks import as_vector, check_level
from alzmri.utils.errors import AlzmriError

MetricFn = Callable[[pd.DataFrame], float]
"""A metric of a predictions table: ``metric_fn(table) -> float`` (NaN when undefined)."""

_METHODS = ("percentile", "basic", "bca")
# Budget (elements) of one chunk's weight matrix; bounds memory of the vectorised path.
_CHUNK_ELEMENTS = 4_000_000
# Exceptions a metric may raise on a degenerate resample (e.g. sklearn's "Only one class
# present in y_true"); such a resample counts as undefined (NaN), like a NaN return.
_UNDEFINED_ERRORS = (ValueError, ZeroDivisionError, FloatingPointError)


@dataclass(frozen=True)
class WeightedMetric:
    """A metric that can be evaluated for many row weightings of a table at once.

    ``prepare(table)`` does the per-table work once (column extraction, sorting) and
    returns a function mapping a weight matrix ``W`` of shape ``(r, n_rows)`` (non-negative,
    each row not all zero) to ``r`` metric values. Calling the object on a table evaluates
    the metric with unit weights, so it is also a valid plain ``metric_fn``.

    Args:
        prepare: ``table -> (W -> values)``.
        name: a label for messages and reprs.
    """

    prepare: Callable[[pd.DataFrame], Callable[[np.ndarray], np.ndarray]]
    name: str = "weighted metric"

    def __call__(self, table: pd.DataFrame) -> float:
        """The metric on ``table`` itself (unit weights).

        Args:
            table: the predictions table.

        Returns:
            The metric value (NaN when undefined).
        """
        return float(self.prepare(table)(np.ones((1, len(table))))[0])


def _columns(table: pd.DataFrame, *names: str) -> None:
    missing = [c for c in names if c not in table.columns]
    if missing:
        raise AlzmriError(f"table has no column(s) {', '.join(map(repr, missing))}")


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where ``den == 0``."""
    out = np.full(np.shape(num), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def accuracy_metric(true_col: str = "diagnosis", pred_col: str = "predicted") -> WeightedMetric:
    """Accuracy as a :class:`WeightedMetric`: ``sum_i w_i [y_i == yhat_i] / sum_i w_i``.

    Args:
        true_col: column with the true labels.
        pred_col: column with the predicted labels.

    Returns:
        The vectorised metric.
    """

    def prepare(table: pd.DataFrame) -> Callable[[np.ndarray], np.ndarray]:
        _columns(table, true_col, pred_col)
        correct = (table[true_col].to_numpy() == table[pred_col].to_numpy()).astype(float)
        return lambda w: _ratio(w @ correct, w.sum(axis=1))

    return WeightedMetric(prepare, name="accuracy")


def balanced_accuracy_metric(true_col: str = "diagnosis", pred_col: str = "predicted") -> WeightedMetric:
    """Balanced accuracy as a :class:`WeightedMetric`.

    Mean over the classes present in the (weighted) sample of the per-class recall
    ``sum_i w_i [y_i = c][yhat_i = c] / sum_i w_i [y_i = c]`` -- the definition of
    ``sklearn.metrics.balanced_accuracy_score`` (Brodersen et al. 2010, ICPR).

    Args:
        true_col: column with the true labels.
        pred_col: column with the predicted labels.

    Returns:
        The vectorised metric.
    """

    def prepare(table: pd.DataFrame) -> Callable[[np.ndarray], np.ndarray]:
        _columns(table, true_col, pred_col)
        y = table[true_col].to_numpy()
        yhat = table[pred_col].to_numpy()
        classes, codes = np.unique(y, return_inverse=True)
        onehot = np.eye(len(classes))[codes]  # (n_rows, n_classes)
        hits = onehot * (y == yhat)[:, None]

        def values(w: np.ndarray) -> np.ndarray:
            support = w @ onehot
            present = support > 0  # classes absent from a resample do not count
            recall = np.where(present, _ratio(w @ hits, support), 0.0)
            return _ratio(recall.sum(axis=1), present.sum(axis=1).astype(float))

        return values

    return WeightedMetric(prepare, name="balanced_accuracy")


def mean_metric(column: str) -> WeightedMetric:
    """The (weighted) mean of a numeric column, ``sum_i w_i x_i / sum_i w_i``.

    With a boolean "correct" column this is accuracy; with a per-row loss it is the mean
    loss (e.g. a per-scan Brier score).

    Args:
        column: the numeric column.

    Returns:
        The vectorised metric.
    """

    def prepare(table: pd.DataFrame) -> Callable[[np.ndarray], np.ndarray]:
        _columns(table, column)
        x = table[column].to_numpy(dtype=float)
        return lambda w: _ratio(w @ x, w.sum(axis=1))

    return WeightedMetric(prepare, name=f"mean({column})")


def auc_metric(positive: Any, label_col: str = "diagnosis", score_col: str | None = None) -> WeightedMetric:
    """One-vs-rest ROC AUC as a :class:`WeightedMetric`.

    The weighted Mann-Whitney form (Hanley & McNeil 1982, Radiology 143:29):
    ``AUC = sum_{i pos, j neg} w_i w_j psi(s_i, s_j) / (W_pos W_neg)`` with
    ``psi = 1`` if ``s_i > s_j``, ``1/2`` if equal, ``0`` otherwise. With unit weights it
    equals ``sklearn.metrics.roc_auc_score``. Computed in ``O(r n)`` per chunk after one
    sort: weights are summed within tied-score groups and the negatives below each group
    come from a cumulative sum. NaN when a resample has no positive or no negative row.

    Args:
        positive: the label of the positive class in ``label_col``.
        label_col: column with the true labels.
        score_col: column with the scores; default ``f"prob_{positive}"``.

    Returns:
        The vectorised metric.
    """
    score_col = score_col if score_col is not None else f"prob_{positive}"

    def prepare(table: pd.DataFrame) -> Callable[[np.ndarray], np.ndarray]:
        _columns(table, label_col, score_col)
        scores = table[score_col].to_numpy(dtype=float)
        if not np.all(np.isfinite(scores)):
            raise AlzmriError(f"column {score_col!r} contains NaN or infinite scores")
        is_pos = (table[label_col].to_numpy() == positive).astype(float)
        if scores.size == 0:
            return lambda w: np.full(len(w), np.nan)
        order = np.argsort(scores, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(scores[order]) != 0])  # tie-group starts
        pos_sorted = is_pos[order]
        neg_sorted = 1.0 - pos_sorted

        def values(w: np.ndarray) -> np.ndarray:
            ws = w[:, order]
            p = np.add.reduceat(ws * pos_sorted, starts, axis=1)  # positive weight per tie group
            q = np.add.reduceat(ws * neg_sorted, starts, axis=1)  # negative weight per tie group
            below = np.cumsum(q, axis=1) - q
            num = (p * (below + 0.5 * q)).sum(axis=1)
            return _ratio(num, p.sum(axis=1) * q.sum(axis=1))

        return values

    return WeightedMetric(prepare, name=f"auc({positive})")


@dataclass(frozen=True)
class _Clusters:
    """Rows grouped by subject: ``rows_of(subject k) = order[starts[k] : starts[k] + sizes[k]]``."""

    codes: np.ndarray  # subject index of each row
    order: np.ndarray  # row indices sorted by subject
    sizes: np.ndarray  # rows per subject
    starts: np.ndarray  # offset of each subject's block in ``order``

    @property
    def n_subjects(self) -> int:
        return len(self.sizes)

    def rows(self, draw: np.ndarray) -> np.ndarray:
        """Row indices of a resample: the rows of each drawn subject, repeats kept."""
        lens = self.sizes[draw]
        ends = np.cumsum(lens)
        shift = np.repeat(self.starts[draw] - (ends - lens), lens)
        return self.order[np.arange(ends[-1] if len(ends) else 0) + shift]

    def weights(self, draws: np.ndarray) -> np.ndarray:
        """Row weights ``(r, n_rows)``: how often each row's subject was drawn."""
        r, s = draws.shape
        counts = np.bincount((draws + s * np.arange(r)[:, None]).ravel(), minlength=r * s).reshape(r, s)
        return counts[:, self.codes].astype(float)


def _clusters(table: pd.DataFrame, group_col: str) -> _Clusters:
    if not isinstance(table, pd.DataFrame):
        raise AlzmriError(f"table must be a pandas DataFrame, got {type(table).__name__}")
    if table.empty:
        raise AlzmriError("table is empty: nothing to bootstrap")
    _columns(table, group_col)
    ids = table[group_col]
    if ids.isna().any():
        raise AlzmriError(f"column {group_col!r} has missing subject ids")
    codes, uniques = pd.factorize(ids)
    codes = np.asarray(codes, dtype=np.intp)
    sizes = np.bincount(codes, minlength=len(uniques))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return _Clusters(codes=codes, order=np.argsort(codes, kind="stable"), sizes=sizes, starts=starts)


def _evaluate_plain(fn: MetricFn, subset: pd.DataFrame) -> float:
    try:
        value = fn(subset)
    except _UNDEFINED_ERRORS:
        return float("nan")
    return float(value)


def _bca_bounds(
    boot: np.ndarray, estimate: float, jack: np.ndarray, level: float
) -> tuple[float, float]:
    """Bias-corrected and accelerated percentile bounds (Efron 1987, JASA 82:171).

    ``z0 = Phi^-1(#{b: theta*_b < theta_hat} / B)`` (ties count 1/2), acceleration
    ``a = sum (m - theta_(i))^3 / (6 [sum (m - theta_(i))^2]^{3/2})`` from the
    leave-one-subject-out jackknife values ``theta_(i)`` with mean ``m``, and the bounds
    are the bootstrap quantiles at ``Phi(z0 + (z0 + z_q) / (1 - a (z0 + z_q)))`` for
    ``z_q = Phi^-1(alpha/2), Phi^-1(1 - alpha/2)`` (Efron & Tibshirani 1993, §14.3).
    """
    frac = (np.sum(boot < estimate) + np.sum(boot <= estimate)) / (2.0 * boot.size)
    z0 = stats.norm.ppf(frac)
    jack = jack[np.isfinite(jack)]
    dev = jack.mean() - jack if jack.size else np.zeros(1)
    den = 6.0 * np.sum(dev**2) ** 1.5
    accel = float(np.sum(dev**3) / den) if den > 0 else 0.0
    alpha = 1.0 - level
    probs = []
    for zq in (stats.norm.ppf(alpha / 2), stats.norm.ppf(1 - alpha / 2)):
        with np.errstate(invalid="ignore", divide="ignore"):
            probs.append(stats.norm.cdf(z0 + (z0 + zq) / (1.0 - accel * (z0 + zq))))
    if not np.all(np.isfinite(probs)):
        return float("nan"), float("nan")
    return float(np.quantile(boot, probs[0])), float(np.quantile(boot, probs[1]))


def _jackknife(
    metric: MetricFn, table: pd.DataFrame, clusters: _Clusters, prepared: Callable[[np.ndarray], np.ndarray] | None
) -> np.ndarray:
    """Leave-one-subject-out values of ``metric``."""
    s = clusters.n_subjects
    out = np.empty(s)
    if prepared is not None:
        chunk = max(1, _CHUNK_ELEMENTS // max(len(table), 1))
        for lo in range(0, s, chunk):
            hi = min(s, lo + chunk)
            w = np.ones((hi - lo, len(table)))
            w[clusters.codes[None, :] == np.arange(lo, hi)[:, None]] = 0.0
            out[lo:hi] = prepared(w)
        return out
    everyone = np.arange(s)
    for k in range(s):
        out[k] = _evaluate_plain(metric, table.iloc[clusters.rows(everyone[everyone != k])])
    return out


def bootstrap_many(
    metric_fns: Mapping[str, MetricFn],
    table: pd.DataFrame,
    group_col: str = "participant_id",
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int | np.random.Generator | None = 0,
    method: str = "percentile",
) -> dict[str, dict[str, float | int]]:
    """Subject-level bootstrap intervals for several metrics from the same resamples.

    Each of the ``n_resamples`` resamples draws ``n_subjects`` subjects with replacement
    (uniformly, so subjects -- not scans -- are the exchangeable units), takes all rows of
    every drawn subject, and evaluates every metric on that one resampled table. Using the
    same resamples for all metrics keeps their intervals mutually consistent and lets a
    metric that is a *difference* (model A minus model B) be bootstrapped as a paired
    quantity.

    A resample on which a metric is undefined (returns NaN, or raises ``ValueError``,
    ``ZeroDivisionError`` or ``FloatingPointError``, as ``roc_auc_score`` does when one class
    is absent) is dropped for that metric only and ``n_valid`` counts the rest. Dropping
    conditions the interval on the metric being defined; if ``n_valid`` is much smaller
    than ``n_resamples`` the interval should not be trusted.

    Interval methods (``alpha = 1 - level``; ``q_p`` is the ``p`` quantile of the valid
    bootstrap values ``theta*``):

    * ``"percentile"``: ``[q_{alpha/2}, q_{1-alpha/2}]`` (Efron & Tibshirani 1993, §13.3).
    * ``"basic"``: ``[2 theta_hat - q_{1-alpha/2}, 2 theta_hat - q_{alpha/2}]``
      (Davison & Hinkley 1997, §5.2).
    * ``"bca"``: bias-corrected and accelerated (Efron 1987), with the acceleration from
      a leave-one-subject-out jackknife (costs ``n_subjects`` more evaluations).

    Args:
        metric_fns: name -> metric. A plain callable gets each resampled table; a
            :class:`WeightedMetric` is evaluated for all resamples at once.
        table: one row per scan (or per prediction), with a subject column.
        group_col: the subject column; rows sharing a value are resampled together.
        n_resamples: number of bootstrap resamples.
        level: interval coverage, e.g. 0.95.
        seed: seed or generator for the subject draws (the same seed gives the same
            draws whatever the metrics).
        method: ``"percentile"``, ``"basic"`` or ``"bca"``.

    Returns:
        ``{name: {"estimate", "low", "high", "n_resamples", "n_valid"}}``; ``estimate`` is
        the metric on the full table. All three numbers are NaN when the metric is
        undefined on the full table or on every resample.
    """
    if not isinstance(metric_fns, Mapping) or not metric_fns:
        raise AlzmriError("metric_fns must be a non-empty mapping of name -> metric")
    for name, fn in metric_fns.items():
        if not callable(fn):
            raise AlzmriError(f"metric {name!r} is not callable")
    if method not in _METHODS:
        raise AlzmriError(f"unknown bootstrap method {method!r}; choose one of {', '.join(_METHODS)}")
    level = check_level(level)
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise AlzmriError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    clusters = _clusters(table, group_col)
    rng = np.random.default_rng(seed)
    n_rows, n_subj = len(table), clusters.n_subjects

    prepared = {
        name: fn.prepare(table) for name, fn in metric_fns.items() if isinstance(fn, WeightedMetric)
    }
    plain = {name: fn for name, fn in metric_fns.items() if name not in prepared}
    estimates = {name: float(fn(table)) for name, fn in metric_fns.items()}
    values = {name: np.empty(n_resamples) for name in metric_fns}

    # Fixed chunking (depends on the table only), so the draws never depend on the metrics.
    chunk = max(1, min(n_resamples, _CHUNK_ELEMENTS // max(n_rows, n_subj)))
    for lo in range(0, n_resamples, chunk):
        hi = min(n_resamples, lo + chunk)
        draws = rng.integers(0, n_subj, size=(hi - lo, n_subj))
        if prepared:
            w = clusters.weights(draws)
            for name, values_of in prepared.items():
                values[name][lo:hi] = values_of(w)
        if plain:
            for r in range(hi - lo):
                subset = table.iloc[clusters.rows(draws[r])]
                for name, fn in plain.items():
                    values[name][lo + r] = _evaluate_plain(fn, subset)

    alpha = 1.0 - level
    out: dict[str, dict[str, float | int]] = {}
    for name, fn in metric_fns.items():
        boot = values[name][~np.isnan(values[name])]
        est = estimates[name]
        low = high = float("nan")
        if boot.size and not np.isnan(est):
            if method == "percentile":
                low, high = (float(v) for v in np.quantile(boot, [alpha / 2, 1 - alpha / 2]))
            elif method == "basic":
                q_lo, q_hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
                low, high = float(2 * est - q_hi), float(2 * est - q_lo)
            else:
                jack = _jackknife(fn, table, clusters, prepared.get(name))
                low, high = _bca_bounds(boot, est, jack, level)
        out[name] = {
            "estimate": est,
            "low": low,
            "high": high,
            "n_resamples": int(n_resamples),
            "n_valid": int(boot.size),
        }
    return out


def bootstrap_ci(
    metric_fn: MetricFn,
    table: pd.DataFrame,
    group_col: str = "participant_id",
    n_resamples: int = 2000,
    level: float = 0.95,
    seed: int | np.random.Generator | None = 0,
    method: str = "percentile",
) -> dict[str, float | int]:
    """Subject-level bootstrap confidence interval of one metric.

    See :func:`bootstrap_many` (this is it with a single metric) for the resampling
    scheme, the handling of undefined resamples and the interval formulas.

    Args:
        metric_fn: ``metric_fn(table_subset) -> float``, or a :class:`WeightedMetric`.
        table: one row per scan, with a subject column.
        group_col: the subject column; rows sharing a value are resampled together.
        n_resamples: number of bootstrap resamples.
        level: interval coverage, e.g. 0.95.
        seed: seed or generator for the subject draws.
        method: ``"percentile"``, ``"basic"`` or ``"bca"``.

    Returns:
        ``{"estimate", "low", "high", "n_resamples", "n_valid"}``.
    """
    if not callable(metric_fn):
        raise AlzmriError("metric_fn must be callable")
    return bootstrap_many(
        {"metric": metric_fn},
        table,
        group_col=group_col,
        n_resamples=n_resamples,
        level=level,
        seed=seed,
        method=method,
    )["metric"]


def kfold_summary(values: list[float] | np.ndarray, level: float = 0.95) -> dict[str, float | int]:
    """Mean, standard deviation and a t-interval of a metric over cross-validation folds.

    ``mean = (1/k) sum v_i``, ``sd = sqrt(sum (v_i - mean)^2 / (k - 1))`` and
    ``mean +- t_{k-1, 1-alpha/2} sd / sqrt(k)`` (Student's t-interval for a mean).

    Caveat: the folds are *not* independent samples -- their training sets overlap by
    ``(k-2)/(k-1)`` -- so ``sd / sqrt(k)`` underestimates the standard error of the mean
    and this interval is optimistic (Bengio & Grandvalet 2004, JMLR 5:1089). To compare
    two models over the same folds use the corrected resampled t-test
    (:func:`alzmri.evaluation.stats.compare.corrected_resampled_ttest`, Nadeau & Bengio
    2003), and for one model prefer a subject-level bootstrap of the pooled out-of-fold
    predictions (:func:`bootstrap_ci`).

    Args:
        values: one metric value per fold (at least two, all finite).
        level: interval coverage.

    Returns:
        ``{"mean", "sd", "low", "high", "n"}``.
    """
    level = check_level(level)
    v = as_vector(values, "values", min_len=2)
    k = v.size
    mean = float(v.mean())
    sd = float(v.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, k - 1)) * sd / np.sqrt(k)
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "n": int(k)}
