"""A brain mask for skull-stripped inputs: Otsu foreground, largest component, holes filled.

A skull-stripping step (a later addition) would put its own ``brain_mask`` in the subject;
this step then keeps it, so cropping and normalisation always have a mask to use.
"""

from __future__ import annotations

import numpy as np
import torch
import torchio as tio
from scipy import ndimage
from skimage.filters import threshold_otsu

from alzmri.preprocessing.config import PreprocessConfig

MASK_KEY = "brain_mask"


def foreground_mask(volume: np.ndarray) -> np.ndarray:
    """Boolean foreground of a skull-stripped volume (Otsu on a smoothed copy).

    Args:
        volume: 3D intensity array.
    """
    smooth = ndimage.gaussian_filter(volume.astype(np.float32), 1.0)
    if float(smooth.max()) <= float(smooth.min()):
        return np.zeros(volume.shape, dtype=bool)
    mask = smooth > threshold_otsu(smooth)
    labels, n = ndimage.label(mask)
    if n > 1:  # keep the brain, drop noise specks and stray blobs
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (int(np.argmax(sizes)) + 1)
    mask = ndimage.binary_closing(mask, iterations=2)
    return ndimage.binary_fill_holes(mask)


class BrainMask(tio.Transform):
    """Add a ``brain_mask`` label map computed from the image, unless one is present."""

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        if MASK_KEY in subject:
            return subject
        image = subject["image"]
        mask = foreground_mask(image.data[0].numpy())
        subject.add_image(tio.LabelMap(tensor=torch.from_numpy(mask[None].astype(np.uint8)), affine=image.affine), MASK_KEY)
        return subject


def build(config: PreprocessConfig) -> tio.Transform:
    """The brain-mask step."""
    return BrainMask()
