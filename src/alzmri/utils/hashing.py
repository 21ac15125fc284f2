"""Content hashes of input files and folders (cache keys that follow the data, not the path)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


def content_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex, 16 characters) of a file's bytes, or of every file under a folder.

    For a folder, files are visited in sorted relative-path order and each path is hashed with
    its bytes, so renaming or editing any file changes the digest.
    """
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()[:16]
