"""2D slice images (PNG, JPEG, TIFF, BMP; 8 or 16 bit; gray, gray+alpha or RGB) read as gray float arrays.

Slices exported from MRI are gray even when stored as RGB (the three channels are equal); a
true-colour image (channels differ by more than a few grey levels, e.g. an overlay burnt into
the picture) is still converted, to ITU-R 601 luma, and :func:`read_image` says so, so that a
folder of screenshots does not pass silently as scans. Values are scaled by the bit depth to
[0, 1] (8 bit / 255, 16 bit / 65535), so 8- and 16-bit exports of one slice give the same array.
Pillow does the decoding; a file it cannot decode is refused with a one-line error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alzmri.utils.errors import AlzmriError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
# Channels of an "RGB" slice may differ by JPEG noise; more than this (on 0..255) is colour.
_COLOUR_TOLERANCE = 8 / 255
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def is_image_file(path: str | Path) -> bool:
    """Whether the file name has one of :data:`IMAGE_SUFFIXES` (any case)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def read_image(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """One slice as a ``(H, W)`` float32 array in [0, 1], and notes about it.

    Notes (plain sentences, empty for an ordinary gray slice): ``"colour image converted to gray"``,
    ``"transparent pixels composited over black"`` (an alpha channel: transparent means background).

    Raises:
        AlzmriError: the file is missing, not an image Pillow can decode (also a truncated or
            corrupt one), has no pixels, or a pixel mode with no gray meaning (e.g. CMYK).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise AlzmriError(f"image {path} does not exist" if not path.exists() else f"image {path} is not a file")
    try:
        with Image.open(path) as image:
            # Pillow's own check only warns below twice MAX_IMAGE_PIXELS; refused here instead, without
            # touching the process-wide warning filters (the server reads images from several threads)
            if Image.MAX_IMAGE_PIXELS and image.width * image.height > Image.MAX_IMAGE_PIXELS:
                raise Image.DecompressionBombError(f"{image.width}x{image.height} pixels is more than the {Image.MAX_IMAGE_PIXELS} an image may have (a decompression bomb?)")
            image.load()  # decode now: a truncated file fails here, not later
            mode = image.mode
            if mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
                mode = image.mode
            pixels = np.asarray(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise AlzmriError(f"cannot read image {path}: {' '.join(str(exc).split()) or type(exc).__name__}") from None
    if pixels.size == 0:
        raise AlzmriError(f"image {path} has no pixels")
    return _to_gray(pixels, mode, path)


def _to_gray(pixels: np.ndarray, mode: str, path: Path) -> tuple[np.ndarray, list[str]]:
    if mode in ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I", "F", "RGB", "RGBA"):
        scale = _scale(pixels, mode)
    else:
        raise AlzmriError(f"image {path} has pixel mode {mode}, which has no gray meaning; save it as gray or RGB")
    values = pixels.astype(np.float32) / scale
    notes: list[str] = []
    if values.ndim == 3 and mode in ("LA", "RGBA"):  # composite over black: transparent pixels are background
        alpha = values[..., -1:]
        values = values[..., :-1] * alpha
        if float(alpha.min()) < 1.0:
            notes.append("transparent pixels composited over black")
        values = values[..., 0] if mode == "LA" else values
    if values.ndim == 3:
        spread = float((values.max(axis=-1) - values.min(axis=-1)).max())
        if spread > _COLOUR_TOLERANCE:
            notes.append("colour image converted to gray")
        values = values @ _LUMA
    if mode == "F":  # float TIFF: already intensities; rescale its range to [0, 1]
        low, high = float(np.nanmin(values)), float(np.nanmax(values))
        values = (values - low) / (high - low) if high > low else np.zeros_like(values)
    if not np.isfinite(values).all():
        raise AlzmriError(f"image {path} holds NaN or infinite pixels")
    return np.ascontiguousarray(values, dtype=np.float32), notes


def _scale(pixels: np.ndarray, mode: str) -> float:
    if mode == "1":
        return 1.0
    if mode == "F":
        return 1.0
    if pixels.dtype == np.uint8:
        return 255.0
    if mode.startswith("I"):  # 16-bit gray (mode I holds 16-bit TIFFs widened to int32)
        return 65535.0 if int(pixels.max(initial=0)) <= 65535 else float(pixels.max())
    return float(np.iinfo(pixels.dtype).max) if np.issubdtype(pixels.dtype, np.integer) else 1.0
