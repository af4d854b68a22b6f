"""core/inode.py: the GIL-keeping inode check the host limiter makes per admission."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from django_streamer.core import inode


@pytest.fixture(params=["statx", "lstat"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "statx":
        assert inode._STATX is not None, "statx(2) is missing from this libc"
    else:  # the fallback for a libc without statx
        monkeypatch.setattr(inode, "_STATX", None)
    return str(request.param)


def test_a_path_names_its_own_inode_and_no_other(tmp_path: Path, way: str) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"")
    ino = os.lstat(path).st_ino
    assert inode.names_inode(str(path), ino)
    assert not inode.names_inode(str(path), ino + 1)


def test_a_removed_or_replaced_file_is_not_named(tmp_path: Path, way: str) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"")
    ino = os.lstat(path).st_ino
    keep = tmp_path / "keep"
    os.link(path, keep)  # the old inode lives on, so the new one cannot reuse its number
    path.unlink()
    assert not inode.names_inode(str(path), ino)
    path.write_bytes(b"")
    assert not inode.names_inode(str(path), ino)


def test_a_symlink_is_not_followed(tmp_path: Path, way: str) -> None:
    target = tmp_path / "target"
    target.write_bytes(b"")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert not inode.names_inode(str(link), os.lstat(target).st_ino)
    assert inode.names_inode(str(link), os.lstat(link).st_ino)


def test_other_errors_are_raised(tmp_path: Path) -> None:
    with pytest.raises(NotADirectoryError):
        (tmp_path / "file").write_bytes(b"")
        inode.names_inode(str(tmp_path / "file" / "below"), 1)
