"""Atomic writes: all or nothing, usual permissions."""

import os

import pytest

from alzmri.utils.atomic import atomic_path, atomic_write_text


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
