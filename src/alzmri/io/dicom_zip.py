"""A ``.zip`` holding one DICOM series, read as :func:`alzmri.io.dicom.read_dicom_series` reads a folder.

The zip is unpacked into a fresh temporary folder (never next to the input), which is removed
afterwards whatever happens. Before anything is written, every member name is checked (no
absolute paths, no ``..``) and the unpacked size is capped, so a hostile or broken zip cannot
write outside the folder or fill the disk. A zip holding several convertible series is refused
rather than silently reduced to one: which series is the T1w is the user's choice.
"""

from __future__ import annotations

import lzma
import os
import re
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import nibabel as nib

from alzmri.io.dicom import read_dicom_series
from alzmri.io.dicom_series import _check_all, _list_files, _quiet_dicom, _read_headers
from alzmri.utils.errors import AlzmriError, first_line

MAX_UNPACKED_BYTES = 4 << 30  # a DICOM T1w is well under 1 GB; more than this is a zip bomb or not one scan
MAX_MEMBERS = 50_000
_DRIVE = re.compile(r"^[A-Za-z]:")


def read_dicom_zip(path: str | os.PathLike[str], min_slices: int = 10, max_unpacked_bytes: int | None = None) -> tuple[nib.Nifti1Image, dict[str, Any]]:
    """Read the one convertible DICOM series of a zip into memory.

    Args:
        path: the ``.zip`` file; the series may lie in any sub-folder, with non-DICOM files.
        min_slices: series with fewer slices are skipped (as by ``read_dicom_series``).
        max_unpacked_bytes: refuse a zip that unpacks to more (declared or actual); default :data:`MAX_UNPACKED_BYTES`.

    Returns:
        ``(image, meta)`` as :func:`alzmri.io.dicom.read_dicom_series`.

    Raises:
        AlzmriError: one line naming the zip: missing or corrupt zip, a member with an unsafe
            path, too large unpacked, two or more convertible series, or none.
    """
    path = Path(path)
    if not path.is_file():
        raise AlzmriError(f"DICOM zip {'not found' if not path.exists() else 'is not a file'}: {path}")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise AlzmriError(f"cannot read DICOM zip {path}: {first_line(exc)}") from None
    with archive, tempfile.TemporaryDirectory(prefix="alzmri-zip-") as tmp:
        folder = Path(tmp)
        _unpack(archive, path, folder, MAX_UNPACKED_BYTES if max_unpacked_bytes is None else max_unpacked_bytes)
        with _quiet_dicom():
            series, _ = _read_headers(_list_files(folder)[1])
            _check_all(series, min_slices)
        convertible = sum(s.status == "" for s in series)
        if convertible > 1:
            raise AlzmriError(
                f"zip {path} holds {convertible} convertible DICOM series; expected one "
                "(zip each series on its own, or unpack it and run alzmri convert)"
            )
        try:
            return read_dicom_series(folder, min_slices=min_slices)
        except AlzmriError as exc:  # it names the temporary folder; the user knows the zip
            raise AlzmriError(str(exc).replace(str(folder), f"zip {path}")) from None


def _unpack(archive: zipfile.ZipFile, path: Path, folder: Path, limit: int) -> None:
    """Check every member, then write the files under ``folder`` (a symbolic link member is refused, never followed)."""
    members = []
    for info in archive.infolist():
        parts = _safe_parts(info.filename)
        if parts is None:
            raise AlzmriError(f"zip {path} has unsafe path {info.filename!r} (absolute or with '..'); refusing to unpack it")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise AlzmriError(f"zip {path} holds a symbolic link {info.filename!r}; refusing to unpack it")
        if not info.is_dir() and parts:
            members.append((info, parts))
    if len(members) > MAX_MEMBERS:
        raise AlzmriError(f"zip {path} holds {len(members)} files, more than the {MAX_MEMBERS} of one DICOM series")
    declared = sum(info.file_size for info, _ in members)
    if declared > limit:
        raise AlzmriError(f"zip {path} unpacks to {declared / 1e9:.2f} GB, more than the {limit / 1e9:.2f} GB limit")
    written = 0
    try:
        for info, parts in members:
            target = folder.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as dst:
                while chunk := src.read(1 << 20):
                    written += len(chunk)
                    if written > limit:  # sizes in the zip's directory can lie
                        raise AlzmriError(f"zip {path} unpacks to more than the {limit / 1e9:.2f} GB limit")
                    dst.write(chunk)
    except AlzmriError:
        raise
    except (zipfile.BadZipFile, OSError, RuntimeError, ValueError, EOFError, zlib.error, lzma.LZMAError) as exc:  # CRC errors, encryption, disk full, corrupt streams
        raise AlzmriError(f"cannot unpack DICOM zip {path}: {first_line(exc)}") from None


def _safe_parts(name: str) -> list[str] | None:
    """The path components of a member name, or None when it is absolute or climbs with ``..``."""
    name = name.replace("\\", "/")
    if name.startswith("/") or _DRIVE.match(name):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return None if ".." in parts else parts
