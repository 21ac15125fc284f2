"""Stage-to-stage image generators and their discriminator (2D slices or 3D volumes).

The seed system's translator (a DCGAN encoder-decoder) and discriminator, with two additions
that :mod:`alzmri.generate` measures:

* :class:`StageGenerator`: three stride-2 convolutions (kernel 4) to ``4 * width`` maps (256 at
  the seed's ``width`` 64), batch norm and ReLU, three transposed convolutions back, ``tanh`` to
  [-1, 1]. ``residual=True`` predicts the
  change instead: the output is ``tanh(atanh(x) + h)``, so a zero ``h`` returns the input and the
  subject's anatomy is kept unless the network moves it.
* :class:`StageDiscriminator`: four convolutions (three stride-2 of kernel 4, LeakyReLU 0.2,
  batch norm after the first; a 3-wide one to one logit per patch of 8 pixels or voxels); ``sigmoid`` of it is the score. Patch scores let a brain mask
  weight the loss (:func:`alzmri.generate.losses.patch_bce`).

Both take ``spatial_dims`` 2 (``(N, C, H, W)``, e.g. 256²) or 3 (``(N, C, D, H, W)``, e.g. 64³);
edges must be multiples of 8.
"""

from __future__ import annotations

import torch
from torch import nn

from alzmri.utils.errors import AlzmriError

_EPS = 1e-3


def _layers(spatial_dims: int) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module]]:
    if spatial_dims == 2:
        return nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d
    if spatial_dims == 3:
        return nn.Conv3d, nn.ConvTranspose3d, nn.BatchNorm3d
    raise AlzmriError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def check_edges(shape: tuple[int, ...], multiple: int = 8) -> None:
    """Refuse an input whose spatial edges the encoder-decoder cannot halve three times."""
    if any(n % multiple for n in shape):
        raise AlzmriError(f"image edges {'x'.join(map(str, shape))} are not multiples of {multiple} (three stride-2 levels); resize the slices or volumes")


class StageGenerator(nn.Module):
    """Encoder-decoder from an image at one stage to the image at the next.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels (1, or 3 for 2.5D slices).
        width: maps after the first convolution (the seed: 64, giving 64-128-256).
        residual: predict the change (``tanh(atanh(x) + h)``) rather than the image.
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, width: int = 64, residual: bool = True) -> None:
        super().__init__()
        conv, deconv, norm = _layers(spatial_dims)
        c1, c2, c3 = width, 2 * width, 4 * width
        self.spatial_dims = spatial_dims
        self.residual = residual
        self.encoder = nn.Sequential(
            conv(in_channels, c1, 4, 2, 1, bias=False), norm(c1), nn.ReLU(inplace=True),
            conv(c1, c2, 4, 2, 1, bias=False), norm(c2), nn.ReLU(inplace=True),
            conv(c2, c3, 4, 2, 1, bias=False), norm(c3), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            deconv(c3, c2, 4, 2, 1, bias=False), norm(c2), nn.ReLU(inplace=True),
            deconv(c2, c1, 4, 2, 1, bias=False), norm(c1), nn.ReLU(inplace=True),
            deconv(c1, in_channels, 4, 2, 1),
        )  # fmt: skip
        if residual:  # start as the identity: the first outputs are the inputs, not noise
            nn.init.zeros_(self.decoder[-1].weight)
            nn.init.zeros_(self.decoder[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in [-1, 1] → the next stage's image in [-1, 1], same shape."""
        check_edges(tuple(x.shape[2:]))
        h = self.decoder(self.encoder(x))
        if self.residual:
            return torch.tanh(torch.atanh(x.clamp(-1 + _EPS, 1 - _EPS)) + h)
        return torch.tanh(h)


class StageDiscriminator(nn.Module):
    """Real-or-generated patch logits for images of one stage.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        width: maps of the first convolution (the seed: 64).
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, width: int = 64) -> None:
        super().__init__()
        conv, _, norm = _layers(spatial_dims)
        c1, c2, c3 = width, 2 * width, 4 * width
        self.net = nn.Sequential(
            conv(in_channels, c1, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True),
            conv(c1, c2, 4, 2, 1, bias=False), norm(c2), nn.LeakyReLU(0.2, inplace=True),
            conv(c2, c3, 4, 2, 1, bias=False), norm(c3), nn.LeakyReLU(0.2, inplace=True),
            conv(c3, 1, 3, 1, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits, ``(N, 1, *edges / 8)``; ``sigmoid`` gives the probability of "real"."""
        return self.net(x)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Patch scores in (0, 1)."""
        return torch.sigmoid(self.forward(x))
