"""Whether a path still names a given inode, asked without giving up the GIL.

``os.lstat()`` releases the GIL around the syscall. The host limiter asks this
for each key file it opens or removes (and once a second of each it keeps),
and in a gthread worker with its four threads busy getting
the GIL back costs more than the ~1 us syscall (``bench/gil.py`` measures the
same effect for ``fcntl``). ``statx(2)`` through a ``ctypes.PyDLL`` call keeps
the GIL; its buffer layout is the same on every Linux architecture, unlike
``struct stat``. Plain Python, no Django.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Callable
from typing import cast

__all__ = ["names_inode"]

_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_STATX_INO = 0x100
_INO_AT = 32  # offsetof(struct statx, stx_ino), a __u64


_Buffer = ctypes.c_char * 256  # sizeof(struct statx)


def _libc_statx() -> Callable[[int, bytes, int, int, ctypes.Array[ctypes.c_char]], int] | None:
    try:
        function = ctypes.PyDLL(None, use_errno=True).statx  # glibc 2.28+
    except (OSError, AttributeError):
        return None
    # No argtypes: every argument is a C int or a pointer already, and the
    # conversion would cost a third of the call.
    function.restype = ctypes.c_int
    return cast(Callable[[int, bytes, int, int, ctypes.Array[ctypes.c_char]], int], function)


_STATX = _libc_statx()
_INO = struct.Struct("=Q")


def _lstat_ino(path: str) -> int | None:
    try:
        return os.lstat(path).st_ino
    except FileNotFoundError:
        return None


def _statx_ino(path: str) -> int | None:
    assert _STATX is not None
    buffer = _Buffer()
    if _STATX(_AT_FDCWD, os.fsencode(path), _AT_SYMLINK_NOFOLLOW, _STATX_INO, buffer) == 0:
        return int(_INO.unpack_from(buffer, _INO_AT)[0])
    code = ctypes.get_errno()
    if code == errno.ENOENT:
        return None
    if code == errno.ENOSYS:  # a kernel older than 4.11, or a seccomp filter
        return _lstat_ino(path)
    raise OSError(code, os.strerror(code), path)


def names_inode(path: str, ino: int) -> bool:
    """True while ``path`` (not followed if a symlink) names the file with inode ``ino``."""
    found = _statx_ino(path) if _STATX is not None else _lstat_ino(path)
    return found == ino
