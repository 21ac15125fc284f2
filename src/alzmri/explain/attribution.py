"""Voxel attribution maps for one volume: Grad-CAM, Grad-CAM++, occlusion, gradients, IG.

:func:`attribute` returns a ``(D, H, W)`` float32 map in the grid of the model input for one
class of one scan. Where MONAI (``monai.visualize``) implements a method, MONAI computes it;
this module only prepares the model and the input, picks the layer and the class, and turns
MONAI's output into one map:

* ``gradcam`` -- MONAI ``GradCAM``: ``ReLU(Σ_c w_c A_c)`` with ``A`` the layer's output and
  ``w_c`` the mean over voxels of ``∂ logit_t / ∂ A_c``; trilinearly upsampled to the input.
* ``gradcam++`` -- MONAI ``GradCAMpp``: the same with Chattopadhyay et al.'s (2018) weights.
* ``occlusion`` -- MONAI ``OcclusionSensitivity``: ``p_t(x) − p_t(x occluded)``, ``p`` the
  softmax, averaged (Gaussian-weighted in the default mode) over the windows covering a voxel.
  The occluded window is pulled towards the scan's *background* value ``b``:
  ``x' = b + (x − b)(1 − g)`` with ``g`` MONAI's Gaussian window (1 at its centre), i.e.
  occluded tissue is removed, not replaced by something else (see :func:`_occlusion` for why).
* ``saliency`` -- MONAI ``VanillaGrad`` (Simonyan et al. 2014): ``max_channels |∂ logit_t / ∂x|``.
* ``smoothgrad`` -- MONAI ``SmoothGrad`` (Smilkov et al. 2017): ``max_channels |mean_k ∂ logit_t
  / ∂x (x + ε_k)|``, ``ε_k ~ N(0, σ²)``.
* ``integrated_gradients`` -- written here (Sundararajan et al. 2017): ``Σ_channels (x − x') ⊙
  ∫₀¹ ∂ logit_t(x' + α (x − x')) / ∂x dα`` by the trapezoid rule, baseline ``x' = 0``.

Integrated gradients are written here because MONAI has no implementation and Captum is not a
dependency; they are about twenty lines (:func:`_integrated_gradients`).

Every method runs the model in eval mode with its parameters frozen (gradients are taken with
respect to the input or to a layer's activations only) and restores afterwards, for every
module and parameter, the training flag, ``requires_grad``, ``.grad``, in-place flags and
hooks (MONAI's ``ModelWithHooks`` registers hooks it never removes, sets the hooked module's
``inplace`` to False and calls ``model.zero_grad()``; all of this is undone). The computation
runs on the device of the model's parameters (CPU for a CPU model).

Cost: Grad-CAM/++ is one forward pass plus a backward pass from the logits down to the chosen
layer only (nothing before the layer keeps an autograd graph); saliency is one forward and one
full backward to the input, smoothgrad ``n_samples`` of those, integrated gradients ``steps + 1``
(batched); occlusion is one forward pass per occlusion window (thousands, see :func:`attribute`).
For ``liu2022`` at 128³ on an idle 2-core CPU (``benchmarks/explain_speed.py``) a Grad-CAM takes
0.3 s at width 1 and 4.8 s at width 8, barely more than a forward pass (4.8 s at width 8, almost
all in its third convolution: 256 → 512 channels, 5³ kernel on a 29³ grid).

Models with an age input (``model.uses_age``, e.g. ``liu2022(age_encoding=True)``) get their
age through a small wrapper module that fixes it, since MONAI calls ``model(x)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from alzmri.explain.config import METHODS
from alzmri.utils.errors import AlzmriError


# Options each method accepts through ``attribute(**options)``, with their defaults.
_OPTIONS: dict[str, dict[str, Any]] = {
    "gradcam": {},
    "gradcam++": {},
    "occlusion": {"mask_size": None, "overlap": 0.5, "mode": "gaussian", "n_batch": None, "background": None},
    "saliency": {},
    "smoothgrad": {"n_samples": 25, "stdev_spread": 0.15, "seed": 0},
    "integrated_gradients": {"steps": 32, "baseline": None, "batch_size": 4},
}
_MAX_LISTED_LAYERS = 40
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


class _Net(nn.Module):
    """The model as MONAI sees it: ``forward(x)`` only, with the scan's age fixed if needed.

    The user's model is the ``net`` submodule, so its layer ``"features.12"`` is ``"net.features.12"`` here.

    Args:
        model: the classifier.
        age: the scan's age in years, or None for models without an age input.
    """

    def __init__(self, model: nn.Module, age: torch.Tensor | None = None) -> None:
        super().__init__()
        self.net = model
        self.age = age

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, D, H, W)`` → ``(N, num_classes)`` logits (the one age repeated N times)."""
        if self.age is None:
            return self.net(x)
        return self.net(x, age=self.age.expand(x.shape[0]))


# ----------------------------------------------------------------------------------------------
# Public API


def attribute(
    model: nn.Module,
    volume: torch.Tensor | np.ndarray,
    method: str,
    *,
    target: int | None = None,
    layer: str | None = None,
    model_name: str | None = None,
    age: float | torch.Tensor | None = None,
    spatial_dims: int = 3,
    **options: Any,
) -> np.ndarray:
    """Attribution map of one volume (or, with ``spatial_dims=2``, one ``(H, W)`` / ``(C, H, W)`` slice) for one class.

    Args:
        model: a classifier mapping ``(N, C, D, H, W)`` to ``(N, num_classes)`` logits.
        volume: ``(D, H, W)`` or ``(C, D, H, W)`` tensor or array (one scan, no batch axis).
        method: one of :data:`METHODS` (see the module docstring for what each computes).
        target: class whose logit (or probability, for occlusion) is explained; default the
            class the model predicts for ``volume``.
        layer: Grad-CAM/Grad-CAM++ only: name of the module (as in ``model.named_modules()``)
            whose output is the feature map. Default: the registry's ``gradcam_layer`` of
            ``model_name`` when given, else the last module run that outputs a
            ``(N, C, D, H, W)`` tensor larger than 1³ (see :func:`feature_map_layers`). A ViT
            token layer ``(N, 1 + g³, hidden)`` (e.g. vit3d's ``vit.blocks.11.norm1``) is
            accepted: the class token is dropped and the patch tokens are laid out on their
            ``g³`` grid with the hidden features as channels (the usual ViT Grad-CAM reshaping).
        model_name: registry name of ``model``, used only for the default Grad-CAM layer.
        age: the scan's age in years, required for (and only for) models with ``uses_age``.
        **options: method options, unknown ones are an error:

            * occlusion: ``mask_size`` (edge of the occluded cube, default ``max(1, min edge // 8)``),
              ``overlap`` (0.5: windows step by half a mask), ``mode`` (MONAI's: ``"gaussian"``
              multiplies the window by 1 − a Gaussian, ``"mean_patch"``, ``"mean_img"`` or a
              float fill value), ``n_batch`` (occluded copies per forward pass; default
              ``max(1, min(16, 4e6 // voxels))``), ``background`` (the value the ``"gaussian"``
              mode pulls occluded voxels towards; default the volume's background,
              :func:`alzmri.preprocessing.brain_mask.background_value`). Cost: one forward pass per window, about
              ``((edge − mask) / (mask · (1 − overlap)) + 1)³`` of them: ~15³ = 3,375 with the
              defaults at any input size (minutes at 128³ on CPU); ``mask_size = edge // 4``
              gives ~7³ = 343.
            * smoothgrad: ``n_samples`` (25), ``stdev_spread`` (0.15: noise σ = 0.15 · (max − min)
              of the volume), ``seed`` (0; the global torch RNG is left untouched).
            * integrated_gradients: ``steps`` (32 trapezoid intervals, ``steps + 1`` gradient
              evaluations), ``baseline`` (None = zeros, a float or an array shaped like
              ``volume``), ``batch_size`` (4 interpolated volumes per backward pass).

    Returns:
        ``(D, H, W)`` float32 array in the input grid. Grad-CAM/++: non-negative, raw (not
        rescaled), trilinearly upsampled from the layer's grid as MONAI does; occlusion: the
        drop in the target's softmax probability when the neighbourhood is occluded (positive =
        evidence for the target); saliency, smoothgrad: non-negative gradient magnitudes;
        integrated gradients: signed, summing (over voxels) to about
        ``logit(x) − logit(baseline)``.

    Raises:
        AlzmriError: unknown method, option, layer or class; a missing or unexpected age; a
            volume that is not one 3D scan.
    """
    if method not in METHODS:
        raise AlzmriError(f"unknown attribution method {method!r}; choose one of {', '.join(METHODS)}")
    unknown = sorted(set(options) - set(_OPTIONS[method]))
    if unknown:
        accepted = ", ".join(_OPTIONS[method]) or "none"
        raise AlzmriError(f"method {method!r} does not take {', '.join(unknown)}; its options: {accepted}")
    if layer is not None and method not in ("gradcam", "gradcam++"):
        raise AlzmriError(f"layer= applies to gradcam and gradcam++ only, not {method!r}")
    opts = {**_OPTIONS[method], **options}
    device = _device_of(model)
    x = _as_batch(volume, device, spatial_dims)
    with _preserved(model):
        net = _Net(model, _age_tensor(model, age, device))
        net.eval()
        if method in ("gradcam", "gradcam++"):
            # No separate forward pass for the predicted class: MONAI takes it from the CAM's own.
            layer = resolve_layer(model, x[0], layer=layer, model_name=model_name, age=age, spatial_dims=spatial_dims)
            result = _cam(net, x, target, layer, plus=method == "gradcam++")
        elif method == "occlusion":
            result = _occlusion(net, x, _target_class(net, x, target), **opts)
        elif method == "saliency":
            from monai.visualize import VanillaGrad

            result = VanillaGrad(net)(x.detach().clone(), index=_target_class(net, x, target))[0].abs().amax(0)
        elif method == "smoothgrad":
            result = _smoothgrad(net, x, _target_class(net, x, target), **opts)
        else:
            result = _integrated_gradients(net, x, _target_class(net, x, target), **opts)[0].sum(0)
    return result.detach().float().cpu().numpy().astype(np.float32, copy=False)


def predicted_class(model: nn.Module, volume: torch.Tensor | np.ndarray, *, age: float | torch.Tensor | None = None, spatial_dims: int = 3) -> int:
    """The class with the highest logit for one scan (eval mode; the model's state is kept)."""
    device = _device_of(model)
    x = _as_batch(volume, device, spatial_dims)
    with _preserved(model):
        net = _Net(model, _age_tensor(model, age, device))
        net.eval()
        return _target_class(net, x, None)


def integrated_gradients_completeness(
    model: nn.Module,
    volume: torch.Tensor | np.ndarray,
    *,
    target: int | None = None,
    steps: int = 32,
    baseline: float | np.ndarray | torch.Tensor | None = None,
    age: float | torch.Tensor | None = None,
) -> dict[str, float]:
    """Check the completeness axiom of integrated gradients (Sundararajan et al. 2017).

    The attributions of all voxels should sum to ``logit_t(x) − logit_t(baseline)``; the
    trapezoid rule with ``steps`` intervals approximates the path integral, so the gap shrinks
    as ``steps`` grows (it is exact for a model linear along the path).

    Args:
        model: the classifier.
        volume: ``(D, H, W)`` or ``(C, D, H, W)`` scan.
        target: explained class; default the predicted one.
        steps: trapezoid intervals.
        baseline: None (zeros), a float or an array shaped like ``volume``.
        age: the scan's age for models with an age input.

    Returns:
        ``attribution_sum`` (Σ attributions), ``logit_difference`` (``logit_t(x) − logit_t(x')``)
        and ``relative_error`` (``|sum − difference| / max(|difference|, 1e-12)``).
    """
    device = _device_of(model)
    x = _as_batch(volume, device)
    with _preserved(model):
        net = _Net(model, _age_tensor(model, age, device))
        net.eval()
        target = _target_class(net, x, target)
        attributions = _integrated_gradients(net, x, target, steps=steps, baseline=baseline, batch_size=4)
        base = _baseline(x, baseline)
        with torch.no_grad():
            logits = net(torch.cat([x, base]))[:, target]
    total = float(attributions.sum())
    difference = float(logits[0] - logits[1])
    return {
        "attribution_sum": total,
        "logit_difference": difference,
        "relative_error": abs(total - difference) / max(abs(difference), 1e-12),
    }


def resolve_layer(
    model: nn.Module,
    volume: torch.Tensor | np.ndarray,
    *,
    layer: str | None = None,
    model_name: str | None = None,
    age: float | torch.Tensor | None = None,
    spatial_dims: int = 3,
) -> str:
    """The Grad-CAM layer to use: ``layer``, else the registry's, else the last feature map.

    Args:
        model: the classifier.
        volume: a scan of the size the map will be computed for (needed to see layer outputs).
        layer: an explicit module name; checked against ``model.named_modules()``.
        model_name: registry name of ``model``; its ``gradcam_layer`` is the default.
        age: the scan's age for models with an age input.

    Returns:
        A module name of ``model``.

    Raises:
        AlzmriError: the name is not a module of the model (the message lists the modules
            that output feature maps) or no module outputs one.
    """
    if layer is None and model_name is not None:
        from alzmri.models import model_info

        layer = model_info(model_name).gradcam_layer or None
    names = dict(model.named_modules())
    if layer is not None and layer in names and layer != "":
        return layer
    candidates = feature_map_layers(model, volume, age=age, spatial_dims=spatial_dims)
    if layer is None:
        if not candidates:
            raise AlzmriError("no module of this model outputs a (N, C, D, H, W) feature map; Grad-CAM needs one")
        return candidates[-1]
    shown = candidates[-_MAX_LISTED_LAYERS:]
    more = f" (the last {len(shown)} of {len(candidates)})" if len(candidates) > len(shown) else ""
    raise AlzmriError(f"the model has no layer {layer!r}; layers with feature-map outputs{more}: {', '.join(shown)}")


def feature_map_layers(model: nn.Module, volume: torch.Tensor | np.ndarray, *, age: float | torch.Tensor | None = None, spatial_dims: int = 3) -> list[str]:
    """Names of the modules whose output Grad-CAM can use, in the order they run.

    That is modules returning a 5D ``(N, C, D, H, W)`` tensor of more than one voxel (a pooled
    1³ map has no location) or ViT-style tokens ``(N, g³ [+ 1], hidden)`` with ``g >= 2``.
    Found with one forward pass on ``volume`` (no gradients).
    """
    device = _device_of(model)
    x = _as_batch(volume, device, spatial_dims)
    found: dict[str, None] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if not isinstance(output, torch.Tensor):
                return
            if (output.ndim == 2 + spatial_dims and math.prod(output.shape[2:]) > 1) or (spatial_dims == 3 and _token_grid(output.shape) is not None):
                found.setdefault(name, None)

        return hook

    trace_forward(model, x, [(n, m) for n, m in model.named_modules() if n], record, age=age)
    return list(found)


def trace_forward(
    model: nn.Module,
    x: torch.Tensor,
    modules: Iterable[tuple[str, nn.Module]],
    make_hook: Callable[[str], Callable[..., None]],
    *,
    pre: bool = False,
    age: float | torch.Tensor | None = None,
) -> None:
    """One no-grad eval-mode forward pass with ``make_hook(name)`` attached to each module
    (as a forward pre-hook with ``pre=True``); the hooks are removed and the model's state kept."""
    with _preserved(model):
        net = _Net(model, _age_tensor(model, age, _device_of(model)))
        net.eval()
        handles = [m.register_forward_pre_hook(make_hook(n)) if pre else m.register_forward_hook(make_hook(n)) for n, m in modules]
        try:
            with torch.no_grad():
                net(x)
        finally:
            for handle in handles:
                handle.remove()


# ----------------------------------------------------------------------------------------------
# Methods


def _cam(net: _Net, x: torch.Tensor, target: int | None, layer: str, *, plus: bool) -> torch.Tensor:
    """MONAI Grad-CAM(++) on ``net.<layer>``, upsampled by MONAI's trilinear default, not rescaled.

    ``target=None`` lets MONAI explain the arg-max class of the same forward pass.
    """
    from monai.visualize import GradCAM, GradCAMpp
    from monai.visualize.class_activation_maps import ModelWithHooks

    class Hooks(ModelWithHooks):
        """MONAI's hooks, checking the class and laying ViT tokens out on their patch grid."""

        def class_score(self, logits: torch.Tensor, class_idx: Any) -> torch.Tensor:
            if target is not None:
                _check_class(target, logits.shape[1])
            return super().class_score(logits, class_idx)

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Backward hook for .* is not triggered")
                try:
                    logits, acti, grad = super().__call__(*args, **kwargs)
                except KeyError:  # MONAI found no stored activation: the layer never ran
                    raise AlzmriError(f"layer {layer!r} does not run in the model's forward pass; pick another layer") from None
            if not grad or not isinstance(acti[0], torch.Tensor):
                raise AlzmriError(f"layer {layer!r} gives Grad-CAM no tensor output with a gradient from the class score; pick another layer")
            return logits, tuple(_as_feature_map(a, layer) for a in acti), tuple(_as_feature_map(g, layer) for g in grad)

    # Parameters are frozen and the input needs no gradient, so nothing before the layer builds
    # an autograd graph: the layer's output is made a fresh graph root here, and backward stops
    # at the layer instead of running down to the input (most of the cost at 128³).
    module = net.get_submodule(f"net.{layer}")
    root = module.register_forward_hook(_graph_root)
    hooks = None
    try:
        hooks = Hooks(net, f"net.{layer}", register_forward=True, register_backward=True)
        cam_class = GradCAMpp if plus else GradCAM
        cam = cam_class(nn_module=hooks, target_layers=f"net.{layer}", postprocessing=lambda a: a)
        with warnings.catch_warnings():
            # Expected: the hooked layer's inputs need no gradient (see above).
            warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with respect to module outputs")
            cam_map = cam(x.detach(), class_idx=target)
    finally:
        root.remove()
        if hooks is not None:
            # MONAI keeps the layer's activation, gradient and class score on the hooks object, whose
            # backward-hook closure the activation's autograd graph holds in turn: a cycle through C++
            # that Python's collector cannot see, so every call leaked the feature maps (found by the
            # serve load test: ~150 kB per upload). Dropping the tensors breaks it.
            hooks.activations.clear()
            hooks.gradients.clear()
            hooks.score = None
    return cam_map[0, 0]


def _graph_root(_module: nn.Module, _inputs: Any, output: Any) -> Any:
    """Forward hook: a layer output without autograd history becomes a (non-leaf) graph root."""
    if isinstance(output, torch.Tensor) and not output.requires_grad:
        return output.detach().requires_grad_(True).clone()
    return None


class _Shifted(nn.Module):
    """``net(z + shift)``: the model seen from an input whose zero is ``shift``."""

    def __init__(self, net: nn.Module, shift: float) -> None:
        super().__init__()
        self.net = net
        self.shift = float(shift)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits of ``z + shift``."""
        return self.net(z + self.shift)


def _occlusion(
    net: _Net,
    x: torch.Tensor,
    target: int,
    *,
    mask_size: int | None,
    overlap: float,
    mode: str | float,
    n_batch: int | None,
    background: float | None,
) -> torch.Tensor:
    """MONAI occlusion sensitivity as the drop of the target's softmax probability.

    What the occluded window is filled with decides what the map can show. MONAI's
    ``"gaussian"`` mode multiplies the window by ``1 − g``, pulling it towards 0. In a z-scored
    volume 0 is the brain's *mean* intensity, while the background is about −3.5: every window
    in the background gets a blob of grey-matter-like intensity painted into it, a strong
    signal no training scan had, the prediction moves, and the map lights up outside the brain
    (seen on real scans: the hot spots lay in the background corners). Here the window is
    pulled towards the scan's background value ``b`` instead (MONAI runs on ``x − b`` and the
    model sees ``b`` added back, so MONAI's Gaussian window weighting is kept): occluding means
    removing tissue, as the skull stripping removed everything outside the brain; a window of
    constant background stays as it is and carries no evidence, and where the background is
    not constant (no skull stripping) its noise or artefacts are still occluded. The other
    modes (a float fill value, ``mean_patch``, ``mean_img``) are MONAI's as they are.
    """
    from monai.visualize import OcclusionSensitivity

    spatial = x.shape[2:]
    if mask_size is None:
        mask_size = max(1, min(spatial) // 8)
    if not 1 <= int(mask_size) <= min(spatial):
        raise AlzmriError(f"occlusion mask_size must be between 1 and {min(spatial)} voxels; got {mask_size}")
    if not 0.0 <= overlap < 1.0:
        raise AlzmriError(f"occlusion overlap must be in [0, 1); got {overlap}")
    if isinstance(mode, (int, float)) and not isinstance(mode, bool):
        mode = float(mode)
    elif mode not in ("gaussian", "mean_patch", "mean_img"):
        raise AlzmriError(f"occlusion mode must be 'gaussian', 'mean_patch', 'mean_img' or a number; got {mode!r}")
    if n_batch is None:
        n_batch = max(1, min(16, 4_000_000 // math.prod(spatial)))
    shift = 0.0
    if mode == "gaussian":
        from alzmri.preprocessing.brain_mask import background_value

        shift = float(background_value(x[0].mean(0).cpu().numpy())) if background is None else float(background)
    model = _Shifted(net, shift)
    # Our own activation: MONAI's ``activate=True`` picks sigmoid vs softmax from the *input's*
    # channel count, which would apply a sigmoid to a single-channel MRI's 2-class logits.
    occlusion = OcclusionSensitivity(
        model, mask_size=int(mask_size), n_batch=int(n_batch), verbose=False, mode=mode, overlap=overlap, activate=_probabilities
    )
    with torch.no_grad(), warnings.catch_warnings():
        # MONAI 1.6 indexes with lists of slices, which torch deprecates; harmless here.
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing")
        baseline = _probabilities(net(x))[0, target]
        occluded, _ = occlusion(x - shift)
    occluded = occluded.as_tensor() if hasattr(occluded, "as_tensor") else occluded  # MetaTensor → Tensor
    return baseline - occluded[0, target]


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes (sigmoid for a single-logit model)."""
    return logits.sigmoid() if logits.shape[1] == 1 else logits.softmax(1)


def _smoothgrad(net: _Net, x: torch.Tensor, target: int, *, n_samples: int, stdev_spread: float, seed: int) -> torch.Tensor:
    """MONAI SmoothGrad (mean signed gradient over noisy copies), then |·| max over channels."""
    from monai.visualize import SmoothGrad

    if n_samples < 1:
        raise AlzmriError(f"smoothgrad n_samples must be at least 1; got {n_samples}")
    smooth = SmoothGrad(net, stdev_spread=stdev_spread, n_samples=int(n_samples), magnitude=False, verbose=False)
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        torch.manual_seed(seed)
        mean_gradient = smooth(x.detach().clone(), index=target)
    return mean_gradient[0].abs().amax(0)


def _integrated_gradients(
    net: nn.Module,
    x: torch.Tensor,
    target: int,
    *,
    steps: int,
    baseline: float | np.ndarray | torch.Tensor | None,
    batch_size: int,
) -> torch.Tensor:
    """Integrated gradients (Sundararajan et al. 2017), written here: MONAI lacks them.

    ``(x − x') ⊙ Σ_k w_k ∇_x logit_t(x' + α_k (x − x'))`` with ``α_k = k / steps``,
    ``k = 0 … steps`` and trapezoid weights ``w = (½, 1, …, 1, ½) / steps``.

    Returns:
        ``(1, C, D, H, W)`` attributions (signed).
    """
    if steps < 1:
        raise AlzmriError(f"integrated_gradients steps must be at least 1; got {steps}")
    base = _baseline(x, baseline)
    alphas = torch.linspace(0.0, 1.0, steps + 1, device=x.device)
    weights = torch.full((steps + 1,), 1.0 / steps, device=x.device)
    weights[[0, -1]] /= 2
    path_integral = torch.zeros_like(x)
    for start in range(0, steps + 1, max(1, int(batch_size))):
        a = alphas[start : start + batch_size].view(-1, *[1] * (x.ndim - 1))
        points = (base + a * (x - base)).detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(net(points)[:, target].sum(), points)
        w = weights[start : start + batch_size].view_as(a)
        path_integral += (w * gradient).sum(0, keepdim=True)
    return (x - base) * path_integral


# ----------------------------------------------------------------------------------------------
# Helpers


def _device_of(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _as_batch(volume: torch.Tensor | np.ndarray, device: torch.device, spatial_dims: int = 3) -> torch.Tensor:
    """``(D, H, W)`` or ``(C, D, H, W)`` (slices: ``(H, W)`` or ``(C, H, W)``) → a float32 batch of one, without grad history."""
    x = torch.as_tensor(np.asarray(volume) if not isinstance(volume, torch.Tensor) else volume)
    if x.ndim == spatial_dims:
        x = x[None]
    if x.ndim != spatial_dims + 1:
        shapes = "(D, H, W) or (C, D, H, W)" if spatial_dims == 3 else "(H, W) or (C, H, W)"
        raise AlzmriError(f"expected one {'scan' if spatial_dims == 3 else 'slice'} shaped {shapes}; got shape {tuple(x.shape)}")
    return x.detach().to(device=device, dtype=torch.float32)[None]


def _baseline(x: torch.Tensor, baseline: float | np.ndarray | torch.Tensor | None) -> torch.Tensor:
    if baseline is None:
        return torch.zeros_like(x)
    if isinstance(baseline, (int, float)):
        return torch.full_like(x, float(baseline))
    base = torch.as_tensor(np.asarray(baseline) if not isinstance(baseline, torch.Tensor) else baseline)
    base = base.to(device=x.device, dtype=x.dtype).reshape(-1, *x.shape[2:]) if base.numel() == x[0].numel() else None
    if base is None:
        raise AlzmriError(f"the integrated-gradients baseline must be a number or shaped like the volume {tuple(x.shape[1:])}")
    return base[None]


def _age_tensor(model: nn.Module, age: float | torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    uses_age = bool(getattr(model, "uses_age", False))
    if uses_age and age is None:
        raise AlzmriError("this model was built with an age input: pass the scan's age in years (age=...)")
    if not uses_age and age is not None:
        raise AlzmriError("this model takes no age input; leave age unset")
    if age is None:
        return None
    value = torch.as_tensor(age, dtype=torch.float32, device=device).reshape(-1)
    if value.numel() != 1:
        raise AlzmriError(f"pass one age for the one scan; got {value.numel()} values")
    return value


def _target_class(net: _Net, x: torch.Tensor, target: int | None) -> int:
    with torch.no_grad():
        logits = net(x)
    if target is None:
        return int(logits.argmax(1)[0])
    _check_class(target, logits.shape[1])
    return int(target)


def _check_class(target: int, n_classes: int) -> None:
    if not 0 <= int(target) < n_classes:
        raise AlzmriError(f"target class {target} does not exist; the model has {n_classes} classes (0..{n_classes - 1})")


def _token_grid(shape: torch.Size | tuple[int, ...]) -> int | None:
    """Edge ``g`` of the patch grid when ``shape`` is ViT tokens ``(N, g³ [+ 1 class token], hidden)``."""
    if len(shape) != 3 or shape[1] < 2:
        return None
    for tokens in (shape[1] - 1, shape[1]):
        g = round(tokens ** (1 / 3))
        if g >= 2 and g**3 == tokens:
            return g
    return None


def _as_feature_map(t: torch.Tensor, layer: str) -> torch.Tensor:
    """A 5D (or 2D models' 4D) map unchanged; ViT tokens ``(N, [1 +] g³, hidden)`` → ``(N, hidden, g, g, g)`` without the class token."""
    if t.ndim in (4, 5):
        return t
    g = _token_grid(t.shape)
    if g is None:
        raise AlzmriError(
            f"layer {layer!r} outputs shape {tuple(t.shape)}, not a (N, C, D, H, W) feature map or ViT tokens on a "
            "cubic patch grid; pick a convolutional layer, or use saliency, smoothgrad, integrated_gradients or occlusion"
        )
    patches = t[:, -(g**3) :]
    return patches.transpose(1, 2).reshape(t.shape[0], t.shape[2], g, g, g)


@contextmanager
def _preserved(model: nn.Module) -> Iterator[None]:
    """Freeze the parameters for the block; restore every flag, gradient and hook after it.

    Restored per module: ``training``, ``inplace`` (set False inside, as full backward hooks
    need outputs that later layers do not overwrite), hooks added inside and
    ``_is_full_backward_hook``; per parameter: ``requires_grad`` and ``.grad``.
    """
    modules = list(model.modules())
    training = [m.training for m in modules]
    inplace = [m.__dict__.get("inplace") for m in modules]
    full_backward = [m.__dict__.get("_is_full_backward_hook") for m in modules]
    hooks = [{attr: set(getattr(m, attr, {})) for attr in _HOOK_DICTS} for m in modules]
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    grads = [p.grad for p in params]
    try:
        for m in modules:
            if m.__dict__.get("inplace") is True:
                m.inplace = False
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for m, mode, flag, full, before in zip(modules, training, inplace, full_backward, hooks, strict=True):
            m.training = mode
            if flag is not None:
                m.inplace = flag
            m.__dict__["_is_full_backward_hook"] = full
            for attr, keys in before.items():
                registry = getattr(m, attr, None)
                if registry is not None:
                    for key in set(registry) - keys:
                        del registry[key]
        for p, flag, grad in zip(params, requires_grad, grads, strict=True):
            p.requires_grad_(flag)
            p.grad = grad
