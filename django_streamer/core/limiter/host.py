"""The host backend: slots shared by every process that uses one directory.

Slot ``i`` of a pool key is byte ``i`` of the key's file, taken with an
open-file-description lock (see :mod:`..ofdlock`): exclusive between any two
``open()``s, threads of one process included, and dropped by the kernel when
the description is closed, which death of the process does.

Bounded files. A process that closes its descriptor of a key's file (its cache
is full) removes the file if no other process keeps a descriptor of it, so what
is on disk is bounded by the keys held plus each process's descriptor cache
(and what processes that exited or died were caching, removed by the next
process that uses and drops the key). Removal must never let two holders take
one slot through two inodes:

* every descriptor a process keeps, spare or holding a slot, holds a shared
  (read) lock on the sentinel byte ``_SENTINEL``, far past any slot;
* only a process that locks *every* byte of a file (a write lock from byte 0
  on: no slot held and no sentinel but its own) may unlink it, after checking
  that the path still names that file;
* a process that opens a file takes the sentinel, then checks once that the
  path still names the file it opened (it may have been removed in between);
  if not, it closes it and starts over.

So no file is removed while another process keeps a descriptor of it, and a
slot taken through a kept descriptor needs no path check: a hot key costs two
``fcntl()`` calls, neither of which gives up the GIL. When two processes drop
their descriptors of one file at once, each may see the other's sentinel; one
that is refused gives up its sentinel and tries once more, so the later of the
two finds no lock but its own and removes the file.

A file removed by someone else (an operator deleting the directory) is noticed
when a kept descriptor is next used at least ``_RECHECK`` seconds after its
last check; until then admissions go through the orphan, as slots taken before
the removal are held there anyway.

A released slot's descriptor is kept for the next acquire (at most ``spare``
for all keys together); a descriptor that does not fit is closed, and its file
removed if free.
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

# The byte every kept descriptor holds shared; slots are bytes 0 to limit - 1.
_SENTINEL = 1 << 62

# Seconds a kept descriptor is trusted without asking whether its path still
# names its file: only an outside removal can make it false (see above), and
# the check (a statx, ~1.5 us) was most of the kernel time of an admission.
_RECHECK = 1.0

# A kept descriptor: (fd, inode, when its path was last seen naming it).
_Kept = tuple[int, int, float]


class _FileLease:
    __slots__ = ("_backend", "dead", "kept", "path", "slot")

    def __init__(self, backend: HostBackend, path: str, kept: _Kept, slot: int) -> None:
        self._backend = backend
        self.path = path
        self.kept = kept
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
        self._spares: dict[str, list[_Kept]] = {}  # by path
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
        for kept in self._spares.values():
            for fd, _, _ in kept:
                os.close(fd)
        for lease in self._leases:
            lease.dead = True
            os.close(lease.kept[0])
        self._spares, self._spare_count, self._held, self._leases = {}, 0, {}, set()
        self._pid = os.getpid()

    def path(self, pool: str, key: str) -> str:
        cached = self._paths.get((pool, key))
        if cached is not None:
            return cached
        digest = hashlib.sha256(f"{pool}\0{key}".encode()).hexdigest()[:32]
        path = os.path.join(self.directory, f"{_pool_part(pool)}{digest}")
        if len(self._paths) >= 1024:  # per-key pools: keep the memo bounded
            self._paths.clear()
        self._paths[(pool, key)] = path
        return path

    def try_acquire(self, pool: str, key: str, limit: int) -> Lease | None:
        path = self._paths.get((pool, key)) or self.path(pool, key)
        try:  # outside the retry loop: setting that up cost 0.2 us of a 5 us acquire+release
            return self._attempt(path, limit)
        except _Retry:
            return self._retrying(path, limit)

    def _retrying(self, path: str, limit: int) -> Lease | None:
        deadline = 0.0
        for attempt in itertools.count(1):
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
        # lock across them costs nothing extra: with a kept descriptor (the
        # common case) an acquire is one lock round.
        lock = self._lock
        lock.acquire()  # not ``with``: see "The hot path" in docs/architecture.md
        try:
            kept = self._pop_spare(path)
            if kept is not None:
                if time.monotonic() - kept[2] >= _RECHECK:
                    kept = _rechecked(path, kept)
                return self._lock_slot(path, kept, limit)
        finally:
            lock.release()
        kept = self._open(path)
        with self._lock:
            return self._lock_slot(path, kept, limit)

    def _open(self, path: str) -> _Kept:
        try:
            fd = statedir.open_private_file(path)
        except FileNotFoundError:  # the directory was removed while we ran
            statedir.ensure_private_dir(self.directory, owned_from=self.owned_from)
            fd = statedir.open_private_file(path)
        try:
            ino = os.fstat(fd).st_ino
            # Refused: a remover holds every byte. Granted: no one can remove
            # the file from now on, but someone may have before we got here.
            if not ofdlock.share_byte(fd, _SENTINEL) or not _names(path, ino):
                raise _Retry
        except BaseException:
            os.close(fd)
            raise
        return fd, ino, time.monotonic()

    def _lock_slot(self, path: str, kept: _Kept, limit: int) -> _FileLease | None:
        """A slot through ``kept``, or None (``kept`` goes back to the spares).

        Skips the slots this process holds (no syscall, no EAGAIN), and starts
        at a per-process offset so workers do not all try slot 0. Closes
        ``kept`` if it raises.
        """
        fd = kept[0]
        mine = self._held.get(path)
        first = self._pid % limit
        try:
            for i in range(limit):
                slot = (first + i) % limit
                if mine is not None and slot in mine:
                    continue
                if ofdlock.lock_byte(fd, slot):
                    if mine is None:
                        mine = self._held[path] = set()
                    mine.add(slot)
                    lease = _FileLease(self, path, kept, slot)
                    self._leases.add(lease)
                    return lease
        except BaseException:
            os.close(fd)
            raise
        # Full: our sentinel keeps removers out, so every refusal was a holder.
        evicted = self._push_spare(path, kept)
        if evicted is not None:
            _discard(*evicted)
        return None

    def _release(self, lease: _FileLease) -> None:
        lock = self._lock
        lock.acquire()  # not ``with``: see "The hot path" in docs/architecture.md
        try:
            if lease.dead:
                return
            lease.dead = True
            self._leases.discard(lease)
            mine = self._held[lease.path]
            mine.discard(lease.slot)
            if not mine:
                del self._held[lease.path]
            try:
                ofdlock.unlock_byte(lease.kept[0], lease.slot)
            except OSError:
                os.close(lease.kept[0])  # closing drops the lock just as well
                return
            evicted = self._push_spare(lease.path, lease.kept)
        finally:
            lock.release()
        if evicted is not None:
            _discard(*evicted)

    def _pop_spare(self, path: str) -> _Kept | None:
        fds = self._spares.get(path)
        if not fds:
            return None
        spare = fds.pop()
        if not fds:
            del self._spares[path]
        self._spare_count -= 1
        return spare

    def _push_spare(self, path: str, kept: _Kept) -> tuple[str, _Kept] | None:
        """Cache ``fd``; return the least recently cached descriptor that no longer fits.

        Least recently used goes first, so keys seen once (per-IP keys) cannot
        push a busy key's descriptor out for good.
        """
        if self._max_spare <= 0:
            return path, kept
        evicted = None
        if self._spare_count >= self._max_spare:
            oldest = next(iter(self._spares))
            old = self._pop_spare(oldest)
            if old is not None:
                evicted = (oldest, old)
        fds = self._spares.pop(path, None) or []  # re-inserted: now the most recent
        fds.append(kept)
        self._spares[path] = fds
        self._spare_count += 1
        return evicted

    def in_use(self, pool: str, key: str, limit: int) -> int:
        return _held(self.path(pool, key), limit)

    def busiest(self, pool: str, limit: int) -> int:
        """Slots held host-wide by ``pool``'s busiest key (the metrics, never a request).

        A key's file name starts with its pool's part, so the files of one
        pool are found by name; each is probed as :meth:`in_use` does.
        """
        part = _pool_part(pool)
        names = [n for n in os.listdir(self.directory) if n.startswith(part)]
        return max((_held(os.path.join(self.directory, n), limit) for n in names), default=0)


def _pool_part(pool: str) -> str:
    """How the file names of ``pool``'s keys start."""
    return hashlib.sha256(pool.encode()).hexdigest()[:16] + "-"


def _held(path: str, limit: int) -> int:
    """Slots ``0 .. limit - 1`` of the file at ``path`` locked now, by anyone."""
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
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


def _rechecked(path: str, kept: _Kept) -> _Kept:
    """``kept`` (last checked ``_RECHECK`` ago), checked again; _Retry if stale."""
    fd, ino, _ = kept
    now = time.monotonic()
    try:
        if _names(path, ino):
            return fd, ino, now
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)  # removed by someone else: the path is not ours to touch
    raise _Retry


def _discard(path: str, kept: _Kept) -> None:
    """Close a descriptor we do not keep, removing its file if no one else keeps one."""
    fd, ino, _ = kept
    try:
        # Our own sentinel becomes part of our write lock; another's refuses it.
        if not ofdlock.lock_from(fd, 0):
            # Someone else keeps a descriptor, or drops one as we do: let go of
            # our sentinel and try once more, so the later of two removes the file.
            ofdlock.unlock_byte(fd, _SENTINEL)
            if not ofdlock.lock_from(fd, 0):
                return
        if _names(path, ino):
            os.unlink(path)  # we hold every byte: no one can be admitted through it
    except OSError:
        pass  # already gone, or the directory too: nothing to bound
    finally:
        os.close(fd)
