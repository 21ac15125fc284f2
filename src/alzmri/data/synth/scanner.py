"""Per-scan acquisition: site, field of view, voxel grid and orientation, pose, contrast, bias, noise.

Scanner world coordinates are RAS mm with the subject's head near the isocentre. The stored
array axes follow a drawn orientation code (``RAS``, ``LPS``, sagittal ``PSR`` ...), written
into the affine, so a reader has to reorient; some grids are also slightly oblique.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from alzmri.data.synth.anatomy import BRAIN_CENTER, BRAIN_MAX, BRAIN_MIN

ORIENTATIONS = ("RAS", "LAS", "LPS", "RPI", "LIA", "PSR", "ASL")
_AXIS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}
# Virtual sites: (field strength T, contrast gamma, noise as a fraction of white matter, vendor model).
SITES = (
    (3.0, 1.00, 0.020, "Virtual-3T-A"),
    (1.5, 0.88, 0.035, "Virtual-1.5T-B"),
    (3.0, 1.15, 0.025, "Virtual-3T-C"),
    (1.5, 1.05, 0.045, "Virtual-1.5T-D"),
)
# Template intensity of white matter, mapped to the scan's ``intensity_scale``.
_TEMPLATE_WM = 0.87
_BIAS_TERMS = 9


@dataclass(frozen=True)
class ScanParams:
    """Acquisition parameters drawn for one scan (also written to its JSON sidecar).

    Attributes:
        site: index into :data:`SITES`.
        orientation: axis codes of the stored array, e.g. ``"LPS"``.
        voxel_size_mm: voxel size along each stored array axis.
        oblique_deg: small rotation of the voxel grid in the scanner, degrees (x, y, z).
        rotation_deg: head rotation in the scanner, degrees (x, y, z).
        translation_mm: head position relative to the isocentre, mm.
        fov_margin_mm: space left around the head on each world axis, mm.
        intensity_scale: stored white-matter intensity.
        gamma: contrast exponent applied to normalised intensities.
        bias_strength: standard deviation of the log bias field.
        bias_coeffs: coefficients of the quadratic log bias field.
        noise_fraction: noise standard deviation as a fraction of white-matter intensity.
        repetition_time: TR, seconds.
        echo_time: TE, seconds.
        inversion_time: TI, seconds.
        flip_angle: degrees.
    """

    site: int
    orientation: str
    voxel_size_mm: tuple[float, float, float]
    oblique_deg: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    fov_margin_mm: tuple[float, float, float]
    intensity_scale: float
    gamma: float
    bias_strength: float
    bias_coeffs: tuple[float, ...]
    noise_fraction: float
    repetition_time: float
    echo_time: float
    inversion_time: float
    flip_angle: float


def _vec(values: np.ndarray, digits: int = 4) -> tuple[float, float, float]:
    return tuple(round(float(v), digits) for v in values)  # type: ignore[return-value]


def draw_scan_params(rng: np.random.Generator, nominal_voxel: float, site: int) -> ScanParams:
    """Draw one scan's acquisition.

    Args:
        rng: the scan's random generator.
        nominal_voxel: nominal voxel size, mm.
        site: the subject's site (subjects stay at one site across sessions).

    Returns:
        The drawn parameters.
    """
    strength, gamma, noise, _ = SITES[site]
    voxel = nominal_voxel * rng.uniform(0.94, 1.06) * (1.0 + rng.normal(0.0, 0.01, size=3))
    if rng.random() < 0.25:  # thicker slices along the last (slice) axis
        voxel[2] *= rng.uniform(1.15, 1.4)
    oblique = rng.uniform(-5.0, 5.0, size=3) if rng.random() < 0.3 else np.zeros(3)
    tr = 2.3 if strength == 3.0 else 2.4
    return ScanParams(
        site=site,
        orientation=str(rng.choice(ORIENTATIONS)),
        voxel_size_mm=_vec(voxel),
        oblique_deg=_vec(oblique, 2),
        rotation_deg=_vec(np.clip(rng.normal(0.0, 4.0, size=3), -10.0, 10.0), 2),
        translation_mm=_vec(np.clip(rng.normal(0.0, 5.0, size=3), -12.0, 12.0), 2),
        fov_margin_mm=_vec(rng.uniform(8.0, 20.0, size=3), 1),
        intensity_scale=round(float(rng.uniform(400.0, 1200.0)), 1),
        gamma=round(float(gamma * rng.lognormal(0.0, 0.06)), 4),
        bias_strength=round(float(rng.uniform(0.05, 0.2)), 4),
        bias_coeffs=tuple(round(float(c), 4) for c in rng.normal(0.0, 1.0, size=_BIAS_TERMS)),
        noise_fraction=round(float(noise * rng.lognormal(0.0, 0.2)), 4),
        repetition_time=round(tr + float(rng.normal(0.0, 0.05)), 3),
        echo_time=round(float(rng.uniform(0.0025, 0.0035)), 5),
        inversion_time=round(float(rng.uniform(0.85, 1.0)), 3),
        flip_angle=float(rng.choice([8.0, 9.0])),
    )


def rotation_matrix(degrees: tuple[float, float, float]) -> np.ndarray:
    """Rotation about x, then y, then z.

    Args:
        degrees: angles about the x, y and z axes.

    Returns:
        3 x 3 rotation matrix.
    """
    ax, ay, az = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def head_to_scanner(params: ScanParams, head_scale: np.ndarray) -> np.ndarray:
    """Forward map from template world (undeformed subject) to scanner world, ignoring warps.

    Args:
        params: the scan's acquisition.
        head_scale: the subject's per-axis head scale.

    Returns:
        4 x 4 matrix ``x = R S (p - c) + t`` with ``c`` the template brain centre.
    """
    linear = rotation_matrix(params.rotation_deg) @ np.diag(head_scale)
    forward = np.eye(4)
    forward[:3, :3] = linear
    forward[:3, 3] = np.asarray(params.translation_mm) - linear @ BRAIN_CENTER
    return forward


def output_grid(params: ScanParams, forward: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """The stored voxel grid: a box around the head in the drawn orientation and voxel size.

    Args:
        params: the scan's acquisition.
        forward: template-to-scanner matrix from :func:`head_to_scanner`.

    Returns:
        ``(shape, affine)`` of the stored array.
    """
    # The brain is close to an ellipsoid: its rotated extent is tighter than a rotated box's.
    centre = forward[:3, :3] @ ((BRAIN_MIN + BRAIN_MAX) / 2.0) + forward[:3, 3]
    half = np.sqrt(((forward[:3, :3] * (BRAIN_MAX - BRAIN_MIN) / 2.0) ** 2).sum(axis=1))
    margin = np.asarray(params.fov_margin_mm)
    low, high = centre - half - margin, centre + half + margin
    columns = np.zeros((3, 3))
    shape = []
    for k, code in enumerate(params.orientation):
        axis, sign = _AXIS[code]
        size = params.voxel_size_mm[k]
        columns[axis, k] = sign * size
        shape.append(int(np.ceil((high[axis] - low[axis]) / size)) + 1)
    columns = rotation_matrix(params.oblique_deg) @ columns
    affine = np.eye(4)
    affine[:3, :3] = columns
    affine[:3, 3] = (low + high) / 2.0 - columns @ ((np.array(shape) - 1) / 2.0)
    return (shape[0], shape[1], shape[2]), affine


def log_bias(params: ScanParams, unit_coords: np.ndarray) -> np.ndarray:
    """Smooth log bias field (quadratic in scanner position) at given points.

    Args:
        params: the scan's acquisition.
        unit_coords: (3, ...) positions scaled to about [-1, 1] over the field of view.

    Returns:
        float32 log multiplicative bias, same trailing shape as ``unit_coords``.
    """
    x, y, z = unit_coords
    terms = (x, y, z, x * x - 0.33, y * y - 0.33, z * z - 0.33, x * y, x * z, y * z)
    field = sum(c * t for c, t in zip(params.bias_coeffs, terms, strict=True))
    return (params.bias_strength / 1.2 * field).astype(np.float32)


def finish_intensities(image: np.ndarray, bias: np.ndarray, params: ScanParams, rng: np.random.Generator) -> np.ndarray:
    """Contrast, bias and Rician noise: template intensities to stored scanner values.

    Args:
        image: resampled template intensities (white matter ~0.87, background 0).
        bias: multiplicative bias field, same shape.
        params: the scan's acquisition.
        rng: the scan's random generator (noise).

    Returns:
        int16 array of stored intensities.
    """
    signal = np.clip(image, 0.0, None) * np.float32(1.0 / _TEMPLATE_WM)
    np.power(signal, np.float32(params.gamma), out=signal)
    signal *= bias
    signal *= np.float32(params.intensity_scale)
    sigma = np.float32(params.noise_fraction * params.intensity_scale)
    # Rician noise: the magnitude of a complex signal with Gaussian noise on both channels.
    noise = rng.standard_normal(signal.shape, dtype=np.float32)
    noise *= sigma
    signal += noise
    signal *= signal
    rng.standard_normal(dtype=np.float32, out=noise)
    noise *= sigma
    noise *= noise
    signal += noise
    np.sqrt(signal, out=signal)
    np.minimum(signal, np.float32(np.iinfo(np.int16).max), out=signal)
    return np.rint(signal, out=signal).astype(np.int16)


def sidecar(params: ScanParams) -> dict[str, Any]:
    """BIDS JSON sidecar of a T1w scan, with every drawn parameter under ``SynthAcquisition``.

    Args:
        params: the scan's acquisition.

    Returns:
        JSON-serialisable dict.
    """
    strength, _, _, model = SITES[params.site]
    return {
        "Modality": "MR",
        "MagneticFieldStrength": strength,
        "Manufacturer": "alzmri-synth",
        "ManufacturersModelName": model,
        "InstitutionName": f"virtual-site-{params.site + 1}",
        "MRAcquisitionType": "3D",
        "ScanningSequence": "GR\\IR",
        "PulseSequenceType": "MPRAGE",
        "RepetitionTime": params.repetition_time,
        "EchoTime": params.echo_time,
        "InversionTime": params.inversion_time,
        "FlipAngle": params.flip_angle,
        "SynthAcquisition": asdict(params),
    }
