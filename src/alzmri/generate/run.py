"""A trained progression run: its generators, stages, intensity scale and input settings, and the chain.

``RUN/checkpoints/last.pt`` (after every epoch) holds everything (loadable with ``torch.load(weights_only=True)``):
the run's settings, stages, pairing, intensity scale, the input settings of the cache it learned
from, the mean change per transition (the "mean change" baseline), one generator per transition
(plus, unpaired, the backward generators and every discriminator and optimiser, for resuming).
``RUN/checkpoints/best.pt`` is the epoch with the lowest validation MSE against the true follow-up
(paired runs; selected on validation subjects, never on test), without the training state; a run
folder given to ``progress`` or ``evaluate-progression`` means its best checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alzmri.models.progression import StageGenerator
from alzmri.utils.errors import AlzmriError

CHECKPOINT = Path("checkpoints") / "last.pt"
# The epoch with the lowest validation MSE against the true follow-up (paired runs; unpaired: the last epoch), without optimiser state.
BEST = Path("checkpoints") / "best.pt"
FORMAT = 1


def checkpoint_path(run: Path) -> Path:
    """The checkpoint to use: the file itself, or a run folder's best (else last) checkpoint."""
    run = Path(run)
    if run.is_file():
        return run
    return run / BEST if (run / BEST).is_file() else run / CHECKPOINT


def build_generator(spec: dict[str, Any]) -> StageGenerator:
    """A generator as the run's settings describe it."""
    return StageGenerator(spatial_dims=spec["spatial_dims"], in_channels=spec["channels"], width=spec["width"], residual=spec["residual"])


@dataclass
class ProgressionRun:
    """Everything needed to apply a run.

    Attributes:
        path: the checkpoint file.
        settings: the run's :class:`~alzmri.generate.config.ProgressionConfig` as JSON types.
        stages: stage names in disease order.
        pairing: ``paired`` or ``unpaired``.
        scale: intensity scale (cache units per unit of [-1, 1]).
        inputs: input settings of the cache the run learned from.
        shape: ``(C, *S)`` of one image.
        generators: transition ``k`` (stage ``k`` → ``k + 1``), in eval mode.
        mean_change: ``(T, C, *S)`` average change per transition, in [-1, 1] units.
        epoch: epochs completed.
        history: per-epoch losses and validation numbers.
        train_subjects: the participants the run learned from (an evaluation must not score them).
        chosen_on: the validation participants this checkpoint's epoch was chosen on (``best.pt`` of a
            paired run; empty otherwise): scoring them would be optimistic too.
    """

    path: Path
    settings: dict[str, Any]
    stages: list[str]
    pairing: str
    scale: float
    inputs: dict[str, Any]
    shape: tuple[int, ...]
    generators: list[StageGenerator]
    mean_change: np.ndarray
    epoch: int
    history: list[dict[str, float]]
    train_subjects: tuple[str, ...] = ()
    chosen_on: tuple[str, ...] = ()

    @property
    def folder(self) -> Path:
        """The run folder (where outputs go by default): above ``checkpoints/``, else the checkpoint's own folder."""
        return self.path.parent.parent if self.path.parent.name == CHECKPOINT.parent.name else self.path.parent

    @property
    def spatial_dims(self) -> int:
        return len(self.shape) - 1

    def stage_index(self, stage: str | None) -> int:
        """Position of ``stage`` (default: the first); case-insensitive.

        Raises:
            AlzmriError: a stage the run does not know, or its last stage (nothing comes after it).
        """
        if stage is None:
            return 0
        lowered = [s.lower() for s in self.stages]
        if stage.lower() not in lowered:
            raise AlzmriError(f"stage {stage!r} is not one of the run's stages ({', '.join(self.stages)})")
        index = lowered.index(stage.lower())
        if index == len(self.stages) - 1:
            raise AlzmriError(f"{self.stages[index]} is the run's last stage: no generator goes beyond it")
        return index

    @torch.no_grad()
    def step(self, images: np.ndarray, transition: int) -> np.ndarray:
        """Apply generator ``transition`` to ``(N, C, *S)`` images in [-1, 1]."""
        return self.generators[transition](torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))).numpy()

    def chain(self, images: np.ndarray, start: int = 0, batch: int = 32) -> list[np.ndarray]:
        """The generated images at every stage after ``start``: each step's output feeds the next generator."""
        outputs = []
        current = np.asarray(images, dtype=np.float32)
        for k in range(start, len(self.generators)):
            current = self.apply(current, k, batch)
            outputs.append(current)
        return outputs

    def apply(self, images: np.ndarray, transition: int, batch: int = 32) -> np.ndarray:
        """Generator ``transition`` on any number of images, ``batch`` at a time."""
        if not len(images):
            return np.asarray(images, dtype=np.float32)
        return np.concatenate([self.step(images[i : i + batch], transition) for i in range(0, len(images), batch)])


def load_run(path: str | Path) -> ProgressionRun:
    """Read a run folder (or its checkpoint).

    Raises:
        AlzmriError: no checkpoint there, or a file that is not a progression checkpoint.
    """
    file = checkpoint_path(Path(path))
    if not file.is_file():
        raise AlzmriError(f"{path} is not a progression run: no {CHECKPOINT} (train one with 'alzmri train-progression')")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise AlzmriError(f"cannot read progression checkpoint {file}: {str(exc).splitlines()[0][:200]}") from None
    if not isinstance(state, dict) or state.get("kind") != "progression":
        raise AlzmriError(f"{file} is not a progression checkpoint (a classifier's? use it with 'evaluate-progression --classifier')")
    generators = []
    for weights in state["generators"]:
        generator = build_generator(state["spec"])
        generator.load_state_dict(weights)
        generators.append(generator.eval())
    return ProgressionRun(
        path=file, settings=state["settings"], stages=list(state["stages"]), pairing=state["pairing"], scale=float(state["scale"]),
        inputs=state["inputs"], shape=tuple(state["shape"]), generators=generators, mean_change=state["mean_change"].numpy(),
        epoch=int(state["epoch"]), history=list(state["history"]), train_subjects=tuple(state.get("train_subjects", ())),
        chosen_on=tuple(state.get("chosen_on", ())),
    )  # fmt: skip
