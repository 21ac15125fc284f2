"""Template skull stripping, offline: register the MNI152 brain, warp its mask, refine it.

1. An affine registration (SimpleITK, Mattes mutual information, 2 levels at 3 mm) aligns the
   skull-stripped MNI152 template shipped with nilearn to the scan. The metric is restricted
   to the template brain grown by a few mm, so the brain's edge against dark CSF and skull
   drives the fit and the scalp cannot pull it outwards.
2. The template brain mask is carried onto the scan's grid.
3. Near the warped mask's edge (a band of ``band_mm`` on either side), a voxel is kept when it
   is brighter than an Otsu threshold of that band (brain tissue vs. CSF and skull); then a
   morphological opening cuts thin bridges to the scalp, the largest component is kept, and a
   closing plus hole filling restore sulci and ventricles.

No weights are downloaded; ~2 s per scan at 1 mm on one core.
"""

from __future__ import annotations

import functools

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from alzmri.io.templates import load_mni152
from alzmri.preprocessing.register import estimate_affine
from alzmri.utils.errors import AlzmriError

REGISTRATION_MM = 3.0
WORK_MM = 2.0  # finer scans are masked on a 2 mm copy and the mask is interpolated back


def _template(spacing_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """Template T1 and brain mask as SimpleITK images resampled to ``spacing_mm``."""
    mni = load_mni152()
    t1 = _from_ras(np.asarray(mni.t1, dtype=np.float32), mni.affine)
    mask = _from_ras(np.asarray(mni.brain_mask, dtype=np.float32), mni.affine)
    if spacing_mm != 1.0:
        size = [int(round(n / spacing_mm)) for n in t1.GetSize()]
        ref = sitk.Image(size, sitk.sitkFloat32)
        ref.SetOrigin(t1.GetOrigin())
        ref.SetDirection(t1.GetDirection())
        ref.SetSpacing([spacing_mm] * 3)
        smooth = sitk.SmoothingRecursiveGaussian(t1, spacing_mm / 2.355)
        t1 = sitk.Resample(smooth, ref, sitk.Transform(), sitk.sitkLinear, 0.0)
        mask = sitk.Resample(mask, ref, sitk.Transform(), sitk.sitkLinear, 0.0)
    return t1, mask


def _from_ras(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image (LPS physical space) from a RAS-affine array (axes x, y, z)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    lps = np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps / spacing).ravel().tolist())
    image.SetOrigin((np.diag([-1.0, -1.0, 1.0]) @ affine[:3, 3]).tolist())
    return image


@functools.lru_cache(maxsize=4)
def template(spacing_mm: float) -> tuple[sitk.Image, sitk.Image]:
    """Cached :func:`_template` (one copy per process and spacing)."""
    return _template(spacing_mm)


def coarse_copy(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """``image`` smoothed and resampled to ``spacing_mm`` (same origin and axes); itself if not finer."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    spacing = np.array(image.GetSpacing())
    if spacing.min() >= 0.75 * spacing_mm:
        return image
    sigma = np.sqrt(np.maximum(spacing_mm**2 - spacing**2, 0.0)) / 2.355
    smooth = sitk.SmoothingRecursiveGaussian(image, sigma.tolist())
    size = np.ceil(np.array(image.GetSize()) * spacing / spacing_mm).astype(int)
    reference = sitk.Image(size.tolist(), sitk.sitkFloat32)
    reference.SetOrigin(image.GetOrigin())
    reference.SetDirection(image.GetDirection())
    reference.SetSpacing([spacing_mm] * 3)
    return sitk.Resample(smooth, reference, sitk.Transform(), sitk.sitkLinear, 0.0)


def register_template(scan: sitk.Image) -> tuple[sitk.Transform, float]:
    """Affine transform mapping template points to scan points, and the final metric value."""
    fixed, fixed_mask = template(REGISTRATION_MM)
    moving = coarse_copy(scan, REGISTRATION_MM)  # the metric only needs the template's resolution
    region = sitk.BinaryDilate(fixed_mask > 0.5, [2, 2, 2])
    return estimate_affine(moving, fixed, fixed_mask=region, sampling=0.3, iterations=200)


def refine_mask(volume: np.ndarray, prior: np.ndarray, spacing: tuple[float, float, float], band_mm: float = 5.0) -> np.ndarray:
    """Adjust a warped template mask to the scan's own brain edge.

    Args:
        volume: the scan, (x, y, z) array.
        prior: the warped template brain mask, boolean, same shape.
        spacing: voxel size in mm along each axis.
        band_mm: how far (mm) from the prior's edge the intensity may move it.

    Returns:
        The refined boolean brain mask.
    """
    inside = ndi.distance_transform_edt(prior, sampling=spacing)
    outside = ndi.distance_transform_edt(~prior, sampling=spacing)
    core = inside > band_mm
    band = (inside <= band_mm) & (outside <= band_mm)
    if not core.any() or not band.any():
        return prior
    values = volume[band]
    threshold = threshold_otsu(values) if values.max() > values.min() else float(values.min())
    mask = core | (band & (volume > threshold))
    ball = _ball(spacing, 2.0)
    mask = ndi.binary_opening(mask, structure=ball)
    labels, n = ndi.label(mask)
    if n > 1:
        sizes = ndi.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == int(np.argmax(sizes)) + 1
    mask = ndi.binary_closing(np.pad(mask, 4), structure=_ball(spacing, 4.0))[4:-4, 4:-4, 4:-4]
    mask &= outside <= band_mm
    return ndi.binary_fill_holes(mask | core)


def _ball(spacing: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    half = [max(1, int(radius_mm // s)) for s in spacing]
    grid = np.meshgrid(*(np.arange(-h, h + 1) * s for h, s in zip(half, spacing, strict=True)), indexing="ij")
    return sum(g**2 for g in grid) <= radius_mm**2 + 1e-6


def template_brain_mask(scan: sitk.Image, refine: bool = True) -> tuple[np.ndarray, float]:
    """Brain mask of a skull-on scan by template registration (and refinement).

    Args:
        scan: the scan (bias-corrected works best).
        refine: adjust the warped mask to the scan's intensities.

    Returns:
        ``(mask, metric)``: boolean (x, y, z) array on the scan's grid; final registration metric
        (Mattes MI, more negative is better).

    Raises:
        AlzmriError: the warped template does not overlap the scan.
    """
    transform, metric = register_template(scan)
    work = coarse_copy(scan, WORK_MM)  # morphology at 1 mm would cost ~10x more for ~no gain
    _, mask_1mm = template(1.0)
    # The registration maps template points to scan points; resampling onto the scan's grid
    # needs the opposite direction.
    warped = sitk.Resample(mask_1mm, work, transform.GetInverse(), sitk.sitkLinear, 0.0)
    mask = sitk.GetArrayFromImage(warped).transpose(2, 1, 0) > 0.5
    if not mask.any():
        raise AlzmriError("template skull stripping failed: the registered brain lies outside the image")
    if refine:
        volume = sitk.GetArrayFromImage(work).transpose(2, 1, 0)
        mask = refine_mask(volume, mask, tuple(work.GetSpacing()))
    if work.GetSize() != scan.GetSize():
        soft = sitk.GetImageFromArray(mask.transpose(2, 1, 0).astype(np.float32))
        soft.CopyInformation(work)
        mask = sitk.GetArrayFromImage(sitk.Resample(soft, scan, sitk.Transform(), sitk.sitkLinear, 0.0)).transpose(2, 1, 0) > 0.5
    return mask, metric
