"""Ids (participant, session, run names) as file names that stay inside their folder.

Ids come from users' manifests and BIDS folders; several commands turn them into file and
folder names. :func:`safe_name` keeps ASCII letters, digits and ``-`` as they are (so BIDS ids
such as ``sub-001`` and ``ses-M12`` name their files as before) and percent-encodes every other
character as its UTF-8 bytes (``/`` → ``%2F``, ``.`` → ``%2E``, ``_`` → ``%5F``, ``%`` → ``%25``).
So a name can never hold a path separator, be ``.`` or ``..``, start with a dot, hold a control
character or a glob pattern, and distinct ids give distinct names (the encoding is reversible;
``_`` is encoded so ``a_b`` + ``c`` and ``a`` + ``b_c`` stay apart when ids are joined with ``_``).
Very long encodings are shortened with a hash so the name fits a file system's 255 bytes.
"""

from __future__ import annotations

import hashlib
import re

from alzmri.utils.errors import AlzmriError

_KEEP = re.compile(r"[A-Za-z0-9_-]")
_MAX = 120  # characters of one encoded id; several are joined into one file name


def safe_name(text: str) -> str:
    """``text`` as one safe file-name component (see the module docstring); "" stays ""."""
    encoded = "".join(c if _KEEP.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in str(text))
    if len(encoded) > _MAX:
        encoded = f"{encoded[:_MAX - 17]}~{hashlib.sha256(str(text).encode()).hexdigest()[:16]}"
    return encoded


def folder_name(text: str, what: str) -> str:
    """A user-chosen folder name (e.g. ``--run-name``) checked to be one plain path component.

    Raises:
        AlzmriError: it is empty, ``.``/``..``, hidden, or holds a path separator or a control character.
    """
    text = str(text)
    if not text or text in (".", "..") or text.startswith(".") or re.search(r"[/\\\x00-\x1f\x7f]", text):
        raise AlzmriError(f"{what} {text!r} must be a plain folder name (no '/', '\\', leading '.', or control characters)")
    return text


def join_ids(*ids: str, keep_empty: bool = False) -> str:
    """Safe names of ``ids`` joined with ``_`` (empty ids left out unless ``keep_empty``)."""
    return "_".join(safe_name(i) for i in ids if keep_empty or i)


def check_distinct(keys: list[tuple[str, ...]], names: list[str], what: str) -> None:
    """Refuse two different id tuples that were given one file name (their files would overwrite each other).

    Raises:
        AlzmriError: naming both.
    """
    seen: dict[str, tuple[str, ...]] = {}
    for key, name in zip(keys, names, strict=True):
        if name in seen and seen[name] != tuple(key):
            raise AlzmriError(f"{what}: {seen[name]} and {tuple(key)} would share the file name {name!r}; rename one")
        seen[name] = tuple(key)
