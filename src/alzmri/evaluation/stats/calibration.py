"""Calibration of predicted probabilities: Brier score, expected calibration error, reliability.

Inputs follow one convention throughout:

* ``probs`` of shape ``(n, K)`` (rows sum to 1, columns in class order) with ``y_true``
  either integer labels ``0..K-1``, labels named by ``classes`` (column order), or a
  one-hot ``(n, K)`` matrix; or
* ``probs`` of shape ``(n,)``: the probability of the positive class of a binary problem,
  with ``y_true`` boolean / 0-1 (or two ``classes``, the second being positive).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from alzmri.utils.errors import AlzmriError

ArrayLike = Any
_STRATEGIES = ("uniform", "quantile")
_SUM_TOL = 1e-3  # tolerance on row sums (float32 softmax outputs are off by ~1e-7)


def _as_probs(probs: ArrayLike) -> np.ndarray:
    try:
        p = np.asarray(probs, dtype=float)
    except (TypeError, ValueError):
        raise AlzmriError("probs must be numeric") from None
    if p.ndim not in (1, 2) or p.shape[0] == 0 or (p.ndim == 2 and p.shape[1] < 2):
        raise AlzmriError(f"probs must have shape (n,) or (n, n_classes >= 2), got {p.shape}")
    if not np.all(np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise AlzmriError("probs must be finite and within [0, 1]")
    if p.ndim == 2 and np.any(np.abs(p.sum(axis=1) - 1.0) > _SUM_TOL):
        raise AlzmriError("each row of probs must sum to 1 (one probability per class)")
    return p


def _label_codes(y_true: ArrayLike, n_classes: int, classes: Sequence[Any] | None) -> np.ndarray:
    """Integer class indices ``0..K-1`` from labels (or from booleans when ``K = 2``)."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise AlzmriError(f"y_true must be labels of shape (n,) or one-hot (n, n_classes), got {y.shape}")
    if classes is not None:
        classes = list(classes)
        if len(classes) != n_classes:
            raise AlzmriError(f"classes has {len(classes)} names but probs has {n_classes} columns")
        index = {c: i for i, c in enumerate(classes)}
        try:
            return np.array([index[v] for v in y.tolist()], dtype=np.intp)
        except KeyError as err:
            raise AlzmriError(f"label {err.args[0]!r} is not one of classes {classes}") from None
    if y.dtype == bool:
        return y.astype(np.intp)
    try:
        num = y.astype(float)
    except (TypeError, ValueError):
        raise AlzmriError("y_true has non-numeric labels; pass classes=[...] in column order") from None
    if not np.all((num == np.round(num)) & (num >= 0) & (num < n_classes)):
        raise AlzmriError(f"integer labels must be in 0..{n_classes - 1}")
    return num.astype(np.intp)


def _prepare(y_true: ArrayLike, probs: ArrayLike, classes: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(probs (n, K), labels (n,), was_binary_vector)`` after validation."""
    p = _as_probs(probs)
    binary_vector = p.ndim == 1
    if binary_vector:
        p = np.column_stack([1.0 - p, p])
    n, k = p.shape
    y = np.asarray(y_true)
    if y.ndim == 2:
        if y.shape != (n, k):
            raise AlzmriError(f"one-hot y_true has shape {y.shape}, expected {(n, k)}")
        yf = y.astype(float)
        if not np.all((yf == 0) | (yf == 1)) or not np.all(yf.sum(axis=1) == 1):
            raise AlzmriError("one-hot y_true must have exactly one 1 per row")
        labels = yf.argmax(axis=1)
    else:
        labels = _label_codes(y, k, classes)
        if labels.size != n:
            raise AlzmriError(f"inputs must have the same length, got y_true={labels.size}, probs={n}")
    return p, labels, binary_vector


def brier_score(
    y_true: ArrayLike,
    probs: ArrayLike,
    classes: Sequence[Any] | None = None,
    scale_by_half: bool | None = None,
) -> float:
    """Brier score: mean squared error of the probability vector (Brier 1950).

    ``BS = (1/n) sum_i sum_k (p_ik - y_ik)^2`` with ``y_ik`` the one-hot truth; range
    [0, 2]. For a binary problem given as a vector of positive-class probabilities it is
    the usual ``(1/n) sum_i (p_i - y_i)^2`` in [0, 1], which is half the two-column sum.
    ``scale_by_half=None`` follows ``sklearn.metrics.brier_score_loss``'s ``"auto"``:
    halve when there are two classes (so both binary forms agree), not otherwise.

    Args:
        y_true: labels, or one-hot ``(n, K)``; see the module docstring.
        probs: ``(n, K)`` class probabilities, or ``(n,)`` positive-class probabilities.
        classes: class names in column order, when ``y_true`` holds names.
        scale_by_half: force halving on (True) or off (False).

    Returns:
        The Brier score (lower is better).
    """
    p, labels, _ = _prepare(y_true, probs, classes)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(labels)), labels] = 1.0
    score = float(np.mean(np.sum((p - onehot) ** 2, axis=1)))
    halve = p.shape[1] == 2 if scale_by_half is None else bool(scale_by_half)
    return score / 2.0 if halve else score


def _bin_edges(conf: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise AlzmriError(f"n_bins must be a positive integer, got {n_bins!r}")
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "quantile":
        return np.unique(np.quantile(conf, np.linspace(0.0, 1.0, n_bins + 1)))
    raise AlzmriError(f"unknown binning strategy {strategy!r}; choose one of {', '.join(_STRATEGIES)}")


def reliability_curve(
    y_true: ArrayLike,
    probs: ArrayLike,
    n_bins: int = 10,
    strategy: str = "uniform",
    classes: Sequence[Any] | None = None,
) -> dict[str, np.ndarray]:
    """Top-label reliability diagram data: per confidence bin, mean confidence vs accuracy.

    Confidence is the top probability ``max_k p_ik`` and a case is correct when
    ``argmax_k p_ik`` is its label (Guo et al. 2017, ICML, "On calibration of modern
    neural networks"). Bins are right-closed, ``(e_{b-1}, e_b]`` (the first also takes its
    left edge). ``"uniform"`` uses ``n_bins`` equal-width bins on [0, 1]; ``"quantile"``
    uses quantiles of the confidences (equal counts; tied edges merge, so there may be
    fewer bins). For a binary probability vector the top label is the more probable class,
    so confidences are >= 0.5.

    Args:
        y_true: labels, or one-hot; see the module docstring.
        probs: ``(n, K)`` class probabilities, or ``(n,)`` positive-class probabilities.
        n_bins: number of bins.
        strategy: ``"uniform"`` or ``"quantile"``.
        classes: class names in column order, when ``y_true`` holds names.

    Returns:
        ``{"bin_edges" (n_bins + 1,), "confidence", "accuracy", "count"}`` (each
        ``(n_bins,)``); ``confidence`` and ``accuracy`` are NaN for empty bins.
    """
    p, labels, _ = _prepare(y_true, probs, classes)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == labels).astype(float)
    edges = _bin_edges(conf, n_bins, strategy)
    nb = max(len(edges) - 1, 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, nb - 1)
    count = np.bincount(idx, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(idx, weights=conf, minlength=nb) / count
        accuracy = np.bincount(idx, weights=correct, minlength=nb) / count
    if len(edges) == 1:  # all confidences equal under "quantile": one degenerate bin
        edges = np.array([edges[0], edges[0]])
    return {"bin_edges": edges, "confidence": confidence, "accuracy": accuracy, "count": count}


def expected_calibration_error(
    y_true: ArrayLike,
    probs: ArrayLike,
    n_bins: int = 10,
    strategy: str = "uniform",
    classes: Sequence[Any] | None = None,
) -> float:
    """Top-label expected calibration error.

    ``ECE = sum_b (n_b / n) |acc_b - conf_b|`` over the non-empty bins of
    :func:`reliability_curve` (Naeini et al. 2015, AAAI; Guo et al. 2017). It is 0 for a
    perfectly calibrated model in the infinite-sample limit, but a finite sample gives a
    small positive value (roughly ``sqrt(n_bins / n)`` in size), so compare ECEs on
    samples of similar size and binning.

    Args:
        y_true: labels, or one-hot; see the module docstring.
        probs: ``(n, K)`` class probabilities, or ``(n,)`` positive-class probabilities.
        n_bins: number of bins.
        strategy: ``"uniform"`` or ``"quantile"``.
        classes: class names in column order, when ``y_true`` holds names.

    Returns:
        The ECE, in [0, 1].
    """
    curve = reliability_curve(y_true, probs, n_bins=n_bins, strategy=strategy, classes=classes)
    count = curve["count"]
    full = count > 0
    gaps = np.abs(curve["accuracy"][full] - curve["confidence"][full])
    return float(np.sum(count[full] * gaps) / count.sum())
