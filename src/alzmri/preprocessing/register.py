"""Affine registration to the MNI152 template (the template shipped with nilearn; offline).

Like Clinica's ``t1-linear`` (the input of Liu et al. 2022), a 12-parameter affine removes head
pose and head size, so a model sees anatomy, not positioning. The transform is estimated with
SimpleITK (Mattes mutual information, two resolution levels) against the template at a coarse
``registration_spacing`` for speed, then the scan is resampled once onto the template's grid at
the pipeline's ``spacing``. Atlases in MNI space then line up with every output.
"""

from __future__ import annotations

import functools

import numpy as np
import SimpleITK as sitk
import torch
import torchio as tio

from alzmri.io.templates import load_mni152
from alzmri.preprocessing.config import PreprocessConfig
from alzmri.preprocessing.subject import MASK_KEY, add_qc, main_image

FIELDS = ("spacing",)
_SAMPLING_SEED = 1234  # fixed so registration (random metric sampling) is repeatable


@functools.lru_cache(maxsize=4)
def template_image(spacing: float) -> sitk.Image:
    """The MNI152 T1 template as a SimpleITK image resampled to isotropic ``spacing`` mm."""
    mni = load_mni152()
    image = tio.ScalarImage(tensor=torch.from_numpy(np.array(mni.t1)[None]), affine=mni.affine)
    if spacing != 1.0:
        image = tio.Resample(spacing)(image)
    return image.as_sitk()


def estimate_affine(
    moving: sitk.Image, fixed: sitk.Image, fixed_mask: sitk.Image | None = None, sampling: float = 0.25, iterations: int = 150
) -> tuple[sitk.Transform, float]:
    """Affine transform mapping template (fixed) points to scan (moving) points, and the final metric.

    Args:
        moving: the scan.
        fixed: the template.
        fixed_mask: restrict the metric to this region of the template (None: everywhere).
        sampling: fraction of voxels sampled (randomly, with a fixed seed) per metric evaluation.
        iterations: optimiser iterations per resolution level.
    """
    moving = sitk.Cast(moving, sitk.sitkFloat32)
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    if fixed_mask is not None:
        reg.SetMetricFixedMask(fixed_mask)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, _SAMPLING_SEED)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=iterations, relaxationFactor=0.6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    reg.SetInitialTransform(initial, inPlace=False)
    transform = reg.Execute(fixed, moving)
    return transform, float(reg.GetMetricValue())


class RegisterToMNI(tio.Transform):
    """Resample every image of the subject into MNI152 space with one estimated affine.

    Args:
        spacing: output voxel size in mm (the template grid at this spacing).
        registration_spacing: template voxel size used to estimate the transform.
    """

    def __init__(self, spacing: float = 1.0, registration_spacing: float = 3.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spacing = spacing
        self.registration_spacing = registration_spacing
        self.args_names = ["spacing", "registration_spacing"]

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        transform, metric = estimate_affine(main_image(subject).as_sitk(), template_image(self.registration_spacing))
        reference = template_image(self.spacing)
        for name, image in subject.get_images_dict(intensity_only=False).items():
            interpolator = sitk.sitkNearestNeighbor if name == MASK_KEY or isinstance(image, tio.LabelMap) else sitk.sitkLinear
            moved = sitk.Resample(image.as_sitk(), reference, transform, interpolator, 0.0)
            data, affine = tio.io.sitk_to_nib(moved)
            image.set_data(torch.from_numpy(np.ascontiguousarray(data)))
            image.affine = affine
        add_qc(subject, registration_mi=round(metric, 4))
        return subject


def warm_up(config: PreprocessConfig) -> None:
    """Load the template grids now, so worker processes forked later share them."""
    template_image(3.0)
    template_image(config.spacing)


def build(config: PreprocessConfig) -> tio.Transform:
    """The registration step."""
    return RegisterToMNI(spacing=config.spacing)
