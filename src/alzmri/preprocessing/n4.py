"""N4 bias field correction (SimpleITK), tuned for speed.

The bias field is smooth, so it is fitted on a copy shrunk to ~``n4_grid_mm`` voxels (8 mm by
default: 4.3 s instead of 23 s at 4 mm for a 1 mm 256x256x176 head on one core, with the same
white-matter uniformity on synthetic heads) inside an Otsu head mask; the full-resolution log
field is then divided out of the original image.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import torch
import torchio as tio

from alzmri.preprocessing.config import PreprocessConfig
from alzmri.preprocessing.subject import add_qc, main_image


def n4_correct(image: sitk.Image, shrink: int = 4, iterations: tuple[int, ...] = (50, 50, 30)) -> tuple[sitk.Image, sitk.Image]:
    """Estimate and remove the bias field of a scan.

    Args:
        image: the scan (any pixel type).
        shrink: integer shrink factor for the estimation.
        iterations: fitting iterations per resolution level (its length is the number of levels).

    Returns:
        ``(corrected, log_bias)``: float32 images on the input's grid.
    """
    image = sitk.Cast(image, sitk.sitkFloat32)
    # N4 models a multiplicative field: it needs positive intensities.
    low = float(sitk.GetArrayViewFromImage(image).min())
    positive = image - low + 1.0 if low <= 0.0 else image
    head = sitk.OtsuThreshold(positive, 0, 1, 200)
    small = sitk.Shrink(positive, [shrink] * 3) if shrink > 1 else positive
    small_mask = sitk.Shrink(head, [shrink] * 3) if shrink > 1 else head
    if not sitk.GetArrayViewFromImage(small_mask).any():
        return image, image * 0.0
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations(list(iterations))
    corrector.Execute(small, small_mask)
    log_bias = sitk.Cast(corrector.GetLogBiasFieldAsImage(positive), sitk.sitkFloat32)
    corrected = image / sitk.Exp(log_bias)
    return corrected, log_bias


FIELDS = ("n4_grid_mm", "n4_iterations")


class N4BiasFieldCorrection(tio.Transform):
    """Divide the scan by its N4-estimated bias field.

    Args:
        grid_mm: voxel size of the shrunk copy the field is fitted on (shrink factor =
            ``grid_mm`` / voxel size, at least 1).
        iterations: iterations per resolution level.
    """

    def __init__(self, grid_mm: float = 8.0, iterations: tuple[int, ...] = (50, 50, 30), **kwargs) -> None:
        super().__init__(**kwargs)
        self.grid_mm = grid_mm
        self.iterations = tuple(iterations)
        self.args_names = ["grid_mm", "iterations"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        image = main_image(subject)
        shrink = max(1, int(round(self.grid_mm / min(image.spacing))))
        corrected, log_bias = n4_correct(image.as_sitk(), shrink, self.iterations)
        data = sitk.GetArrayFromImage(corrected).transpose(2, 1, 0)  # SimpleITK arrays are z, y, x
        image.set_data(torch.from_numpy(np.ascontiguousarray(data[None], dtype=np.float32)))
        field = sitk.GetArrayViewFromImage(log_bias)
        add_qc(subject, n4_bias_range=round(float(np.exp(field.max() - field.min())), 3) if field.size else 1.0)
        return subject


def build(config: PreprocessConfig) -> tio.Transform:
    """The N4 step."""
    return N4BiasFieldCorrection(grid_mm=config.n4_grid_mm, iterations=config.n4_iterations)
