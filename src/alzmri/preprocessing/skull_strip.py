"""Skull stripping: add a ``brain_mask`` to the subject and zero the scan outside it.

Methods (``PreprocessConfig.skull_strip``):

- ``deepbet`` (default, offline): the two TorchScript networks shipped in the ``deepbet`` wheel,
  run by :mod:`alzmri.preprocessing.strip_deepbet` on the scan in RAS axis order.
- ``template`` (offline, no network): MNI152 registration from several starts, warped mask,
  intensity refinement (:mod:`alzmri.preprocessing.strip_template`).
- ``synthstrip`` / ``hd-bet`` / ``bet``: call the tool when it is installed
  (:mod:`alzmri.preprocessing.strip_external`).
- ``none``: the scan is already skull-stripped; the mask is its Otsu foreground.

The method that ran is recorded in the QC table (``skull_strip_method``). With ``strip_check`` a
second method runs too and the Dice coefficient between the two masks is recorded
(``skull_strip_check_dice``), for QC to flag a disagreement.
"""

from __future__ import annotations

import numpy as np
import torch
import torchio as tio

from alzmri.preprocessing.config import PreprocessConfig, SkullStripMethod
from alzmri.preprocessing.subject import MASK_KEY, add_qc, main_image
from alzmri.utils.errors import AlzmriError

FIELDS = ("skull_strip", "strip_threshold", "strip_dilate", "strip_check")


def _in_ras(image: tio.ScalarImage, fn) -> np.ndarray:
    """``fn`` applied to ``image``'s array in RAS axis order; its (x, y, z) mask on ``image``'s own axes."""
    import nibabel as nib

    own = nib.io_orientation(image.affine)
    ras = nib.orientations.axcodes2ornt("RAS")
    to_ras = nib.orientations.ornt_transform(own, ras)
    mask = fn(nib.orientations.apply_orientation(image.data[0].numpy(), to_ras))
    return np.ascontiguousarray(nib.orientations.apply_orientation(mask, nib.orientations.ornt_transform(ras, own)))


def brain_mask(image: tio.ScalarImage, method: SkullStripMethod, threshold: float = 0.5, dilate: int = 0) -> tuple[np.ndarray, dict[str, float | str]]:
    """Boolean (x, y, z) brain mask of ``image`` and QC values of the method.

    Args:
        image: the scan.
        method: see the module docstring.
        threshold, dilate: deepbet's probability threshold and voxels of dilation.
    """
    qc: dict[str, float | str] = {"skull_strip_method": method}
    if method == "deepbet":
        from alzmri.preprocessing.strip_deepbet import deepbet_brain_mask

        mask = _in_ras(image, lambda a: deepbet_brain_mask(a, threshold=threshold, dilate=dilate))
    elif method == "none":
        from alzmri.preprocessing.strip_foreground import foreground_mask

        mask = foreground_mask(image.data[0].numpy())
    elif method == "template":
        from alzmri.preprocessing.strip_template import template_brain_mask

        mask, metric = template_brain_mask(image.as_sitk())
        qc["skull_strip_registration_ncc"] = round(metric, 4)
    else:
        from alzmri.preprocessing.strip_external import external_brain_mask

        mask = external_brain_mask(method, image.as_sitk())
    if not mask.any():
        raise AlzmriError(f"skull stripping ({method}) found no brain")
    return mask, qc


class SkullStrip(tio.Transform):
    """Mask the brain and zero everything else.

    Args:
        method: one of ``deepbet``, ``template``, ``synthstrip``, ``hd-bet``, ``bet``, ``none``.
        threshold: deepbet's brain-probability threshold.
        dilate: deepbet: voxels to grow (negative: shrink) the mask by.
        check: a second method to run for QC; the Dice between the masks is recorded.
    """

    def __init__(self, method: SkullStripMethod = "deepbet", threshold: float = 0.5, dilate: int = 0,
                 check: SkullStripMethod | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.method = method
        self.threshold = threshold
        self.dilate = dilate
        self.check = check
        self.args_names = ["method", "threshold", "dilate", "check"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        image = main_image(subject)
        mask, qc = brain_mask(image, self.method, self.threshold, self.dilate)
        if self.check is not None:
            other, other_qc = brain_mask(image, self.check, self.threshold, self.dilate)
            qc.update({k: v for k, v in other_qc.items() if k != "skull_strip_method"})
            qc["skull_strip_check_method"] = self.check
            qc["skull_strip_check_dice"] = round(2.0 * float((mask & other).sum()) / float(mask.sum() + other.sum()), 4)
        data = image.data.clone()
        data[0][~torch.from_numpy(mask)] = 0.0
        image.set_data(data)
        if MASK_KEY in subject:
            subject.remove_image(MASK_KEY)
        subject.add_image(tio.LabelMap(tensor=torch.from_numpy(mask[None].astype(np.uint8)), affine=image.affine), MASK_KEY)
        add_qc(subject, **qc)
        return subject


def warm_up(config: PreprocessConfig) -> None:
    """Load the template or networks now, so worker processes forked later share them instead of each loading them."""
    methods = {config.skull_strip, config.strip_check}
    if "deepbet" in methods:
        from alzmri.preprocessing.strip_deepbet import networks

        networks()
    if "template" in methods:
        from alzmri.preprocessing.strip_template import REGISTRATION_MM, head_template, template

        template(REGISTRATION_MM)
        template(1.0)
        head_template(REGISTRATION_MM)


def build(config: PreprocessConfig) -> tio.Transform:
    """The skull-stripping step."""
    return SkullStrip(method=config.skull_strip, threshold=config.strip_threshold, dilate=config.strip_dilate, check=config.strip_check)
