"""Sanity checks for attribution maps (Adebayo et al. 2018, "Sanity checks for saliency maps").

A map that explains a model must change when the model's learned weights are destroyed.
:func:`cascading_randomization` re-initialises the model's layers one at a time, from the
output layer down to the input layer (cumulatively), recomputes the map after each step and
reports the rank correlation with the original map. A method whose map stays similar
(Spearman near 1) is showing the input (edges, intensity), not the model; :func:`summarize`
turns the last correlation into a pass/fail verdict.

Adebayo et al.'s second test, data (label) randomisation, needs a model *trained* on randomly
permuted labels, which only the training pipeline can produce. It is left to the caller:
train a model on shuffled labels with the same settings, compute the same method's map for
the same scan with both models, and compare them with :func:`map_similarity` (a map that
barely changes fails the test, as here).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats
from torch import nn

from alzmri.explain.attribution import METHODS, attribute, predicted_class
from alzmri.utils.errors import AlzmriError

# Gradient maps are compared in absolute value, as Adebayo et al. do (sign flips of a gradient
# are not a change of what the map highlights).
GRADIENT_METHODS = ("saliency", "smoothgrad", "integrated_gradients")
_SSIM_WINDOW = 7

MapMethod = Callable[..., np.ndarray]


def cascading_randomization(
    model: nn.Module,
    volume: torch.Tensor | np.ndarray,
    method: str | MapMethod,
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    target: int | None = None,
    absolute: bool | None = None,
    ssim: bool = True,
    **kw: Any,
) -> list[dict[str, Any]]:
    """Cascading parameter randomisation: how the map changes as layers are re-initialised.

    ``model`` itself is not changed: a deep copy is randomised. Step ``k`` re-initialises
    ``layers[k]`` on top of steps ``0 … k − 1``: ``reset_parameters()`` where the module has
    it (PyTorch's default initialisation; batch norm also resets its running statistics),
    otherwise each of its own parameters is drawn from ``N(0, 1/fan_in)`` (``N(0, 0.02²)`` for
    1-D parameters). After each step the map is recomputed for the same class as the
    original map and compared with it.

    Args:
        model: the (trained) classifier.
        volume: ``(D, H, W)`` or ``(C, D, H, W)`` scan.
        method: a name from :data:`~alzmri.explain.attribution.METHODS` (computed by
            :func:`~alzmri.explain.attribution.attribute`), or a callable
            ``method(model, volume, *, target, **kw) -> (D, H, W) array``.
        layers: module names in the order to randomise them (output first). Default: every
            module that owns parameters directly and runs in the forward pass, in reverse
            order of execution (modules that never run cannot change the map and are skipped).
        seed: seed of the re-initialisation (the global torch RNG is left untouched).
        target: explained class; default the class ``model`` predicts (kept for all steps,
            even if a randomised model predicts another one).
        absolute: compare ``|map|``; default True for gradient methods (saliency, smoothgrad,
            integrated_gradients), False otherwise.
        ssim: also report the SSIM (MONAI ``SSIMMetric``: 7³ Gaussian window, σ 1.5, data
            range 1) of the min-max-normalised maps; None when a volume edge is below 7 voxels.
        **kw: passed to the method (``layer``, ``model_name``, ``age``, method options).

    Returns:
        One dict per step: ``layer`` (the module re-initialised at that step), ``spearman``
        (rank correlation of the flattened original and randomised maps; a constant map, e.g.
        a Grad-CAM zeroed by its ReLU, has no ranking and counts 0 against a varying map, 1
        against an equal one) and ``ssim`` (float or None).

    Raises:
        AlzmriError: an unknown method or layer name, or a model without parameters.
    """
    if isinstance(method, str) and method not in METHODS:
        raise AlzmriError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    if absolute is None:
        absolute = isinstance(method, str) and method in GRADIENT_METHODS
    if target is None:
        target = predicted_class(model, volume, age=kw.get("age"))

    def compute(m: nn.Module) -> np.ndarray:
        if isinstance(method, str):
            result = attribute(m, volume, method, target=target, **kw)
        else:
            result = np.asarray(method(m, volume, target=target, **kw), dtype=np.float32)
        return np.abs(result) if absolute else result

    names = list(layers) if layers is not None else randomization_order(model, volume, age=kw.get("age"))
    known = dict(model.named_modules())
    unknown = [n for n in names if n not in known or n == ""]
    if unknown:
        owners = [n for n, m in known.items() if n and next(m.parameters(recurse=False), None) is not None]
        raise AlzmriError(f"the model has no layer {unknown[0]!r}; layers with parameters: {', '.join(owners[:40])}")
    if not names:
        raise AlzmriError("no layers to randomise (the model has no parameters, or layers=[] was given)")
    original = compute(model)
    randomized = copy.deepcopy(model)
    modules = dict(randomized.named_modules())
    results = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in names:
            reinitialise(modules[name])
            changed = compute(randomized)
            results.append(
                {
                    "layer": name,
                    "spearman": _spearman(original, changed),
                    "ssim": _ssim(original, changed) if ssim else None,
                }
            )
    return results


def randomization_order(model: nn.Module, volume: torch.Tensor | np.ndarray, *, age: float | torch.Tensor | None = None) -> list[str]:
    """Modules owning parameters directly, in reverse order of their first call in a forward pass."""
    from alzmri.explain.attribution import _as_batch, _device_of, trace_forward

    owners = {n: m for n, m in model.named_modules() if n and next(m.parameters(recurse=False), None) is not None}
    order: dict[str, None] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            order.setdefault(name, None)

        return hook

    trace_forward(model, _as_batch(volume, _device_of(model)), owners.items(), record, pre=True, age=age)
    return list(reversed(order))


def reinitialise(module: nn.Module) -> None:
    """Re-draw a module's own parameters (``reset_parameters()`` where it exists, else normal)."""
    reset = getattr(module, "reset_parameters", None)
    if callable(reset):
        reset()
        return
    with torch.no_grad():
        for p in module.parameters(recurse=False):
            std = 1.0 / math.sqrt(p[0].numel()) if p.ndim >= 2 else 0.02
            p.normal_(0.0, std)


def map_similarity(a: np.ndarray, b: np.ndarray, *, top_fraction: float = 0.05, absolute: bool = False) -> dict[str, float]:
    """How alike two attribution maps of the same grid are.

    Args:
        a: a map.
        b: a map of the same shape.
        top_fraction: share of voxels counted as the "top" of each map.
        absolute: compare ``|a|`` and ``|b|`` (as for gradient maps).

    Returns:
        ``spearman`` (rank correlation of the flattened maps), ``pearson`` (linear correlation;
        both are 1 for two equal constant maps and 0 for a constant map against another map)
        and ``top_k_overlap`` (share of ``a``'s top ``k = ceil(top_fraction · voxels)`` voxels
        that are also among ``b``'s top ``k``).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise AlzmriError(f"maps differ in shape: {a.shape} vs {b.shape}")
    if not 0.0 < top_fraction <= 1.0:
        raise AlzmriError(f"top_fraction must be in (0, 1]; got {top_fraction}")
    if absolute:
        a, b = np.abs(a), np.abs(b)
    flat_a, flat_b = a.ravel(), b.ravel()
    k = max(1, math.ceil(top_fraction * flat_a.size))
    top_a = np.argpartition(-flat_a, k - 1)[:k]
    top_b = np.argpartition(-flat_b, k - 1)[:k]
    return {
        "spearman": _spearman(flat_a, flat_b),
        "pearson": _correlation(flat_a, flat_b, stats.pearsonr),
        "top_k_overlap": len(np.intersect1d(top_a, top_b)) / k,
    }


def summarize(results: Sequence[dict[str, Any]], threshold: float = 0.5) -> dict[str, Any]:
    """Verdict of a cascading randomisation: did the map change once all layers were random?

    Args:
        results: :func:`cascading_randomization`'s output.
        threshold: largest final Spearman correlation that counts as "changed".

    Returns:
        ``final_spearman`` (after the last step), ``passed`` (``final_spearman <= threshold``:
        the map depends on the weights) and a one-line ``message``.
    """
    if not results:
        raise AlzmriError("no randomisation steps to summarise")
    final = float(results[-1]["spearman"])
    passed = final <= threshold
    if passed:
        message = (
            f"passed: with all {len(results)} layers randomised the map's Spearman correlation with the original "
            f"fell to {final:.2f} (<= {threshold}), so it depends on the learned weights"
        )
    else:
        message = (
            f"failed: with all {len(results)} layers randomised the map still correlates with the original "
            f"(Spearman {final:.2f} > {threshold}); it reflects the input more than the model (Adebayo et al. 2018)"
        )
    return {"final_spearman": final, "passed": passed, "message": message}


def summarize_label_randomization(spearman: Sequence[float], threshold: float = 0.5) -> dict[str, Any]:
    """Verdict of the label-randomisation check: maps of the trained model vs a model trained on shuffled labels.

    Adebayo et al. (2018)'s data-randomisation test: a model trained on permuted labels has
    nothing true to find, so a trustworthy method's maps of it should not resemble the trained
    model's. The per-scan Spearman correlations are averaged.

    Args:
        spearman: one rank correlation per scan (same scan, same explained class, both models).
        threshold: largest mean correlation that counts as "different".

    Returns:
        ``mean_spearman``, ``n_scans``, ``passed`` and a one-line ``message``.
    """
    values = [float(v) for v in spearman]
    if not values:
        raise AlzmriError("no scans to compare for the label-randomisation check")
    mean = float(np.mean(values))
    passed = mean <= threshold
    verdict = "passed" if passed else "failed"
    relation = f"{mean:.2f} (<= {threshold}): the maps depend on what the model learned from the labels" if passed else (
        f"{mean:.2f} (> {threshold}): the maps look alike even though the other model learned nothing true (Adebayo et al. 2018)")
    return {"mean_spearman": mean, "n_scans": len(values), "passed": passed,
            "message": f"{verdict}: over {len(values)} scans the maps of the model trained on shuffled labels correlate with these at Spearman {relation}"}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return _correlation(np.ravel(a), np.ravel(b), stats.spearmanr)


def _correlation(a: np.ndarray, b: np.ndarray, fn: Callable[..., Any]) -> float:
    """Correlation; for a constant map (undefined): 1 if both maps are (about) equal, else 0."""
    if _is_constant(a) or _is_constant(b):
        return 1.0 if np.allclose(a, b, rtol=1e-5, atol=0.0) else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(a, b)[0])


def _is_constant(m: np.ndarray) -> bool:
    """No variation beyond float32 rounding (relative 1e-5 of the largest magnitude)."""
    span = float(np.ptp(m))
    return span <= 1e-5 * float(np.abs(m).max())


def _ssim(a: np.ndarray, b: np.ndarray) -> float | None:
    """SSIM (MONAI, Gaussian 7³ window, σ 1.5, data range 1) of the two maps, each min-max scaled to [0, 1]."""
    if a.ndim != 3 or min(a.shape) < _SSIM_WINDOW:
        return None
    from monai.metrics import SSIMMetric

    def scaled(m: np.ndarray) -> torch.Tensor:
        m = np.zeros_like(m) if _is_constant(m) else (m - m.min()) / np.ptp(m)
        return torch.as_tensor(m, dtype=torch.float32)[None, None]

    metric = SSIMMetric(spatial_dims=3, data_range=1.0, win_size=_SSIM_WINDOW)
    return float(metric(scaled(a), scaled(b)).mean())
