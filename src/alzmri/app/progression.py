"""``alzmri serve --progression RUN``: the later stages a progression run generates from the upload, and what the served model says of each.

The run must take what the served model takes (the same preprocessing or slicing, checked at
start) and its stages must be the model's classes. The chain starts at the stage the model
predicts for the upload (nothing follows the last stage); each generated image is classified
again, so the page shows whether the chain moves the model's stage as it should. Generated
images are a model's guess at an average course, not this person's future: the page says so.
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from alzmri.app.figures import figure, png
from alzmri.evaluation.progression.evaluate import check_inputs
from alzmri.generate.data import from_unit, to_unit
from alzmri.generate.run import ProgressionRun, load_run
from alzmri.generate.samples import chain_gif, view
from alzmri.utils.errors import AlzmriError

CAVEAT = "generated images: what the run learned of an average course from this stage on, not a prediction of this person's future"


class Progression:
    """A loaded progression run, checked against the served model."""

    def __init__(self, path: str | Path, classes: list[str], inputs: Any) -> None:
        self.run: ProgressionRun = load_run(path)
        missing = [s for s in self.run.stages if s not in classes]
        if missing:
            raise AlzmriError(f"the progression run's stages ({', '.join(self.run.stages)}) are not all classes of the served model "
                              f"({', '.join(classes)}): {', '.join(missing)} missing; serve a run trained on the model's classes")  # fmt: skip
        check_inputs(self.run, inputs, "the served model's input")

    def describe(self) -> dict[str, Any]:
        return {"stages": self.run.stages, "pairing": self.run.pairing, "epochs": self.run.epoch, "caveat": CAVEAT}

    def answer(self, image: np.ndarray, predicted: str, classify: Callable[[np.ndarray], np.ndarray], classes: list[str]) -> dict[str, Any]:
        """The chain from ``image`` (the model's input: ``(H, W)``-slice ``(1, H, W)`` or volume ``(X, Y, Z)``).

        Args:
            classify: the served model's probabilities of one image shaped like ``image``.
        """
        run = self.run
        x = np.asarray(image, np.float32)
        x = x[None] if x.ndim == run.spatial_dims else x
        if tuple(x.shape) != tuple(run.shape):
            raise AlzmriError(f"the model input is {'x'.join(map(str, x.shape))}, the progression run's images are {'x'.join(map(str, run.shape))}")
        if predicted not in run.stages:
            return {"note": f"the model predicts {predicted}, which is not one of the progression run's stages", "caveat": CAVEAT}
        start = run.stages.index(predicted)
        if start == len(run.stages) - 1:
            return {"start_stage": predicted, "steps": [], "note": f"{predicted} is the run's last stage: no generator goes beyond it", "caveat": CAVEAT}
        unit = to_unit(x, run.scale)
        generated = [g[0] for g in run.chain(unit[None], start=start)]
        steps = []
        for stage, g in zip(run.stages[start + 1 :], generated, strict=True):
            probs = classify(from_unit(g, run.scale).reshape(np.shape(image)))
            steps.append({"stage": stage, "predicted": classes[int(np.argmax(probs))], "probabilities": {c: round(float(p), 6) for c, p in zip(classes, probs, strict=True)},
                          "mean_abs_change": round(float(np.abs(g - unit).mean() * run.scale), 6)})  # fmt: skip
        images = [unit, *generated]
        names = run.stages[start:]
        return {"start_stage": predicted, "steps": steps, "caveat": CAVEAT,
                "image": _picture(images, names, [s["predicted"] for s in steps]), "gif": _gif(images, names)}  # fmt: skip


def _picture(images: list[np.ndarray], names: list[str], predicted: list[str]) -> str:
    """Input and generated stages on top, each change from the input (generated − input) below."""
    columns = len(images)
    fig, axes = figure(2, columns, figsize=(2.2 * columns, 4.6), squeeze=False)
    changes = [view(g) - view(images[0]) for g in images[1:]]
    limit = max([float(np.abs(c).max()) for c in changes] + [1e-3])
    for j, (image, name) in enumerate(zip(images, names, strict=True)):
        axes[0, j].imshow(view(image), cmap="gray", vmin=-1, vmax=1)
        axes[0, j].set_title(f"input ({name})" if j == 0 else f"generated {name}\nmodel says {predicted[j - 1]}", fontsize=8)
        axes[1, j].set_axis_off()
        axes[0, j].set_axis_off()
        if j:
            axes[1, j].imshow(changes[j - 1], cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes[1, j].set_title(f"change to {name}", fontsize=8)
    axes[1, 0].text(0.5, 0.5, f"change maps\nblue darker, red brighter\n(±{limit:.3g} of [-1, 1])", ha="center", va="center", fontsize=8, transform=axes[1, 0].transAxes)
    return png(fig)


def _gif(images: list[np.ndarray], names: list[str]) -> str:
    with tempfile.TemporaryDirectory(prefix="alzmri-gif-") as tmp:
        path = chain_gif(images, names, Path(tmp) / "chain.gif")
        return base64.b64encode(path.read_bytes()).decode()
