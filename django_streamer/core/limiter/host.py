"""The host backend: slots shared by every process that uses one directory.

Slot ``i`` of a pool key is byte ``i`` of the key's file, taken with an
open-file-description lock (see :mod:`..ofdlock`): exclusive between any two
``open()``s, threads of one process included, and dropped by the kernel when
the description is closed, which death of the process does.

Bounded files. A process that closes its descriptor of a key's file (its cache
is full) removes the file if no process holds a slot of it, so what is on disk
is bounded by the keys held plus each process's descriptor cache. Removal must
never let two holders take one slot through two inodes:

* only a process holding a lock on *every* byte of a file (no slot held by
  anyone) may unlink it, after checking that the path still names that file;
* a process that takes a slot then checks that the path still names the file
  it locked (one ``lstat``); if not, it unlocks and starts over.

A released slot's descriptor is kept for the next acquire (at most ``spare``
for all keys together), so a hot key costs two ``fcntl()`` calls and one
``statx``, none of which gives up the GIL; a descriptor that does not fit is
closed, and its file removed if free.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import threading
import time

from .. import inode, ofdlock, statedir
from .backend import Lease, after_fork_in_child

# Seconds to keep retrying a key whose file is being removed by another process:
# the remover holds it for two syscalls, unless the scheduler stalls it.
_PATIENCE = 5.0


class _FileLease:
    __slots__ = ("_backend", "dead", "fd", "ino", "path", "slot")

    def __init__(self, backend: HostBackend, path: str, fd: int, ino: int, slot: int) -> None:
        self._backend = backend
        self.path = path
        self.fd = fd
        self.ino = ino
        self.slot = slot
        self.dead = False  # inherited by a forked child: not ours to release

    def release(self) -> None:
        self._backend._release(self)


class _Retry(Exception):
    """The file was replaced or is being removed: open it afresh."""


class HostBackend:
    """Slots shared by every process on the machine that uses ``directory``.

    ``owned_from``: an ancestor of ``directory`` from which every directory
    down must be private too (the per-user default dir); see
    :func:`..statedir.ensure_private_dir`. Raises
    :class:`..statedir.UnsafeStateError` for an unsafe directory.
    """

    local_only = False

    def __init__(self, directory: str, *, owned_from: str | None = None, spare: int = 64) -> None:
        if not ofdlock.AVAILABLE:
            raise RuntimeError("scope='host' needs Linux open-file-description locks (F_OFD_SETLK)")
        self.owned_from = owned_from
        self.directory = statedir.ensure_private_dir(directory, owned_from=owned_from)
        self._lock = threading.Lock()
        self._max_spare = spare
        self._spares: dict[str, list[tuple[int, int]]] = {}  # path: [(fd, inode)]
        self._spare_count = 0
        self._paths: dict[tuple[str, str], str] = {}
        self._held: dict[str, set[int]] = {}  # slots this process holds, by file
        self._leases: set[_FileLease] = set()
        self._pid = os.getpid()
        after_fork_in_child(self)

    def _after_fork(self) -> None:
        # The child's descriptors share their open file descriptions with the
        # parent's: unlocking through them would free the parent's slots. Closing
        # the child's copies is safe, as the parent keeps its own.
        self._lock = threading.Lock()
        for fds in self._spares.values():
            for fd, _ in fds:
                os.close(fd)
        for lease in self._leases:
            lease.dead = True
            os.close(lease.fd)
        self._spares, self._spare_count, self._held, self._leases = {}, 0, {}, set()
        self._pid = os.getpid()

    def path(self, pool: str, key: str) -> str:
        cached = self._paths.get((pool, key))
        if cached is not None:
            return cached
        digest = hashlib.sha256(f"{pool}\0{key}".encode()).hexdigest()[:32]
        path = os.path.join(self.directory, digest)
        if len(self._paths) >= 1024:  # per-key pools: keep the memo bounded
            self._paths.clear()
        self._paths[(pool, key)] = path
        return path

    def try_acquire(self, pool: str, key: str, limit: int) -> Lease | None:
        path = self.path(pool, key)
        deadline = 0.0
        for attempt in itertools.count():
            try:
                return self._attempt(path, limit)
            except _Retry:
                pass
            if attempt == 2:
                deadline = time.monotonic() + _PATIENCE
            elif attempt > 2:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.001)  # another process is removing the file
        raise OSError(errno.EAGAIN, f"{path}: the key file kept being removed; gave up")

    def _attempt(self, path: str, limit: int) -> _FileLease | None:
        # The fcntl() calls keep the GIL (see core/ofdlock.py), so holding our
        # lock across them costs nothing extra: with a cached descriptor (the
        # common case) an acquire is one lock round.
        with self._lock:
            spare = self._pop_spare(path)
            if spare is not None:
                return self._lock_slot_or_close(path, *spare, limit)
        fd, ino = self._open(path)
        with self._lock:
            return self._lock_slot_or_close(path, fd, ino, limit)

    def _lock_slot_or_close(self, path: str, fd: int, ino: int, limit: int) -> _FileLease | None:
        try:
            return self._lock_slot(path, fd, ino, limit)
        except BaseException:  # _Retry included: the next attempt opens afresh
            os.close(fd)
            raise

    def _open(self, path: str) -> tuple[int, int]:
        try:
            fd = statedir.open_private_file(path)
        except FileNotFoundError:  # the directory was removed while we ran
            statedir.ensure_private_dir(self.directory, owned_from=self.owned_from)
            fd = statedir.open_private_file(path)
        return fd, os.fstat(fd).st_ino

    def _lock_slot(self, path: str, fd: int, ino: int, limit: int) -> _FileLease | None:
        # Skip the slots this process holds (no syscall, no EAGAIN), and start
        # at a per-process offset so workers do not all try slot 0.
        mine = self._held.get(path)
        first = self._pid % limit
        for i in range(limit):
            slot = (first + i) % limit
            if mine is not None and slot in mine:
                continue
            if ofdlock.lock_byte(fd, slot):
                if not inode.names_inode(path, ino):
                    ofdlock.unlock_byte(fd, slot)
                    raise _Retry
                if mine is None:
                    mine = self._held[path] = set()
                mine.add(slot)
                lease = _FileLease(self, path, fd, ino, slot)
                self._leases.add(lease)
                return lease
        # Full, unless a remover holds every byte (a lock that runs to the end).
        if ofdlock.conflict_length(fd, first) != 1 or not _names(path, ino):
            raise _Retry
        evicted = self._push_spare(path, fd, ino)
        if evicted is not None:
            _discard(*evicted)
        return None

    def _release(self, lease: _FileLease) -> None:
        with self._lock:
            if lease.dead:
                return
            lease.dead = True
            self._leases.discard(lease)
            mine = self._held[lease.path]
            mine.discard(lease.slot)
            if not mine:
                del self._held[lease.path]
            try:
                ofdlock.unlock_byte(lease.fd, lease.slot)
            except OSError:
                os.close(lease.fd)  # closing drops the lock just as well
                return
            evicted = self._push_spare(lease.path, lease.fd, lease.ino)
        if evicted is not None:
            _discard(*evicted)

    def _pop_spare(self, path: str) -> tuple[int, int] | None:
        fds = self._spares.get(path)
        if not fds:
            return None
        spare = fds.pop()
        if not fds:
            del self._spares[path]
        self._spare_count -= 1
        return spare

    def _push_spare(self, path: str, fd: int, ino: int) -> tuple[str, int, int] | None:
        """Cache ``fd``; return the least recently cached descriptor that no longer fits.

        Least recently used goes first, so keys seen once (per-IP keys) cannot
        push a busy key's descriptor out for good.
        """
        if self._max_spare <= 0:
            return path, fd, ino
        evicted = None
        if self._spare_count >= self._max_spare:
            oldest = next(iter(self._spares))
            old = self._pop_spare(oldest)
            if old is not None:
                evicted = (oldest, *old)
        fds = self._spares.pop(path, None) or []  # re-inserted: now the most recent
        fds.append((fd, ino))
        self._spares[path] = fds
        self._spare_count += 1
        return evicted

    def in_use(self, pool: str, key: str, limit: int) -> int:
        flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path(pool, key), flags)
        except FileNotFoundError:
            return 0
        try:
            # One probe per slot: F_OFD_GETLK reports *a* conflicting lock in
            # the range, not the lowest, so a range scan could skip some.
            return sum(1 for slot in range(limit) if ofdlock.is_locked(fd, slot))
        finally:
            os.close(fd)


def _names(path: str, ino: int) -> bool:
    """True while ``path`` still names the file with inode ``ino`` (keeping the GIL)."""
    return inode.names_inode(path, ino)


def _discard(path: str, fd: int, ino: int) -> None:
    """Close a descriptor we do not cache, removing its file if no one holds a slot."""
    try:
        if ofdlock.lock_from(fd, 0) and _names(path, ino):
            os.unlink(path)  # we hold every byte: no one can be admitted through it
    except OSError:
        pass  # already gone, or the directory too: nothing to bound
    finally:
        os.close(fd)
