"""Pictures of a map on its scan: a tri-planar overlay PNG and a GIF sweeping the three planes.

Both take arrays in the model's input grid (RAS voxel order, as the preprocessing writes them:
axis 0 left→right, 1 posterior→anterior, 2 inferior→superior) and colour the map by the
predicted class, so a glance tells which decision the evidence supports. The overlay outlines
the brain mask the map was judged against and carries a note where the map needs one: an
empty map (no positive evidence: the slices pass through the middle of the volume) or one
whose evidence lies mostly outside the brain.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from alzmri.explain.brain import EMPTY_MAP  # noqa: E402
from alzmri.utils.atomic import atomic_path  # noqa: E402
from alzmri.utils.figures import save_figure  # noqa: E402

CLASS_COLOURS = {"CN": "Blues", "MCI": "Greens", "AD": "Reds"}
PLANES = (("sagittal", 0), ("coronal", 1), ("axial", 2))


def _slice(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """A 2D slice shown in radiological-free display order (anterior/superior up)."""
    return np.rot90(np.take(volume, index, axis=axis))


def _scaled(volume: np.ndarray) -> np.ndarray:
    """Intensities to [0, 1] by the 1st–99th percentiles of the non-zero voxels."""
    values = volume[volume != 0] if np.any(volume != 0) else volume.ravel()
    low, high = np.percentile(values, [1, 99])
    return np.clip((volume - low) / max(high - low, 1e-6), 0, 1)


def _normalised(attribution: np.ndarray) -> np.ndarray:
    positive = np.clip(attribution, 0, None)
    peak = positive.max()
    return positive / peak if peak > 0 else positive


def plot_triplanar(
    volume: np.ndarray,
    attribution: np.ndarray,
    path: Path,
    *,
    predicted: str,
    mask: np.ndarray | None = None,
    title: str = "",
    at: tuple[int, int, int] | None = None,
    brain: np.ndarray | None = None,
    note: str = "",
) -> Path:
    """Three orthogonal slices through the map's peak (or ``at``), map over the scan, threshold contour.

    Args:
        volume: the model input ``(D, H, W)``.
        attribution: the map, same shape.
        path: PNG to write.
        predicted: predicted class (chooses the colour map).
        mask: thresholded map, drawn as a yellow contour.
        title: figure title.
        at: voxel the slices pass through (default: the map's maximum; the middle of the volume
            for an empty map, which is also marked "empty map" in the picture).
        brain: brain mask the map was judged against, drawn as a thin cyan contour.
        note: a warning printed under the slices (e.g. evidence outside the brain).
    """
    heat = _normalised(attribution)
    empty = not heat.any()
    if at is None:
        at = tuple(s // 2 for s in heat.shape) if empty else tuple(int(i) for i in np.unravel_index(int(np.argmax(heat)), heat.shape))
    image = _scaled(volume)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.8))
    for ax, (name, axis) in zip(axes, PLANES, strict=True):
        ax.imshow(_slice(image, axis, at[axis]), cmap="gray", vmin=0, vmax=1)
        shown = _slice(heat, axis, at[axis])
        ax.imshow(np.ma.masked_less(shown, 0.05), cmap=CLASS_COLOURS.get(predicted, "hot"), vmin=0, vmax=1, alpha=0.6)
        _outline(ax, brain, axis, at[axis], "cyan", 0.6)
        _outline(ax, mask, axis, at[axis], "yellow", 0.8)
        ax.set_title(f"{name} {at[axis]}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title or f"attribution for {predicted}", fontsize=10)
    notes = [EMPTY_MAP if empty else "", note]
    _note(fig, "\n".join(n for n in notes if n))
    return save_figure(fig, path)


def _outline(ax: plt.Axes, mask: np.ndarray | None, axis: int, index: int, colour: str, width: float) -> None:
    """Draw a binary mask's slice as a contour (nothing for no mask or an empty slice)."""
    if mask is None:
        return
    part = _slice(np.asarray(mask, dtype=float), axis, index)
    if part.any() and not part.all():
        ax.contour(part, levels=[0.5], colors=colour, linewidths=width)


def _note(fig: plt.Figure, text: str) -> None:
    """A warning under the slices, white on red so it is not missed."""
    if text:
        fig.text(0.5, 0.0, text, ha="center", va="top", fontsize=9, color="white", wrap=True,
                 bbox={"facecolor": "firebrick", "edgecolor": "none", "boxstyle": "round,pad=0.4"})


def _frame(image_slice: np.ndarray, heat_slice: np.ndarray, colours: str, size: int) -> Image.Image:
    rgb = np.repeat(image_slice[..., None], 3, axis=2)
    overlay = plt.get_cmap(colours)(heat_slice)[..., :3]
    alpha = (0.65 * np.clip(heat_slice * 1.5, 0, 1))[..., None] * (heat_slice[..., None] >= 0.05)
    blended = (1 - alpha) * rgb + alpha * overlay
    frame = Image.fromarray((blended * 255).astype(np.uint8))
    scale = max(1, size // max(frame.size))
    return frame.resize((frame.width * scale, frame.height * scale), Image.NEAREST)


def write_sweep_gif(volume: np.ndarray, attribution: np.ndarray, path: Path, *, predicted: str, size: int = 192, step: int = 1, duration_ms: int = 60) -> Path:
    """An animated GIF: the axial, then coronal, then sagittal slices in turn, map over scan.

    Args:
        volume: the model input ``(D, H, W)``.
        attribution: the map, same shape.
        path: GIF to write (atomically).
        predicted: predicted class (chooses the colour map).
        size: approximate frame edge in pixels (nearest-neighbour upscaling).
        step: use every ``step``-th slice.
        duration_ms: display time per frame.
    """
    image, heat = _scaled(volume), _normalised(attribution)
    colours = CLASS_COLOURS.get(predicted, "hot")
    frames = []
    for _, axis in reversed(PLANES):  # axial first
        for index in range(0, volume.shape[axis], step):
            frame = _frame(_slice(image, axis, index), _slice(heat, axis, index), colours, size)
            frames.append(frame.convert("P", palette=Image.ADAPTIVE, colors=128))
    width = max(f.width for f in frames)
    height = max(f.height for f in frames)
    padded = []
    for frame in frames:  # planes of a non-cubic grid differ in shape: centre each on one canvas
        canvas = Image.new("P", (width, height))
        canvas.putpalette(frame.getpalette())
        canvas.paste(frame, ((width - frame.width) // 2, (height - frame.height) // 2))
        padded.append(canvas)
    with atomic_path(path) as tmp:
        padded[0].save(tmp, format="GIF", save_all=True, append_images=padded[1:], duration=duration_ms, loop=0)
    return Path(path)
