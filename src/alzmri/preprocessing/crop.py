"""Crop every image of a subject to the brain's bounding box plus padding."""

from __future__ import annotations

import numpy as np
import torch
import torchio as tio

from alzmri.preprocessing.config import PreprocessConfig
from alzmri.preprocessing.subject import MASK_KEY
from alzmri.utils.errors import AlzmriError

FIELDS = ("crop_padding", "keep_aspect")


class CropToBrain(tio.Transform):
    """Crop to the ``brain_mask`` bounding box grown by ``padding`` voxels.

    With ``cube=True`` the box is grown to a cube around its centre (zero-padding outside the
    volume where needed) so a later resize scales all axes equally.

    Args:
        padding: voxels kept on each side of the box.
        cube: make the box cubic.
    """

    def __init__(self, padding: int = 3, cube: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.padding = padding
        self.cube = cube
        self.args_names = ["padding", "cube"]

    def box(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lower (inclusive) and upper (exclusive) voxel corners of the padded box."""
        nonzero = np.argwhere(mask)
        if nonzero.size == 0:
            raise AlzmriError("empty brain mask: the image has no foreground to crop to")
        lo = nonzero.min(axis=0) - self.padding
        hi = nonzero.max(axis=0) + 1 + self.padding
        if self.cube:
            side = int((hi - lo).max())
            lo = lo - (side - (hi - lo)) // 2
            hi = lo + side
        return lo, hi

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        lo, hi = self.box(subject[MASK_KEY].data[0].numpy() > 0)
        for image in subject.get_images(intensity_only=False):
            data = image.data.numpy()
            shape = np.array(data.shape[1:])
            before = np.maximum(0, -lo)
            after = np.maximum(0, hi - shape)
            if before.any() or after.any():
                pad = [(0, 0)] + [(int(b), int(a)) for b, a in zip(before, after, strict=True)]
                data = np.pad(data, pad)
            s = lo + before
            e = hi + before
            cropped = data[:, s[0] : e[0], s[1] : e[1], s[2] : e[2]]
            affine = image.affine.copy()
            affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
            image.set_data(torch.from_numpy(np.ascontiguousarray(cropped)))
            image.affine = affine
        return subject


def build(config: PreprocessConfig) -> tio.Transform:
    """The crop step."""
    return CropToBrain(padding=config.crop_padding, cube=config.keep_aspect)
