"""Linux open-file-description byte locks. Plain Python, no Django.

An OFD lock (``F_OFD_SETLK``) belongs to one ``open()``, not to a process: two
descriptors of one process conflict, and the kernel drops the lock the moment
the last descriptor of that open file is closed, including when its process is
killed. The host-scope limiter holds one byte per slot this way; the metrics
store holds byte 0 of each process file for the life of its process.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import struct
from collections.abc import Callable
from typing import cast

__all__ = [
    "AVAILABLE",
    "is_locked",
    "lock_byte",
    "lock_from",
    "share_byte",
    "unlock_byte",
]

# struct flock on LP64 Linux: short l_type, short l_whence, (pad), off_t l_start,
# off_t l_len, pid_t l_pid, (pad). F_OFD_* needs l_pid == 0.
_FLOCK = struct.Struct("hhxxxxqqixxxx")
_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)
_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", None)

#: True where the kernel offers OFD locks (Linux 3.15+).
AVAILABLE = _OFD_SETLK is not None and _OFD_GETLK is not None


_SEEK_SET = os.SEEK_SET


def _flock(kind: int, start: int, length: int) -> bytes:
    return _FLOCK.pack(kind, _SEEK_SET, start, length, 0)


def _libc_fcntl() -> Callable[[int, int, bytes], int] | None:
    try:
        libc = ctypes.PyDLL(None, use_errno=True)
        function = libc.fcntl
    except (OSError, AttributeError):
        return None
    # No argtypes: the arguments are C ints and a bytes buffer (a char *)
    # already, and the conversion cost ~0.4 us of a ~1 us call (as in inode.py).
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, bytes], int], function)


# fcntl.fcntl() releases the GIL around the call. F_OFD_SETLK never blocks, and
# with four threads busy (a gthread worker) getting the GIL back costs more than
# the syscall; a PyDLL call keeps the GIL for the ~1 us syscall. bench/gil.py
# measures the two.
_FCNTL_KEEPING_GIL = _libc_fcntl()


def _setlk(fd: int, kind: int, slot: int, length: int = 1) -> bool:
    request = _FLOCK.pack(kind, _SEEK_SET, slot, length, 0)  # not _flock(): a call less
    if _FCNTL_KEEPING_GIL is not None:
        if _FCNTL_KEEPING_GIL(fd, _OFD_SETLK, request) == 0:  # type: ignore[arg-type]
            return True
        return _refused()
    try:
        fcntl.fcntl(fd, _OFD_SETLK, request)  # type: ignore[arg-type]
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _refused() -> bool:
    """After a failed libc fcntl(): False if another holder refused, else raise."""
    code = ctypes.get_errno()
    if code in (errno.EAGAIN, errno.EACCES):
        return False
    raise OSError(code, os.strerror(code))


_WRLCK, _UNLCK = fcntl.F_WRLCK, fcntl.F_UNLCK


def lock_byte(fd: int, offset: int) -> bool:
    """Take an exclusive lock on byte ``offset`` of ``fd`` without blocking.

    False when another open file description holds it.
    """
    # ``_setlk`` written out: a slot's lock and unlock are every host-scope
    # admission's path, and a Python call is a tenth of the syscall.
    if _FCNTL_KEEPING_GIL is None:
        return _setlk(fd, _WRLCK, offset)
    request = _FLOCK.pack(_WRLCK, _SEEK_SET, offset, 1, 0)
    if _FCNTL_KEEPING_GIL(fd, _OFD_SETLK, request) == 0:  # type: ignore[arg-type]
        return True
    return _refused()


def share_byte(fd: int, offset: int) -> bool:
    """Take a shared (read) lock on byte ``offset`` of ``fd`` without blocking.

    Shared locks of any number of open file descriptions coexist; an exclusive
    lock elsewhere on the byte (or on a range over it) makes this False. ``fd``
    must be open for reading.
    """
    return _setlk(fd, fcntl.F_RDLCK, offset)


def unlock_byte(fd: int, offset: int) -> None:
    """Give back the lock on byte ``offset`` of ``fd`` (a no-op if not held)."""
    if _FCNTL_KEEPING_GIL is None:
        _setlk(fd, _UNLCK, offset)
    elif _FCNTL_KEEPING_GIL(fd, _OFD_SETLK, _FLOCK.pack(_UNLCK, _SEEK_SET, offset, 1, 0)) != 0:  # type: ignore[arg-type]
        _refused()  # raises on an error (an unlock is never refused)


def is_locked(fd: int, offset: int) -> bool:
    """True when an open file description other than ``fd``'s holds byte ``offset``."""
    probe = _flock(fcntl.F_WRLCK, offset, 1)
    answer = fcntl.fcntl(fd, _OFD_GETLK, probe)  # type: ignore[arg-type]
    return bool(_FLOCK.unpack(answer)[0] != fcntl.F_UNLCK)


def lock_from(fd: int, offset: int) -> bool:
    """Lock every byte from ``offset`` on (to the end and past it) without blocking.

    False when another open file description holds any of them.
    """
    return _setlk(fd, fcntl.F_WRLCK, offset, 0)
