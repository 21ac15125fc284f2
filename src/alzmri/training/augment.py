"""Training-time augmentation with TorchIO, chosen by name in the run config.

Slices (``(C, H, W)``) go through the same TorchIO transforms as a ``(C, H, W, 1)`` image, as
TorchIO handles 2D: a flip is left-right (the image's width), a rotation is in-plane (about the
singleton axis), and the random draws come from torch's generator, which the dataset seeds per
slice and epoch.

Inputs are already z-scored inside the brain by preprocessing (TorchIO ``ZNormalization``
with the brain mask), so noise std is in units of the brain's intensity spread and the gamma
is TorchIO's sign-preserving one. No second z-score happens here: a whole-volume z-score
applied to training inputs only would give validation and test inputs (z-scored in the brain)
a different distribution; in our runs that alone kept the model at chance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torchio as tio
from torchio.transforms.augmentation.random_transform import RandomTransform

from alzmri.training.config import DEFAULT_AUGMENTATIONS, Augmentation


class BrightnessContrast(RandomTransform, tio.transforms.IntensityTransform):
    """Mild brightness and contrast jitter of the foreground: ``x * c + b`` with ``c`` in 1 ± ``contrast``, ``b`` in ± ``brightness``.

    Intensities are z-scores, so ``b`` is in units of the brain's spread; the background (exactly 0)
    stays 0, as preprocessing leaves it.
    """

    def __init__(self, brightness: float = 0.1, contrast: float = 0.1, p: float = 0.5, **kwargs: object) -> None:
        super().__init__(p=p, **kwargs)
        self.brightness, self.contrast = brightness, contrast

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        c = 1.0 + float(torch.empty(1).uniform_(-self.contrast, self.contrast))
        b = float(torch.empty(1).uniform_(-self.brightness, self.brightness))
        for image in self.get_images(subject):
            data = image.data
            image.set_data(torch.where(data != 0, data * c + b, data))
        return subject


class AsVolume:
    """Run a TorchIO transform on a ``(C, H, W)`` slice as the ``(C, H, W, 1)`` image TorchIO expects."""

    def __init__(self, transform: tio.Transform) -> None:
        self.transform = transform

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x[..., None])[..., 0]

    def __repr__(self) -> str:
        return f"AsVolume({self.transform!r})"


def _build(name: Augmentation, spatial_dims: int = 3, pad: float | str = "minimum") -> tio.Transform:
    """One augmentation with settings suited to brain-extracted, cube-cropped T1w volumes (or slices).

    ``pad``: what spatial transforms fill uncovered voxels with: the background value (0 for
    slices and for volumes preprocessed with ``zero_background``), else TorchIO's image minimum.
    """
    flat = spatial_dims == 2
    if name == "rotate":  # ±15°: in-plane for slices, about every axis for volumes
        return tio.RandomAffine(scales=0, degrees=(0, 0, 0, 0, -15, 15) if flat else 15, translation=0, default_pad_value=pad, p=0.5)
    if name == "brightness_contrast":
        return BrightnessContrast()
    if flat and name == "flip":  # the image's width: left-right for axial and coronal slices
        return tio.RandomFlip(axes=(1,), flip_probability=0.5)
    if flat and name in ("affine", "crop"):
        return tio.RandomAffine(scales=(0.95, 1.05) if name == "affine" else 0, degrees=(0, 0, 0, 0, -5, 5) if name == "affine" else 0,
                                translation=(-3, 3, -3, 3, 0, 0), default_pad_value=pad, p=0.5)  # fmt: skip
    if flat and name == "elastic":
        return tio.RandomElasticDeformation(num_control_points=(6, 6, 5), max_displacement=(3, 3, 0), p=0.3)
    if name == "noise":
        return tio.RandomNoise(std=(0.0, 0.1), p=0.5)
    if name == "gamma":
        return tio.RandomGamma(log_gamma=(-0.15, 0.15), p=0.5)
    if name == "flip":  # left-right only (axis 0 is R-L after RAS reorientation)
        return tio.RandomFlip(axes=(0,), flip_probability=0.5)
    if name == "affine":
        return tio.RandomAffine(scales=(0.95, 1.05), degrees=5, translation=3, default_pad_value=pad, p=0.5)
    if name == "elastic":
        return tio.RandomElasticDeformation(num_control_points=6, max_displacement=3, p=0.3)
    if name == "blur":
        return tio.RandomBlur(std=(0.0, 0.7), p=0.3)
    if name == "bias_field":
        return tio.RandomBiasField(coefficients=0.2, p=0.3)
    # "crop": a random shift of up to ~4 % of the edge, zero-filled, like a random crop and pad
    return tio.RandomAffine(scales=0, degrees=0, translation=4, default_pad_value=pad, p=0.5)


def training_transform(augment: bool, names: Sequence[Augmentation] = DEFAULT_AUGMENTATIONS, spatial_dims: int = 3,
                       pad: float | str = "minimum") -> Callable | None:  # fmt: skip
    """The named augmentations in the given order; ``None`` when ``augment`` is off or none is named."""
    if not augment or not names:
        return None
    transform = tio.Compose([_build(name, spatial_dims, pad) for name in names])
    return AsVolume(transform) if spatial_dims == 2 else transform
