"""Skull stripping with a tool the user has installed: SynthStrip, HD-BET or FSL BET.

Each adapter writes the scan to a temporary folder, runs the tool there and reads its brain
mask back onto the scan's grid. The tools are not dependencies of alzmri and alzmri downloads
no weights for them:

- ``synthstrip``: ``mri_synthstrip`` from FreeSurfer >= 7.3 (model included),
  ``mri_synthstrip -i IN -m MASK``.
- ``hd-bet``: ``hd-bet`` from ``pip install hd-bet`` (https://github.com/MIC-DKFZ/HD-BET),
  which fetches its own parameters on its first run. Run on the CPU without test-time
  augmentation. HD-BET v2 (``-i IN -o OUT.nii.gz -device cpu --disable_tta --save_bet_mask``,
  mask ``OUT_bet.nii.gz``) is tried first; when its argument parser rejects these flags the
  v1 layout is used (``-device cpu -mode fast -tta 0 -s 1``, mask ``OUT_mask.nii.gz``).
- ``bet``: FSL BET (https://fsl.fmrib.ox.ac.uk), ``bet IN OUT -m -R`` with
  ``FSLOUTPUTTYPE=NIFTI_GZ``, mask ``OUT_mask.nii.gz``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk

from alzmri.utils.errors import AlzmriError

ExternalMethod = Literal["synthstrip", "hd-bet", "bet"]
TOOLS: dict[str, tuple[str, str]] = {  # method: (executable, where it comes from)
    "synthstrip": ("mri_synthstrip", "FreeSurfer >= 7.3"),
    "hd-bet": ("hd-bet", "pip install hd-bet, https://github.com/MIC-DKFZ/HD-BET"),
    "bet": ("bet", "FSL, https://fsl.fmrib.ox.ac.uk"),
}


def _attempts(method: str, exe: str, inp: Path, out: Path) -> list[tuple[list[str], Path]]:
    """Command lines to try in order, each with the mask file it writes."""
    if method == "synthstrip":
        return [([exe, "-i", str(inp), "-m", str(out / "mask.nii.gz")], out / "mask.nii.gz")]
    if method == "hd-bet":
        brain = str(out / "brain.nii.gz")
        return [
            ([exe, "-i", str(inp), "-o", brain, "-device", "cpu", "--disable_tta", "--save_bet_mask"], out / "brain_bet.nii.gz"),
            ([exe, "-i", str(inp), "-o", brain, "-device", "cpu", "-mode", "fast", "-tta", "0", "-s", "1"], out / "brain_mask.nii.gz"),
        ]
    return [([exe, str(inp), str(out / "brain"), "-m", "-R"], out / "brain_mask.nii.gz")]


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _run(argv: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run one command; a timeout or a failure to start becomes an AlzmriError."""
    env = {**os.environ, "FSLOUTPUTTYPE": "NIFTI_GZ"}  # BET's output format; ignored by the others
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise AlzmriError(f"{Path(argv[0]).name} timed out after {timeout_s:g} s") from None
    except OSError as exc:
        raise AlzmriError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None


def _same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    return a.GetSize() == b.GetSize() and all(
        np.allclose(f(a), f(b), atol=tol) for f in (sitk.Image.GetOrigin, sitk.Image.GetSpacing, sitk.Image.GetDirection)
    )


def _read_mask(path: Path, image: sitk.Image, exe: str) -> np.ndarray:
    """The mask file as a boolean (x, y, z) array on ``image``'s grid."""
    if not path.is_file() or path.stat().st_size == 0:
        raise AlzmriError(f"{exe} finished but wrote no mask ({path.name} is missing or empty)")
    try:
        mask = sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)
    except RuntimeError as exc:
        raise AlzmriError(f"cannot read the mask {exe} wrote: {_last_line(str(exc))}") from None
    if mask.GetDimension() != 3:
        raise AlzmriError(f"{exe} wrote a {mask.GetDimension()}D mask, expected 3D")
    if _same_grid(mask, image):
        mask.CopyInformation(image)  # float32 rounding in the NIfTI header only
    else:
        mask = sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0, sitk.sitkFloat32)
    out = sitk.GetArrayFromImage(mask).transpose(2, 1, 0) > 0.5  # (z, y, x) → (x, y, z)
    if not out.any():
        raise AlzmriError(f"{exe} wrote an empty brain mask")
    return out


def external_brain_mask(method: ExternalMethod, image: sitk.Image, timeout_s: float = 1800) -> np.ndarray:
    """Brain mask of ``image`` computed by an installed skull-stripping tool.

    Args:
        method: ``synthstrip``, ``hd-bet`` or ``bet`` (see the module docstring).
        image: 3D scalar scan; its geometry is kept in the file the tool reads.
        timeout_s: seconds the tool may run.

    Returns:
        Boolean mask, shape (x, y, z) = ``image.GetSize()``, on ``image``'s grid.

    Raises:
        AlzmriError: the tool is not on PATH, fails, times out, or writes no usable mask.
    """
    if method not in TOOLS:
        raise AlzmriError(f"unknown external skull-stripping method {method!r}; choose one of {', '.join(TOOLS)}")
    name, source = TOOLS[method]
    exe = shutil.which(name)
    if exe is None:
        raise AlzmriError(f"--skull-strip {method} needs the executable '{name}' on PATH ({source}); install it or use --skull-strip template")
    with tempfile.TemporaryDirectory(prefix="alzmri-strip-") as tmp:
        folder = Path(tmp)
        inp = folder / "input.nii.gz"
        sitk.WriteImage(image, str(inp))
        attempts = _attempts(method, exe, inp, folder)
        for i, (argv, mask_path) in enumerate(attempts):
            result = _run(argv, timeout_s)
            rejected = result.returncode == 2 and "unrecognized arguments" in result.stderr
            if not (rejected and i + 1 < len(attempts)):  # argparse refused this flag layout: try the next
                break
        if result.returncode != 0:
            why = _last_line(result.stderr) or _last_line(result.stdout) or "no message"
            raise AlzmriError(f"{name} exited with status {result.returncode}: {why}")
        return _read_mask(mask_path, image, name)
