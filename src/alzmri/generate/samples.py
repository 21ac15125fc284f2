"""Pictures of a chain: input, the generated image at each later stage, the change maps, and a GIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alzmri.utils.atomic import atomic_path


def view(image: np.ndarray) -> np.ndarray:
    """A 2D picture of one ``(C, *S)`` image: the centre channel, or a volume's central axial slice."""
    x = np.asarray(image, dtype=np.float32)
    x = x[x.shape[0] // 2]
    if x.ndim == 3:  # RAS volume: axial slice, anterior up
        x = np.rot90(x[:, :, x.shape[2] // 2])
    return x


def chain_figure(rows: list[dict], stages: list[str], path: Path, title: str = "") -> Path:
    """One row per example: input, generated stages and the last change map; a second row of true images when given.

    Args:
        rows: dicts with ``name``, ``start`` (stage index), ``images`` (input then generated, ``(C, *S)``
            each in [-1, 1]) and optionally ``truth`` (the true images at the same stages, None where unknown).
        stages: the run's stages.
        path: PNG to write (atomically).
        title: figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(r["images"]) for r in rows) + 1
    lines = sum(2 if r.get("truth") else 1 for r in rows)
    fig, axes = plt.subplots(lines, columns, figsize=(1.9 * columns, 2.0 * lines), squeeze=False)
    line = 0
    for row in rows:
        start = row["start"]
        for kind in ("images", "truth"):
            series = row.get(kind)
            if not series:
                continue
            for j in range(columns):
                ax = axes[line, j]
                ax.axis("off")
                if j < len(series) and series[j] is not None:
                    ax.imshow(view(series[j]), cmap="gray", vmin=-1, vmax=1)
                    label = ("input " if j == 0 and kind == "images" else ("true " if kind == "truth" else "generated ")) + stages[start + j]
                    ax.set_title(f"{row['name'] if j == 0 else ''}\n{label}", fontsize=6)
            if kind == "images" and len(series) > 1:
                change = view(series[-1]) - view(series[0])
                limit = max(float(np.abs(change).max()), 1e-3)
                axes[line, columns - 1].imshow(change, cmap="RdBu_r", vmin=-limit, vmax=limit)
                axes[line, columns - 1].set_title(f"change to {stages[start + len(series) - 1]}\n(±{limit:.2f})", fontsize=6)
            line += 1
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def chain_gif(images: list[np.ndarray], stages: list[str], path: Path, frame_ms: int = 700) -> Path:
    """An animated GIF through the chain (input, then each generated stage), one gray frame per stage, labelled."""
    from PIL import Image, ImageDraw

    frames = []
    for image, stage in zip(images, stages, strict=True):
        x = np.clip((view(image) + 1.0) * 127.5, 0, 255).astype(np.uint8)
        frame = Image.fromarray(x).resize((max(256, x.shape[1]), max(256, x.shape[0]) * x.shape[0] // max(x.shape[0], 1)), Image.NEAREST).convert("L")
        ImageDraw.Draw(frame).text((4, 4), stage, fill=255)
        frames.append(frame)
    with atomic_path(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0)
    return path
