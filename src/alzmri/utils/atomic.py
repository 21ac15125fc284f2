"""Atomic file writes: write to a temporary sibling, then rename over the target.

A process killed mid-write leaves at most a ``.tmp-*`` file behind, never a half-written
output, so re-running a command can trust any output file that exists. Temporary names carry
the writer's host and process id, so a run that cleans up after a killed one
(:func:`stale_temporaries`) never deletes the file another live process is writing into the
same folder (several shards of one job on a cluster, or two runs at once).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it onto ``target``.

    The temporary name keeps the target's suffixes (e.g. ``.nii.gz``) so libraries that
    pick a format from the file name still work.

    Args:
        target: final path of the file.
    """
    target = Path(target)
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
