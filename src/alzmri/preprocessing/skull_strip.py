"""Skull stripping: add a ``brain_mask`` to the subject and zero the scan outside it.

Methods (``PreprocessConfig.skull_strip``):

- ``template`` (default, offline): MNI152 registration, warped mask, intensity refinement
  (:mod:`alzmri.preprocessing.strip_template`).
- ``synthstrip`` / ``hd-bet`` / ``bet``: call the tool when it is installed
  (:mod:`alzmri.preprocessing.strip_external`).
- ``none``: the scan is already skull-stripped; the mask is its Otsu foreground.

The method that ran is recorded in the QC table (``skull_strip_method``).
"""

from __future__ import annotations

import numpy as np
import torch
import torchio as tio

from alzmri.preprocessing.config import PreprocessConfig, SkullStripMethod
from alzmri.preprocessing.subject import MASK_KEY, add_qc, main_image
from alzmri.utils.errors import AlzmriError

FIELDS = ("skull_strip",)


def brain_mask(image: tio.ScalarImage, method: SkullStripMethod) -> tuple[np.ndarray, dict[str, float | str]]:
    """Boolean (x, y, z) brain mask of ``image`` and QC values of the method."""
    qc: dict[str, float | str] = {"skull_strip_method": method}
    if method == "none":
        from alzmri.preprocessing.strip_foreground import foreground_mask

        mask = foreground_mask(image.data[0].numpy())
    elif method == "template":
        from alzmri.preprocessing.strip_template import template_brain_mask

        mask, metric = template_brain_mask(image.as_sitk())
        qc["skull_strip_registration_mi"] = round(metric, 4)
    else:
        from alzmri.preprocessing.strip_external import external_brain_mask

        mask = external_brain_mask(method, image.as_sitk())
    if not mask.any():
        raise AlzmriError(f"skull stripping ({method}) found no brain")
    return mask, qc


class SkullStrip(tio.Transform):
    """Mask the brain and zero everything else.

    Args:
        method: one of ``template``, ``synthstrip``, ``hd-bet``, ``bet``, ``none``.
    """

    def __init__(self, method: SkullStripMethod = "template", **kwargs) -> None:
        super().__init__(**kwargs)
        self.method = method
        self.args_names = ["method"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        image = main_image(subject)
        mask, qc = brain_mask(image, self.method)
        data = image.data.clone()
        data[0][~torch.from_numpy(mask)] = 0.0
        image.set_data(data)
        if MASK_KEY in subject:
            subject.remove_image(MASK_KEY)
        subject.add_image(tio.LabelMap(tensor=torch.from_numpy(mask[None].astype(np.uint8)), affine=image.affine), MASK_KEY)
        add_qc(subject, **qc)
        return subject


def warm_up(config: PreprocessConfig) -> None:
    """Load the template now, so worker processes forked later share it instead of each loading it."""
    if config.skull_strip == "template":
        from alzmri.preprocessing.strip_template import REGISTRATION_MM, template

        template(REGISTRATION_MM)
        template(1.0)


def build(config: PreprocessConfig) -> tio.Transform:
    """The skull-stripping step."""
    return SkullStrip(method=config.skull_strip)
