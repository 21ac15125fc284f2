"""Tri-planar before/after QC figure of one preprocessed scan.

The figure is drawn on a bare :class:`matplotlib.figure.Figure` with an Agg canvas rather than
through ``pyplot``: no global figure registry (so no leaks across hundreds of scans, and safe in
worker processes), and no dependency on a display or on the user's configured backend.

Display convention (neurological, the same for both rows): sagittal with superior up and
anterior to the right, coronal with superior up and the patient's right on the viewer's right,
axial with anterior up and the patient's right on the viewer's right. Arrays are in RAS voxel
order, so each slice is transposed and drawn with ``origin="lower"``.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image  # a required dependency of matplotlib, which already uses it to write PNGs

from alzmri.utils.atomic import atomic_path

_VIEWS = ("sagittal", "coronal", "axial")
_FIGSIZE = (7.0, 4.8)
_DPI = 80
_MASK_COLOUR = "#ff3b30"
# Palette size of the saved PNG: an RGBA PNG of a noisy scan is ~200 kB, a 64-colour palette
# PNG ~50 kB, with no visible loss for grey slices plus one contour colour.
_PNG_COLOURS = 64


def save_qc_figure(
    path: str | os.PathLike[str],
    before: np.ndarray,
    after: np.ndarray,
    before_mask: np.ndarray | None = None,
    after_mask: np.ndarray | None = None,
    title: str = "",
    row_labels: tuple[str, str] | None = None,
) -> None:
    """Write a 2×3 PNG: sagittal / coronal / axial slices of ``before`` (top) and ``after``.

    Slices pass through the centre of the mask's bounding box when a non-empty mask is given,
    else through the array centre. Each row is windowed to its own 1st–99th intensity
    percentile (inside the mask when there is one), and the mask outline is drawn as a contour.

    Args:
        path: output PNG path; written atomically.
        before: 3D raw input in RAS voxel order (after reorientation).
        after: 3D model-ready output in RAS voxel order; may differ in shape from ``before``.
        before_mask: boolean brain mask with ``before``'s shape, or None.
        after_mask: boolean brain mask with ``after``'s shape, or None.
        title: text drawn above the figure (e.g. ``sub-01 ses-01``).
        row_labels: text beside each row; default ``before``/``after`` with the array shape
            (pass your own when an array is a subsampled preview, so the shape is not misread).

    Raises:
        ValueError: an image is not 3D, or a mask's shape differs from its image's.
    """
    rows = [
        ("before", *_checked(before, before_mask, "before")),
        ("after", *_checked(after, after_mask, "after")),
    ]
    fig = Figure(figsize=_FIGSIZE, dpi=_DPI)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    axes = fig.subplots(2, 3)
    for r, (label, image, mask) in enumerate(rows):
        vmin, vmax = _window(image, mask)
        centre = _centre(image.shape, mask)
        for c, view in enumerate(_VIEWS):
            ax = axes[r, c]
            ax.imshow(_slice(image, c, centre), cmap="gray", vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest")
            if mask is not None:
                mslice = _slice(mask, c, centre).astype(np.float32)
                # A contour of a constant slice draws nothing and warns; skip it instead.
                if 0.0 < mslice.mean() < 1.0:
                    ax.contour(mslice, levels=[0.5], colors=_MASK_COLOUR, linewidths=0.8)
            ax.set_axis_off()
            if r == 0:
                ax.set_title(view, fontsize=8)
        # With the axes off a y-label would vanish, so the row label is plain figure text.
        text = row_labels[r] if row_labels else f"{label}\n{'×'.join(map(str, image.shape))}"
        axes[r, 0].text(-0.08, 0.5, text, transform=axes[r, 0].transAxes,
                        rotation=90, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.01, top=0.9 if title else 0.94, wspace=0.03, hspace=0.05)
    canvas = fig.canvas
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    # Median cut without dithering: dithering would add noise that defeats PNG compression.
    image = Image.fromarray(rgb).quantize(colors=_PNG_COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=True)


def _checked(image: np.ndarray, mask: np.ndarray | None, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate shapes and return a float image and a boolean mask (or None)."""
    image = np.asarray(image, dtype=np.float32)
    # Tolerate a trailing channel axis of size 1 (e.g. a (X, Y, Z, 1) NIfTI).
    while image.ndim > 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim != 3:
        raise ValueError(f"{name} image must be 3D, got shape {image.shape}")
    if mask is None:
        return image, None
    mask = np.asarray(mask).astype(bool)
    while mask.ndim > 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.shape != image.shape:
        raise ValueError(f"{name} mask shape {mask.shape} differs from its image shape {image.shape}")
    return image, mask


def _window(image: np.ndarray, mask: np.ndarray | None) -> tuple[float, float]:
    """1st–99th percentile of the finite voxels (inside the mask when it is non-empty)."""
    values = image[mask] if mask is not None and mask.any() else image.ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(values, [1, 99]))
    if hi <= lo:  # constant image: centre a unit window on it so it shows as mid-grey
        lo, hi = lo - 0.5, lo + 0.5
    return lo, hi


def _centre(shape: tuple[int, ...], mask: np.ndarray | None) -> tuple[int, int, int]:
    """Voxel at the centre of the mask's bounding box, or of the array when there is no mask."""
    if mask is not None and mask.any():
        nonzero = np.argwhere(mask)
        return tuple(int(v) for v in (nonzero.min(axis=0) + nonzero.max(axis=0)) // 2)  # type: ignore[return-value]
    return tuple(s // 2 for s in shape)  # type: ignore[return-value]


def _slice(volume: np.ndarray, axis: int, centre: tuple[int, int, int]) -> np.ndarray:
    """2D slice across ``axis`` at ``centre``, transposed so ``origin="lower"`` puts S (or A) up."""
    index: list[int | slice] = [slice(None)] * 3
    index[axis] = centre[axis]
    # Sagittal (A, S), coronal (R, S), axial (R, A): transposing puts the 2nd axis vertical.
    return volume[tuple(index)].T
