"""A synthetic T1w head with known ground truth, for testing skull stripping and bias correction.

The brain is nilearn's MNI152 template, deformed by a smooth random warp so that no affine
registration to the template fits it exactly. Around it, layers follow the distance from the
brain surface (with smoothly varying thickness): cerebrospinal fluid (dark), skull (dark
tables around brighter diploë) and scalp (bright, like fat on T1). The head is posed at a
random rotation and position, sampled onto an anisotropic grid stored in any axis order, and
multiplied by a smooth bias field before Rician noise is added.

Everything returned is on the scan's grid: the image, the true brain mask, the true white
matter mask and the bias field that was applied.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from alzmri.data.synth.scanner import rotation_matrix
from alzmri.io.templates import load_mni152

# Layer intensities on the template's scale (white matter ~0.85, air 0).
CSF, SKULL, DIPLOE, SCALP = 0.12, 0.04, 0.30, 0.85
# Mean layer thicknesses, mm: CSF, skull, scalp.
THICKNESS_MM = (2.5, 6.0, 5.0)
_SHELL_MM = 2.0  # grid spacing of the layer model (smooth, so a coarse grid suffices)
_PAD_MM = 24.0
_AXIS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


@dataclass(frozen=True)
class SyntheticHead:
    """A rendered head and its ground truth, all on the same grid.

    Attributes:
        image: int16 T1w image with skull, scalp, bias field and noise.
        brain_mask: uint8 true brain mask.
        wm_mask: uint8 true white-matter mask (probability > 0.5).
        bias: float32 multiplicative bias field that was applied.
    """

    image: nib.Nifti1Image
    brain_mask: nib.Nifti1Image
    wm_mask: nib.Nifti1Image
    bias: np.ndarray


@functools.lru_cache(maxsize=1)
def _shell_model() -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (mm) outside the brain on a coarse padded grid, and that grid's affine."""
    mni = load_mni152()
    step = int(_SHELL_MM)
    mask = mni.brain_mask[::step, ::step, ::step]
    pad = int(_PAD_MM / _SHELL_MM)
    mask = np.pad(mask, pad)
    distance = ndi.distance_transform_edt(~mask) * _SHELL_MM
    affine = mni.affine @ np.diag([step, step, step, 1.0])
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, pad)
    distance = distance.astype(np.float32)
    distance.setflags(write=False)
    return distance, affine


def _layers(distance: np.ndarray, thickness: np.ndarray) -> np.ndarray:
    """Shell intensity from the distance outside the brain; ``thickness`` is (3, N) per point."""
    csf_end = thickness[0]
    skull_end = csf_end + thickness[1]
    scalp_end = skull_end + thickness[2]
    depth = (distance - csf_end) / np.maximum(thickness[1], 1e-3)  # 0..1 across the skull
    skull = np.where(np.abs(depth - 0.5) < 0.2, DIPLOE, SKULL)
    out = np.where(distance <= csf_end, CSF, np.where(distance <= skull_end, skull, np.where(distance <= scalp_end, SCALP, 0.0)))
    return np.where(distance <= 0.0, 0.0, out).astype(np.float32)


def _grid(shape: tuple[int, int, int] | None, voxel: np.ndarray, orientation: str, rotation: np.ndarray, centre: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """Scan voxel grid: the given axis order and voxel size, around the posed head."""
    columns = np.zeros((3, 3))
    for k, code in enumerate(orientation):
        axis, sign = _AXIS[code]
        columns[axis, k] = sign * voxel[k]
    if shape is None:
        extent = np.array([200.0, 240.0, 215.0])  # head plus margin, mm, per world axis
        extent = np.abs(rotation) @ extent
        shape = tuple(int(np.ceil(extent[_AXIS[c][0]] / voxel[k])) for k, c in enumerate(orientation))  # type: ignore[assignment]
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = centre - columns @ ((np.array(shape) - 1) / 2.0)
    return shape, affine  # type: ignore[return-value]


def synthetic_head(
    seed: int = 0,
    voxel_size: float | tuple[float, float, float] = 2.0,
    orientation: str = "RAS",
    shape: tuple[int, int, int] | None = None,
    max_rotation_deg: float = 12.0,
    warp_mm: float = 2.5,
    bias_strength: float = 0.3,
    noise: float = 0.02,
) -> SyntheticHead:
    """Render one synthetic head.

    Args:
        seed: random seed (pose, warp, layer thickness, bias, noise).
        voxel_size: voxel size in mm along the stored axes (one value: isotropic).
        orientation: axis codes of the stored array, e.g. ``"LPS"`` or ``"PIR"``.
        shape: stored array shape; default: a box that holds the head.
        max_rotation_deg: largest head rotation about each axis.
        warp_mm: root-mean-square displacement of the smooth brain deformation.
        bias_strength: standard deviation of the log bias field over the head.
        noise: Rician noise standard deviation as a fraction of white matter.

    Returns:
        The head and its ground truth.
    """
    rng = np.random.default_rng(seed)
    mni = load_mni152()
    voxel = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,)).copy()
    rotation = rotation_matrix(tuple(rng.uniform(-max_rotation_deg, max_rotation_deg, 3)))
    scale = rng.uniform(0.92, 1.08, 3)
    brain_centre = np.array([0.0, -18.0, 8.0])
    translation = rng.uniform(-10.0, 10.0, 3)
    shape, affine = _grid(shape, voxel, orientation, rotation, translation)

    # Scan voxel -> scanner world -> template world (inverse pose), then the smooth warp.
    ijk = np.stack(np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")).reshape(3, -1)
    world = affine[:3, :3].astype(np.float32) @ ijk + affine[:3, 3:4].astype(np.float32)
    inverse = (np.linalg.inv(rotation @ np.diag(scale))).astype(np.float32)
    template = inverse @ (world - translation[:, None].astype(np.float32)) + brain_centre[:, None].astype(np.float32)
    del ijk, world

    coarse_shape = (14, 16, 14)  # control points ~16 mm apart over the head
    low = np.array([-100.0, -135.0, -90.0])
    spacing = np.array([200.0, 240.0, 200.0]) / (np.array(coarse_shape) - 1)
    field = ndi.gaussian_filter(rng.standard_normal((3, *coarse_shape)), (0, 1, 1, 1))
    field *= warp_mm / max(float(np.sqrt((field**2).sum(axis=0).mean())), 1e-6)
    field_index = (template - low[:, None].astype(np.float32)) / spacing[:, None].astype(np.float32)
    for axis in range(3):
        template[axis] += ndi.map_coordinates(field[axis].astype(np.float32), field_index, order=1, mode="nearest")
    del field_index

    brain_index = (np.linalg.inv(mni.affine)[:3, :3] @ template + np.linalg.inv(mni.affine)[:3, 3:4]).astype(np.float32)
    blur = np.sqrt(np.maximum(voxel**2 - 1.0, 0.0)) / 2.355  # partial-volume blur of the 1 mm template
    t1 = ndi.gaussian_filter(mni.t1, blur) if blur.max() > 0.1 else mni.t1
    brain = ndi.map_coordinates(t1, brain_index, order=1, mode="constant", cval=0.0)
    in_brain = ndi.map_coordinates(mni.brain_mask.astype(np.float32), brain_index, order=1, mode="constant") > 0.5
    wm = ndi.map_coordinates(mni.wm, brain_index, order=1, mode="constant") > 0.5
    del brain_index

    distance, shell_affine = _shell_model()
    inv = np.linalg.inv(shell_affine)
    shell_index = (inv[:3, :3] @ template + inv[:3, 3:4]).astype(np.float32)
    dist = ndi.map_coordinates(distance, shell_index, order=1, mode="nearest")
    # Layer thickness varies smoothly over the head (+-30 %).
    variation = ndi.zoom(rng.uniform(0.7, 1.3, (3, 4, 4, 4)), (1, *(np.array(distance.shape) / 4.0)), order=1)
    thickness = np.stack([THICKNESS_MM[k] * ndi.map_coordinates(variation[k].astype(np.float32), shell_index, order=1, mode="nearest") for k in range(3)])
    shell = _layers(dist, thickness)
    del shell_index, thickness, template

    signal = np.where(in_brain, brain, shell).astype(np.float32).reshape(shape)
    unit = np.stack(np.meshgrid(*(np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape), indexing="ij"))
    x, y, z = unit
    terms = np.stack([x, y, z, x * x - 0.33, y * y - 0.33, z * z - 0.33, x * y, x * z, y * z])
    coeffs = rng.normal(0.0, 1.0, len(terms)).astype(np.float32)
    log_bias = np.tensordot(coeffs, terms, axes=1)
    log_bias *= bias_strength / max(float(log_bias.std()), 1e-6)
    bias = np.exp(log_bias).astype(np.float32)
    del unit, terms, x, y, z

    sigma = noise * 0.85
    real = signal * bias + rng.normal(0.0, sigma, shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, shape).astype(np.float32)
    image = np.sqrt(real * real + imag * imag) * 1000.0
    image = np.clip(np.rint(image), 0, np.iinfo(np.int16).max).astype(np.int16)

    def nifti(data: np.ndarray) -> nib.Nifti1Image:
        img = nib.Nifti1Image(data, affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm")
        return img

    return SyntheticHead(
        image=nifti(image),
        brain_mask=nifti(in_brain.reshape(shape).astype(np.uint8)),
        wm_mask=nifti(wm.reshape(shape).astype(np.uint8)),
        bias=bias,
    )
