"""Atomic file writes: write to a temporary sibling, then rename over the target.

A process killed mid-write leaves at most a ``.tmp-*`` file behind, never a half-written
output, so re-running a command can trust any output file that exists. Temporary names carry
the writer's host and process id, so a run that cleans up after a killed one
(:func:`stale_temporaries`) never deletes the file another live process is writing into the
same folder (several shards of one job on a cluster, or two runs at once).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from alzmri.utils.errors import AlzmriError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it onto ``target``.

    The temporary name keeps the target's suffixes (e.g. ``.nii.gz``) so libraries that
    pick a format from the file name still work.

    Args:
        target: final path of the file.

    Raises:
        AlzmriError: the disk (or the user's quota) is full, whether while making the folder,
            the temporary file or writing it: naming ``target`` and the free space. The
            temporary file is removed and ``target`` is left as it was.
    """
    target = Path(target)
    with _disk_full_as_error(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(target.suffixes)
        fd, tmp_name = tempfile.mkstemp(prefix=f".tmp-{target.stem.split('.')[0]}~{_HOST}~{os.getpid()}~", suffix=suffix, dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            yield tmp
            if tmp.exists():  # mkstemp makes 0600 files; give outputs the usual umask-based mode
                os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()


_DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


@contextlib.contextmanager
def _disk_full_as_error(target: Path) -> Iterator[None]:
    """Turn an OSError for a full disk or quota (also one chained below another error) into AlzmriError."""
    try:
        yield
    except Exception as exc:
        full = _disk_full_errno(exc)
        if full is None:
            raise
        raise AlzmriError(f"{_DISK_FULL[full]} writing {target} ({free_space(target.parent)})") from None


def _disk_full_errno(exc: BaseException) -> int | None:
    """The ENOSPC/EDQUOT errno of ``exc`` or of an exception it was raised from, else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_FULL:
            return current.errno
        current = current.__cause__ or current.__context__
    return None


def free_space(folder: str | os.PathLike[str]) -> str:
    """``"<free> free on <mount point>"`` for the file system holding ``folder`` (or its nearest existing parent)."""
    path = Path(os.path.abspath(folder))
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        free = _size(shutil.disk_usage(path).free)
    except OSError:
        free = "unknown space"
    return f"{free} free on {_mount_point(path)}"


def _mount_point(path: Path) -> Path:
    """The mount point of the file system holding the existing ``path``."""
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _size(n_bytes: int) -> str:
    """A byte count for people: ``0 B``, ``512 B``, ``1.5 kB``, ``3.2 GB`` (powers of 1000)."""
    units = ("B", "kB", "MB", "GB", "TB")
    value, power = float(n_bytes), 0
    while value >= 1000 and power < len(units) - 1:
        value, power = value / 1000, power + 1
    return f"{n_bytes} B" if power == 0 else f"{value:.1f} {units[power]}"


_HOST = (re.sub(r"[^A-Za-z0-9.-]", "", socket.gethostname())[:24] or "host") + "-" + hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_OWNER = re.compile(r"~(?P<host>[A-Za-z0-9.-]+)~(?P<pid>\d+)~")
_MAX_AGE_S = 24 * 3600  # no write takes a day: older temporaries are stale whoever wrote them


def stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """``.tmp-*`` files in ``folder`` whose writer has gone: left by a killed process.

    A file is stale when its name names no owner (older alzmri versions), when it was written on
    this host by a process that no longer runs, or when it is a day old (a writer on another host
    of a shared cluster file system cannot be asked; in containers a new process may reuse a dead
    one's host name and pid).
    """
    stale = []
    for path in Path(folder).glob(".tmp-*"):
        owner = _OWNER.search(path.name)
        try:
            old = time.time() - path.stat().st_mtime > _MAX_AGE_S
        except OSError:  # renamed into place or removed meanwhile
            continue
        if owner is None or old or (owner["host"] == _HOST and not _alive(int(owner["pid"]))):
            stale.append(path)
    return stale


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def atomic_write_text(target: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``target`` atomically and return the path."""
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
