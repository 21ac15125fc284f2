"""Feature networks for FID and the stage classifier's view of generated images.

* alzmri's own classifier (a checkpoint of ``alzmri train`` on the same kind of inputs): its
  class probabilities say which stage a generated image looks like; the input of its classifier
  head (the pooled features) is the feature space of FID, in place of Inception (which is not
  available offline, and knows nothing of brains).
* any feature network the user names as a TorchScript file (``torch.jit.save`` of a module mapping
  ``(N, C, *S)`` images on the cache's scale to ``(N, F)`` features, or to maps that are
  average-pooled to ``(N, F)``).

FID (Heusel et al. 2017) is MONAI's ``FIDMetric``: the Fréchet distance between Gaussians fitted
to two feature sets (0 for identical sets).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alzmri.utils.errors import AlzmriError, first_line

_BATCH = 32


class StageClassifier:
    """A trained alzmri classifier: probabilities over its classes, and its penultimate features."""

    def __init__(self, path: Path) -> None:
        from alzmri.evaluation.predict import checkpoint_preprocess, load_classifier
        from alzmri.models import model_info

        self.path = Path(path)
        self.model, self.hparams = load_classifier(path)
        self.classes = list(self.hparams["classes"])
        self.inputs = checkpoint_preprocess(self.hparams)
        self.head = self.model.get_submodule(model_info(self.hparams["model_name"]).head)

    @torch.no_grad()
    def run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities (N, K), features (N, F))`` of images on the cache's scale."""
        captured: list[torch.Tensor] = []
        hook = self.head.register_forward_hook(lambda _m, args, _out: captured.append(args[0].flatten(1)))
        probs = []
        try:
            for i in range(0, len(images), _BATCH):
                batch = torch.from_numpy(np.ascontiguousarray(images[i : i + _BATCH], dtype=np.float32))
                probs.append(torch.softmax(self.model(batch), dim=1))
        finally:
            hook.remove()
        return torch.cat(probs).numpy(), torch.cat(captured).numpy()


class FeatureFile:
    """A user's feature network saved with ``torch.jit.save``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise AlzmriError(f"feature network {path} does not exist")
        try:
            self.net: nn.Module = torch.jit.load(str(path), map_location="cpu").eval()
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets one line
            raise AlzmriError(f"cannot load feature network {path} (a TorchScript file from torch.jit.save is expected): {first_line(exc)[:200]}") from None

    @torch.no_grad()
    def features(self, images: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(images), _BATCH):
            batch = torch.from_numpy(np.ascontiguousarray(images[i : i + _BATCH], dtype=np.float32))
            try:
                value = self.net(batch)
            except Exception as exc:  # noqa: BLE001
                raise AlzmriError(f"feature network {self.path} failed on {tuple(batch.shape)} images: {first_line(exc)[:200]}") from None
            if value.dim() > 2:
                value = value.flatten(2).mean(dim=2)
            out.append(value.reshape(len(batch), -1))
        return torch.cat(out).numpy()


def fid(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between feature sets ``a`` and ``b`` (``(N, F)`` each; NaN with fewer than 2 rows in either)."""
    from monai.metrics import FIDMetric

    if len(a) < 2 or len(b) < 2:
        return float("nan")
    import warnings

    from scipy.linalg import LinAlgWarning

    with warnings.catch_warnings():  # fewer images than features: singular covariances, the square root is still defined
        warnings.simplefilter("ignore", LinAlgWarning)
        value = FIDMetric()(torch.from_numpy(np.asarray(a, dtype=np.float64)), torch.from_numpy(np.asarray(b, dtype=np.float64)))
    return max(float(value), 0.0)


def check_classifier_stages(classifier: StageClassifier, stages: list[str]) -> dict[str, Any]:
    """The classifier's class index of each stage.

    Raises:
        AlzmriError: the classifier's classes are not the run's stages.
    """
    lowered = [c.lower() for c in classifier.classes]
    missing = [s for s in stages if s.lower() not in lowered]
    if missing:
        raise AlzmriError(f"the classifier {classifier.path} knows the classes {', '.join(classifier.classes)}, not the run's stages {', '.join(stages)} "
                          f"(missing {', '.join(missing)}); train it on the same stages")  # fmt: skip
    return {s: lowered.index(s.lower()) for s in stages}
