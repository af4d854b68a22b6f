"""State directories and files on a shared host, made and opened safely.

Plain Python, no Django. The limiter's lock files and the metrics files live in
directories such as ``/dev/shm/django-streamer-<uid>/...``, whose names anyone
on the host can predict. A directory someone else made first, or one that
others can write to, would let them hold our slots or point our files at theirs
with a symlink. So every directory we use is checked with ``lstat`` to be a
real directory, owned by us, with no group or other access; those we make are
made with mode 0700. Files are opened with ``O_NOFOLLOW`` and checked the same
way, created with mode 0600, and space for a mapped file is reserved up front
so that a full filesystem is an ``OSError`` at creation, never a ``SIGBUS``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

__all__ = [
    "UnsafeStateError",
    "check_private_dir",
    "check_usable_dir",
    "ensure_private_dir",
    "open_private_file",
    "reserve",
]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class UnsafeStateError(PermissionError):
    """A state directory or file is not private to this user; it is not used."""


def _problem(path: str, st: os.stat_result, *, kind: str) -> str | None:
    is_kind = stat.S_ISDIR(st.st_mode) if kind == "directory" else stat.S_ISREG(st.st_mode)
    if not is_kind:
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a real " + kind
        return f"{path} is {what}"
    if st.st_uid != os.getuid():
        return f"{path} is owned by uid {st.st_uid}, not by this process's uid {os.getuid()}"
    if st.st_mode & 0o077:
        return (
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; "
            "group and other users must have no access (0700 for a directory, 0600 for a file)"
        )
    return None


def check_private_dir(path: str) -> str | None:
    """What is wrong with ``path`` as a private state directory, or None.

    No side effects: a missing directory is not a problem (it will be made).
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path} cannot be examined: {exc.strerror}"
    return _problem(path, st, kind="directory")


def _chain(path: str, owned_from: str | None) -> list[str]:
    """``owned_from`` (if given) and each directory below it down to ``path``."""
    chain = [path]
    if owned_from is not None:
        top = os.path.abspath(owned_from)
        walk = path
        while walk != top and (walk + os.sep).startswith(top + os.sep):
            walk = os.path.dirname(walk)
            chain.append(walk)
    return chain[::-1]


def check_usable_dir(path: str, *, owned_from: str | None = None) -> str | None:
    """What would stop ``ensure_private_dir(path, owned_from=...)`` from working, or None.

    No side effects (for system checks): an existing directory must be private
    and writable; a missing one needs its nearest existing ancestor to be a
    directory this user may create entries in.
    """
    path = os.path.abspath(path)
    for directory in _chain(path, owned_from):
        problem = check_private_dir(directory)
        if problem is not None:
            return problem
    if os.path.lexists(path):
        return None if os.access(path, os.W_OK | os.X_OK) else f"{path} is not writable"
    ancestor = os.path.dirname(path)
    while not os.path.lexists(ancestor) and ancestor != os.path.dirname(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor) or not os.access(ancestor, os.W_OK | os.X_OK):
        return f"{path} cannot be created: {ancestor} is not a directory this user can write"
    # access() says yes to root everywhere; the filesystem itself may still refuse:
    # read-only, full, or a pseudo filesystem such as /proc (no blocks, no inodes).
    fs = os.statvfs(ancestor)
    if fs.f_flag & os.ST_RDONLY or fs.f_favail == 0 or fs.f_bavail == 0:
        return f"{path} cannot be created: the filesystem of {ancestor} is read-only or full"
    return None


def ensure_private_dir(path: str, *, owned_from: str | None = None) -> str:
    """Make ``path`` (mode 0700, parents too) if missing, and check it is private.

    Every directory from ``owned_from`` (an ancestor of ``path``, e.g. the
    per-user ``/dev/shm/django-streamer-<uid>``) down to ``path`` must be ours
    and private; above it only what we create ourselves is made 0700. Raises
    :class:`UnsafeStateError` naming the path and the fix.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if parent != path and not os.path.isdir(parent):
        ensure_private_dir(parent, owned_from=owned_from)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    checked = [path]
    if owned_from is not None:
        top = os.path.abspath(owned_from)
        walk = parent
        while (walk + os.sep).startswith(top + os.sep) and walk != os.path.dirname(walk):
            checked.append(walk)
            if walk == top:
                break
            walk = os.path.dirname(walk)
    for directory in checked:
        problem = check_private_dir(directory)
        if problem is not None:
            raise UnsafeStateError(
                f"unsafe state directory: {problem}. Remove it (or fix its owner and mode "
                "with chown and chmod 700), or point the setting at a directory only this "
                "user can reach"
            )
    return path


def open_private_file(path: str, *, create: bool = True, exclusive: bool = False) -> int:
    """Open ``path`` read-write, never through a symlink, and check it is ours.

    ``create`` makes it (mode 0600) if missing; ``exclusive`` insists that this
    call creates it (``O_EXCL``). The descriptor is close-on-exec. Raises
    :class:`UnsafeStateError` for a file that is not a private regular file.
    """
    flags = os.O_RDWR | os.O_CLOEXEC | _NOFOLLOW
    if create:
        flags |= os.O_CREAT
    if exclusive:
        flags |= os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        if _NOFOLLOW and exc.errno == errno.ELOOP:  # the last component is a symlink
            raise UnsafeStateError(f"unsafe state file: {path} is a symlink") from exc
        raise
    try:
        problem = _problem(path, os.fstat(fd), kind="file")
    except BaseException:
        os.close(fd)
        raise
    if problem is not None:
        os.close(fd)
        raise UnsafeStateError(f"unsafe state file: {problem}")
    return fd


def reserve(fd: int, size: int) -> None:
    """Allocate ``size`` bytes of ``fd`` now, so mapped writes can never fault.

    A sparse file on a full tmpfs raises ``SIGBUS`` at the first write through
    a mapping; reserving turns that into ``OSError(ENOSPC)`` here.
    """
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, size)
    else:  # pragma: no cover - macOS: no fallocate; write the bytes instead
        os.ftruncate(fd, size)
        os.pwrite(fd, b"\0" * size, 0)
