"""deepbet skull stripping, offline: the TorchScript networks of the ``deepbet`` wheel, our pipeline.

deepbet (Fisch et al. 2024, *Comput. Biol. Med.*; MIT licence; trained on 7,837 T1w scans from
191 datasets) is two 3D U-Nets: a coarse one at 128³ finds the brain's bounding box, a fine one
at 256³ segments the brain inside that box (grown by 10 % per side). Its wheel ships both networks
as TorchScript archives (``model.pt``, ``bbox_model.pt``) in a top-level ``data/models`` folder
of site-packages; they are found here through the package's location, **without importing
deepbet** (whose import pulls its own helpers and device selection), and loaded with
``torch.jit.load``: a TorchScript archive holds code and tensors that TorchScript's own loader
rebuilds, no arbitrary Python objects are unpickled, unlike ``torch.load`` of a pickled model.

The inference follows the published method (resampling by nearest neighbour, intensity clipped to
the 0.5-99.5 percentiles of the coarse copy, then standardised to the networks' training
statistics); everything around it is ours: the scan is brought to RAS axis order, the mask goes
back onto the scan's own grid, the largest connected component is kept, holes are filled,
``dilate`` grows (or, negative, shrinks) the mask by whole voxels, and a scan without a brain is a
one-line error.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from alzmri.preprocessing.morphology import largest_component
from alzmri.utils.errors import AlzmriError, first_line

COARSE_SHAPE = (128, 128, 128)
FINE_SHAPE = (256, 256, 256)
BOX_MARGIN = 0.1  # fraction of the coarse brain box added on each side
BOX_PLANE_SHARE = 0.02  # share of a coarse plane that must be brain for the plane to be in the box
_MEAN, _STD = 0.449, 0.226  # the networks' input statistics
WHEEL = "deepbet==1.0.2"
SHA256 = {  # the files of the deepbet 1.0.2 wheel (its RECORD)
    "bbox_model.pt": "39a7b2b5f799faa1391ea97bfcdc0b9299f20d84f2316a4ff8918dc4685e40aa",
    "model.pt": "de8ee7c69654d0dd3935dc4a5d84571d8ecf4637a6bfc01df399c4c2bc86e0fd",
}


def model_dir() -> Path:
    """Folder of the deepbet wheel's TorchScript networks.

    Raises:
        AlzmriError: the wheel is not installed or its model files are missing.
    """
    spec = importlib.util.find_spec("deepbet")
    if spec is None or spec.origin is None:
        raise AlzmriError(f"--skull-strip deepbet needs the deepbet wheel: pip install --no-deps {WHEEL} (or use --skull-strip template)")
    folder = Path(spec.origin).resolve().parents[1] / "data" / "models"
    missing = [n for n in ("model.pt", "bbox_model.pt") if not (folder / n).is_file()]
    if missing:
        raise AlzmriError(f"the deepbet installation lacks {', '.join(missing)} in {folder}; reinstall it: pip install --no-deps --force-reinstall {WHEEL}")
    return folder


@functools.lru_cache(maxsize=1)
def networks() -> tuple[torch.jit.ScriptModule, torch.jit.ScriptModule]:
    """``(box_net, brain_net)``, loaded once per process on the CPU."""
    folder = model_dir()
    nets = []
    for name in ("bbox_model.pt", "model.pt"):
        check_file(folder / name)
        try:
            net = torch.jit.load(str(folder / name), map_location="cpu")
        except (RuntimeError, ValueError) as exc:
            raise AlzmriError(f"cannot load deepbet network {folder / name}: {first_line(exc)}") from None
        nets.append(net.eval())
    return nets[0], nets[1]


def check_file(path: Path) -> None:
    """Refuse a network file that is not byte-identical to the pinned release's.

    Raises:
        AlzmriError: the SHA-256 differs.
    """
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != SHA256[path.name]:
        raise AlzmriError(f"{path} is not the file of the {WHEEL} release (SHA-256 {digest[:12]}...); refusing to load it: "
                          f"reinstall with pip install --no-deps --force-reinstall {WHEEL}")


def _resize(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return F.interpolate(x[None, None], size=shape, mode="nearest-exact")[0, 0]


def _standardise(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    x = ((x - low) / (high - low)).clamp(0.0, 1.0)
    return _STD * (x - x.mean()) / x.std().clamp_min(1e-8) + _MEAN


def _box(mask: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The coarse mask's bounding box, scaled to ``shape`` and grown by ``BOX_MARGIN`` per side.

    As deepbet, a plane counts as brain when more than ``BOX_PLANE_SHARE`` of it is, so a few
    stray voxels do not stretch the box.

    Raises:
        AlzmriError: no plane along some axis holds enough brain.
    """
    box = []
    for axis, n in enumerate(shape):
        hit = np.flatnonzero(mask.mean(axis=tuple(a for a in range(3) if a != axis)) > BOX_PLANE_SHARE)
        if hit.size == 0:
            raise AlzmriError("deepbet found too little brain in the scan to place it (is it a T1w head?)")
        scale = n / mask.shape[axis]
        lo, hi = hit[0] * scale, (hit[-1] + 1) * scale
        grow = BOX_MARGIN * (hi - lo)
        box.append(slice(max(0, int(round(lo - grow))), min(n, int(round(hi + grow)))))
    return tuple(box)


@torch.no_grad()
def brain_probability(volume: np.ndarray) -> np.ndarray:
    """deepbet's brain probability for each voxel of an (x, y, z) array in RAS axis order."""
    if volume.ndim != 3 or min(volume.shape) < 8:
        raise AlzmriError(f"deepbet needs a 3D scan of at least 8 voxels per axis, got shape {volume.shape}")
    box_net, brain_net = networks()
    x = torch.nan_to_num(torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)))
    coarse = _resize(x, COARSE_SHAPE)
    low, high = (float(v) for v in torch.quantile(coarse.flatten(), torch.tensor([0.005, 0.995])))
    if not high > low:
        raise AlzmriError("deepbet found no brain: the scan has (almost) constant intensity")
    found = box_net(_standardise(coarse, low, high)[None, None])[0, 1].numpy() > 0.5
    if not found.any():
        raise AlzmriError("deepbet found no brain in the scan (is it a T1w head?)")
    box = _box(largest_component(found), tuple(x.shape))
    crop = x[box]
    prob = brain_net(_standardise(_resize(crop, FINE_SHAPE), low, high)[None, None])[0, 1]
    out = np.zeros(x.shape, dtype=np.float32)
    out[box] = _resize(prob, tuple(crop.shape)).numpy()
    return out


def deepbet_brain_mask(volume: np.ndarray, threshold: float = 0.5, dilate: int = 0) -> np.ndarray:
    """Boolean brain mask of a skull-on T1w scan, (x, y, z) in RAS axis order.

    Args:
        volume: the scan.
        threshold: probability above which a voxel is brain.
        dilate: voxels to grow the mask by (negative: shrink), 6-connected.

    Raises:
        AlzmriError: deepbet is not installed, or no brain is found.
    """
    mask = brain_probability(volume) > threshold
    if not mask.any():
        raise AlzmriError(f"deepbet found no brain voxel above probability {threshold:g}")
    mask = ndi.binary_fill_holes(largest_component(mask))
    if dilate:
        op = ndi.binary_dilation if dilate > 0 else ndi.binary_erosion
        mask = op(mask, structure=ndi.generate_binary_structure(3, 1), iterations=abs(dilate))
        if not mask.any():
            raise AlzmriError(f"deepbet's mask vanished after shrinking by {-dilate} voxels")
    return mask
