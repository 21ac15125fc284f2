"""Which files on disk make up one scan: a header and its detached data file(s).

Most scan formats are one file. Three keep the voxels apart from the header:

- Analyze 7.5 and NIfTI pairs: ``x.hdr`` + ``x.img`` (or ``x.hdr.gz`` + ``x.img.gz``), plus the
  SPM ``x.mat`` that overrides the Analyze orientation when present;
- MetaImage ``x.mhd`` whose ``ElementDataFile`` names a data file (often ``x.raw``);
- NRRD ``x.nhdr`` (or a ``.nrrd``) whose ``data file`` field names one.

Both halves matter to anything keyed on a scan's content (the preprocessing cache), so they are
listed together here. Nothing here reads voxels.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_PAIR = re.compile(r"^(?P<stem>.+)\.(?P<ext>hdr|img)(?P<gz>\.gz)?$", re.IGNORECASE)
_HEADER_BYTES = 1 << 20  # headers are text and short; never read a whole data file looking for one
_MAX_LISTED = 100_000  # a LIST or pattern naming more data files than this is not a scan


def analyze_pair(path: str | os.PathLike[str]) -> tuple[Path, Path] | None:
    """``(header, image)`` of an Analyze/NIfTI pair named by either half, else None.

    The other half has the same stem, compression suffix and letter case (``X.IMG`` → ``X.HDR``).
    The paths are returned whether or not they exist.
    """
    path = Path(path)
    match = _PAIR.match(path.name)
    if not match:
        return None
    ext, gz = match["ext"], match["gz"] or ""
    other = {"hdr": "img", "img": "hdr"}[ext.lower()]
    other = other.upper() if ext.isupper() else other
    partner = path.with_name(f"{match['stem']}.{other}{gz}")
    return (path, partner) if ext.lower() == "hdr" else (partner, path)


def scan_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files of the scan at ``path``, header first; a single-file scan is ``[path]``.

    An Analyze/NIfTI pair gives ``[header, image]`` (and the SPM ``.mat`` when it exists)
    whichever half ``path`` names; a MetaImage or NRRD header gives itself and the data files
    it names. Companions that do not exist are left out (reading the scan reports them); the
    named ``path`` is always listed.
    """
    path = Path(path)
    pair = analyze_pair(path)
    if pair is not None:
        header, image = pair
        match = _PAIR.match(header.name)
        assert match is not None
        mat = header.with_name(f"{match['stem']}.{'MAT' if match['ext'].isupper() else 'mat'}{match['gz'] or ''}")
        return [p for p in (header, image, mat) if p == path or p.is_file()]
    return [path, *[p for p in detached_data_files(path) if p.is_file() and p != path]]


def detached_data_files(path: str | os.PathLike[str]) -> list[Path]:
    """Data files named by a MetaImage (``.mhd``/``.mha``) or NRRD (``.nhdr``/``.nrrd``) header.

    Empty for data stored in the header file itself (``ElementDataFile = LOCAL``, an attached
    NRRD), for other formats and for a header that cannot be read. ``LIST`` and ``%d``-pattern
    forms are expanded; relative names are relative to the header's folder.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".mhd", ".mha", ".nhdr", ".nrrd") or not path.is_file():
        return []
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER_BYTES)
    except OSError:
        return []
    lines = head.decode("latin-1").splitlines()
    names = _metaimage_data(lines) if suffix in (".mhd", ".mha") else _nrrd_data(lines)
    return [p if p.is_absolute() else path.parent / p for p in map(Path, names)]


def _metaimage_data(lines: list[str]) -> list[str]:
    for i, line in enumerate(lines):
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "elementdatafile":
            return _expand(value.strip(), lines[i + 1 :], "local")
    return []


def _nrrd_data(lines: list[str]) -> list[str]:
    if not lines or not lines[0].startswith("NRRD"):
        return []
    for i, line in enumerate(lines[1:], start=1):
        if not line.strip():
            return []  # end of an attached header: the data follow in this file
        if line.startswith("#") or ":=" in line:
            continue
        field, sep, value = line.partition(":")
        if sep and field.strip().lower() in ("data file", "datafile"):
            return _expand(value.strip(), lines[i + 1 :], None)
    return []


def _expand(value: str, rest: list[str], local: str | None) -> list[str]:
    """The file names of an ``ElementDataFile``/``data file`` value (``rest``: the lines after it)."""
    if not value or (local and value.lower() == local):
        return []
    tokens = value.split()
    if tokens[0].upper() == "LIST":
        return [line.strip() for line in rest[:_MAX_LISTED] if line.strip()]
    if "%" in tokens[0] and len(tokens) >= 4:
        try:
            first, last, step = (int(t) for t in tokens[1:4])
            numbers = range(first, last + (1 if step > 0 else -1), step)
            if len(numbers) <= _MAX_LISTED:
                return [tokens[0] % n for n in numbers]
        except (ValueError, TypeError, OverflowError):
            pass
        return []
    return [value]
