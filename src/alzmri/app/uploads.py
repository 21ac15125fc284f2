"""What an upload is, from its bytes (never its name): a NIfTI (plain or gzipped), a zip (one DICOM series) or a 2D image."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from alzmri.utils.errors import AlzmriError

_IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "png", b"\xff\xd8\xff": "jpeg", b"II*\x00": "tiff", b"MM\x00*": "tiff", b"BM": "bmp"}
SUFFIX = {"nifti": ".nii", "nifti-gz": ".nii.gz", "dicom-zip": ".zip", "png": ".png", "jpeg": ".jpg", "tiff": ".tif", "bmp": ".bmp"}
VOLUME_KINDS = ("nifti", "nifti-gz", "dicom-zip")


def _nifti_header(head: bytes) -> bool:
    """NIfTI-1 (magic ``n+1`` / ``ni1`` at byte 344) or NIfTI-2 (``n+2`` at byte 4)."""
    return head[344:347] in (b"n+1", b"ni1") or head[4:7] in (b"n+2", b"ni2")


def sniff(path: Path) -> str:
    """The upload's kind: ``nifti``, ``nifti-gz``, ``dicom-zip``, ``png``, ``jpeg``, ``tiff`` or ``bmp``.

    Raises:
        AlzmriError: empty, or none of these (a gzip whose content is not a NIfTI header, too).
    """
    with path.open("rb") as handle:
        head = handle.read(600)
    if not head:
        raise AlzmriError("the upload is empty")
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as inner:
                header = inner.read(600)
        except (OSError, EOFError, zlib.error) as exc:
            raise AlzmriError(f"the upload is a corrupt gzip file ({exc})") from None
        if _nifti_header(header):
            return "nifti-gz"
        raise AlzmriError("the upload is gzipped but holds no NIfTI image (expected a .nii.gz)")
    if _nifti_header(head):
        return "nifti"
    if head[:4] == b"PK\x03\x04":
        return "dicom-zip"
    if head[128:132] == b"DICM":
        raise AlzmriError("the upload is a single DICOM file: upload a zip of the whole series (one folder), or convert it with 'alzmri convert'")
    for magic, kind in _IMAGE_MAGIC.items():
        if head.startswith(magic):
            return kind
    raise AlzmriError("the upload is not a NIfTI (.nii, .nii.gz), a zip of one DICOM series or an image (PNG, JPEG, TIFF, BMP)")
