"""Content hashes of input files and folders (cache keys that follow the data, not the path)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from alzmri.utils.scan_files import scan_files

_CHUNK = 1 << 20


def content_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex, 16 characters) of a file's bytes, or of every file under a folder.

    For a folder, files are visited in sorted relative-path order and each path is hashed with
    its bytes, so renaming or editing any file changes the digest. A scan stored as a header
    and a detached data file (``.hdr``/``.img`` pair, ``.mhd`` or ``.nhdr`` with its data file;
    see :func:`alzmri.utils.scan_files.scan_files`) hashes both, header first, whichever half
    is named, so editing either changes the digest. A single file hashes its bytes alone.
    """
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode() + b"\0")
            _update(digest, file)
        return digest.hexdigest()[:16]
    for i, file in enumerate(scan_files(path)):
        if i:  # a separator, so moving bytes from the header into the data file shows
            digest.update(f"\0{i}:{file.stat().st_size}\0".encode())
        _update(digest, file)
    return digest.hexdigest()[:16]


def text_digest(text: str) -> str:
    """SHA-256 (hex, 16 characters) of a string: cache keys of settings."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _update(digest: Any, file: Path) -> None:
    with open(file, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
