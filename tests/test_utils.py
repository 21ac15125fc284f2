"""Atomic writes: all or nothing, usual permissions, a full disk named in one line."""

import errno
import os
import shutil
from collections import namedtuple
from pathlib import Path

import pandas as pd
import pytest

from alzmri.utils import atomic
from alzmri.utils.atomic import atomic_path, atomic_write_text
from alzmri.utils.errors import AlzmriError


def test_atomic_write_replaces_only_on_success(tmp_path) -> None:
    target = tmp_path / "out.nii.gz"
    atomic_write_text(target, "v1")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "v1"
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]  # no temp file left


def test_atomic_files_get_umask_permissions(tmp_path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert (path.stat().st_mode & 0o777) == 0o644


# --- a full disk -------------------------------------------------------------------------------

_Usage = namedtuple("_Usage", "total used free")


@pytest.fixture
def full_disk(tmp_path, monkeypatch) -> Path:
    """``tmp_path`` as a mount point with 1.5 MB free."""
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: _Usage(10**9, 10**9 - 1_500_000, 1_500_000))
    real_ismount = os.path.ismount
    monkeypatch.setattr(atomic.os.path, "ismount", lambda path: Path(path) == tmp_path or real_ismount(path))
    return tmp_path


def test_disk_full_names_file_and_free_space_and_leaves_no_temporary(full_disk) -> None:
    target = full_disk / "sub" / "out.nii.gz"
    atomic_write_text(target, "v1")
    with pytest.raises(AlzmriError) as info:
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert str(info.value) == f"no space left on device writing {target} (1.5 MB free on {full_disk})"
    assert target.read_text() == "v1" and [p.name for p in target.parent.iterdir()] == ["out.nii.gz"]


def test_disk_full_below_another_error_and_quota(full_disk) -> None:
    target = full_disk / "model.ckpt"
    with pytest.raises(AlzmriError, match=rf"^no space left on device writing {target} \(1.5 MB free"):
        with atomic_path(target):
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as exc:
                raise RuntimeError("file write failed") from exc
    with pytest.raises(AlzmriError, match=rf"^disk quota exceeded writing {target} \("):
        with atomic_path(target):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
    assert list(full_disk.iterdir()) == []


def test_disk_full_while_making_the_temporary_file(full_disk, monkeypatch) -> None:
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", no_space)
    with pytest.raises(AlzmriError, match="^no space left on device writing .*a.txt"):
        atomic_write_text(full_disk / "a.txt", "x")


def test_other_write_errors_pass_through_unchanged(tmp_path) -> None:
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "a.txt"):
            raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(ValueError, match="not a disk problem"):
        with atomic_path(tmp_path / "a.txt"):
            raise ValueError("not a disk problem")
    assert list(tmp_path.iterdir()) == []


def test_a_writer_on_a_full_disk_gives_the_error(full_disk, monkeypatch) -> None:
    from alzmri.io.manifest import write_manifest

    def no_space(self, path, *args, **kwargs):
        Path(path).write_text("participant_id\n")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", no_space)
    with pytest.raises(AlzmriError) as info:
        write_manifest(pd.DataFrame({"participant_id": ["sub-1"]}), full_disk / "split" / "train.tsv")
    assert str(info.value) == f"no space left on device writing {full_disk / 'split' / 'train.tsv'} (1.5 MB free on {full_disk})"
    assert list((full_disk / "split").iterdir()) == []


def test_free_space_on_a_real_folder_and_sizes(tmp_path) -> None:
    text = atomic.free_space(tmp_path / "not" / "made")
    free = shutil.disk_usage(tmp_path).free
    assert text.endswith(" free on " + str(atomic._mount_point(tmp_path))) and text.split(" free on ")[0] == atomic._size(free)
    assert [atomic._size(n) for n in (0, 999, 1000, 1_500_000, 3_210_000_000, 5 * 10**15)] == [
        "0 B", "999 B", "1.0 kB", "1.5 MB", "3.2 GB", "5000.0 TB"]


def test_a_checkpoint_write_on_a_full_disk_names_the_file(tmp_path, monkeypatch) -> None:
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    from alzmri.training.checkpoint_io import AtomicCheckpointIO

    def full(self, checkpoint, path, storage_options=None):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 123 vs 456: file write failed")

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 30, (10 << 30) - 1000, 1000))
    with pytest.raises(AlzmriError, match=r"no space left on device writing .*last\.ckpt"):
        AtomicCheckpointIO().save_checkpoint({}, tmp_path / "last.ckpt")
    assert not list(tmp_path.iterdir())  # no temporary left


def test_strict_json_writes_null_for_nan_and_plain_numbers_for_numpy() -> None:
    import json

    import numpy as np

    from alzmri.utils.jsonable import strict_json

    value = {"a": float("nan"), "b": [np.float32(0.5), np.int64(3), (np.inf, "x")], 1: {"c": np.array([1.0, np.nan])}, "d": np.bool_(True)}
    text = json.dumps(strict_json(value), allow_nan=False)
    assert json.loads(text) == {"a": None, "b": [0.5, 3, [None, "x"]], "1": {"c": [1.0, None]}, "d": True}
