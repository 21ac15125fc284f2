"""Per-image similarity of generated and true images: MSE, PSNR, SSIM, MS-SSIM (MONAI), whole image and inside the brain.

Images are in [-1, 1] (data range 2). SSIM uses MONAI's Gaussian window (11, sigma 1.5,
k1 0.01, k2 0.03: Wang et al. 2004, as scikit-image with ``gaussian_weights=True``); its map
covers the positions where the whole window fits, so "inside the brain" averages the map over the
brain mask cut the same way. MS-SSIM uses as many of Wang et al.'s five scales as the image allows
(each halving must leave room for the 11-wide window; 64² gets three, 256² all five), the
scale weights renormalised; the number used is reported.
"""

from __future__ import annotations

import numpy as np
import torch

DATA_RANGE = 2.0
_WINDOW, _SIGMA = 11, 1.5
_MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_scales(edge: int) -> int:
    """How many MS-SSIM scales an image of this (smallest) edge allows (at least 1).

    Each halving must leave the window room (``edge / 2^(s-1) >= 11``), and MONAI's own size check
    (``edge // (s-1)² > 10``, stricter for four scales) must pass.
    """

    def fits(s: int) -> bool:
        return edge // 2 ** (s - 1) >= _WINDOW and edge // max(1, s - 1) ** 2 > _WINDOW - 1

    return max([s for s in range(1, len(_MS_WEIGHTS) + 1) if fits(s)], default=1)


def _ssim_maps(pred: torch.Tensor, truth: torch.Tensor, dims: int) -> torch.Tensor:
    from monai.metrics.regression import compute_ssim_and_cs

    ssim, _ = compute_ssim_and_cs(pred, truth, spatial_dims=dims, kernel_size=[_WINDOW] * dims, kernel_sigma=[_SIGMA] * dims, data_range=DATA_RANGE)
    return ssim


def _inner(mask: torch.Tensor, dims: int) -> torch.Tensor:
    cut = _WINDOW // 2
    index = (slice(None), slice(None), *[slice(cut, -cut)] * dims)
    return mask[index]


def image_metrics(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per-image metrics of ``(N, C, *S)`` images in [-1, 1].

    Args:
        pred: generated (or baseline) images.
        truth: the true images.
        mask: ``(N, 1, *S)`` brain masks for the ``*_brain`` metrics (None: whole image only).

    Returns:
        Name → ``(N,)`` array: ``mse``, ``psnr``, ``ssim``, ``ms_ssim`` (and ``mse_brain``,
        ``psnr_brain``, ``ssim_brain`` with a mask).
    """
    from monai.metrics import MultiScaleSSIMMetric

    p = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))
    t = torch.from_numpy(np.ascontiguousarray(truth, dtype=np.float32))
    dims = p.dim() - 2
    axes = tuple(range(1, p.dim()))
    sq = (p - t) ** 2
    out: dict[str, np.ndarray] = {}
    mse = sq.mean(dim=axes)
    out["mse"] = mse.numpy()
    out["psnr"] = (10 * torch.log10(DATA_RANGE**2 / mse.clamp_min(1e-12))).numpy()
    ssim = _ssim_maps(p, t, dims)
    out["ssim"] = ssim.mean(dim=axes).numpy()
    scales = ms_ssim_scales(min(p.shape[2:]))
    weights = np.array(_MS_WEIGHTS[:scales]) / sum(_MS_WEIGHTS[:scales])
    metric = MultiScaleSSIMMetric(spatial_dims=dims, data_range=1.0, kernel_size=_WINDOW, kernel_sigma=_SIGMA, weights=tuple(weights), reduction="none")
    # MS-SSIM multiplies contrast terms that can be negative on [-1, 1] images; it is computed on images shifted to [0, 1]
    out["ms_ssim"] = metric((p + 1) / 2, (t + 1) / 2).reshape(len(p), -1).mean(dim=1).numpy() if scales > 1 else out["ssim"].copy()
    if mask is not None:
        m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).expand_as(p)
        count = m.sum(dim=axes).clamp_min(1.0)
        mse_brain = (sq * m).sum(dim=axes) / count
        out["mse_brain"] = mse_brain.numpy()
        out["psnr_brain"] = (10 * torch.log10(DATA_RANGE**2 / mse_brain.clamp_min(1e-12))).numpy()
        inner = _inner(m, dims)
        out["ssim_brain"] = ((ssim * inner).sum(dim=axes) / inner.sum(dim=axes).clamp_min(1.0)).numpy()
    out["ms_ssim_scales"] = np.full(len(p), scales, dtype=float)
    return out
