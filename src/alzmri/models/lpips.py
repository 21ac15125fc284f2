"""LPIPS (Zhang et al. 2018) with the AlexNet backbone, loadable from the files users already have.

The network is ours (torchvision is not importable here) with torchvision's ``alexnet`` module
names (``features.0`` ... ``features.10``), so torchvision's ImageNet state dict loads key for key,
and the ``lpips`` package's linear layers (``lin0.model.1.weight`` ... ``lin4``) load from its
``alex.pth``. Nothing is downloaded: :func:`load_lpips` takes the file(s) the user names, which
together must hold every key. Gray images are repeated to three channels; inputs are in [-1, 1].

LPIPS of two images: for each of the five ReLU outputs, unit-normalise the features over
channels, square their difference, weight channels by the (non-negative) linear layer, average
over space; sum over the layers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from alzmri.utils.errors import AlzmriError

_TAPS = (1, 4, 7, 9, 11)  # the ReLUs after each convolution of features
_CHANNELS = (64, 192, 384, 256, 256)
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class _Linear(nn.Module):
    """The ``lpips`` package's NetLinLayer: dropout (unused at inference) then a 1x1 convolution to one map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """LPIPS distance with torchvision's AlexNet feature layout; ``forward(a, b)`` gives ``(N,)`` distances."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=False),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=False),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=False),
        )  # fmt: skip
        for k, channels in enumerate(_CHANNELS):
            self.add_module(f"lin{k}", _Linear(channels))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        x = (x - self.shift) / self.scale
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in _TAPS:
                out.append(x)
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(a.shape[0], device=a.device)
        for k, (fa, fb) in enumerate(zip(self._taps(a), self._taps(b), strict=True)):
            na = fa / (fa.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            nb = fb / (fb.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + getattr(self, f"lin{k}").model[1]((na - nb) ** 2).mean(dim=(1, 2, 3))
        return total


def load_lpips(files: list[Path]) -> LPIPS:
    """An LPIPS network from the named weight files (torchvision's alexnet state dict and lpips' alex.pth, or one file with both).

    Raises:
        AlzmriError: a file missing or unreadable, or keys missing or of the wrong shape.
    """
    model = LPIPS()
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if not Path(file).is_file():
            raise AlzmriError(f"LPIPS weights {file} do not exist")
        try:
            loaded = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise AlzmriError(f"cannot read LPIPS weights {file}: {str(exc).splitlines()[0][:200]}") from None
        state.update({k: v for k, v in loaded.items() if k.startswith(("features.", "lin"))})
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise AlzmriError(f"LPIPS needs AlexNet features (torchvision's alexnet file) and linear layers (lpips' alex.pth); missing {', '.join(missing[:3])}"
                          + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""))  # fmt: skip
    wrong = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        raise AlzmriError(f"LPIPS weight {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}")
    model.load_state_dict({k: state[k] for k in own})
    return model.eval()
