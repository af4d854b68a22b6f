"""Concurrency pools and their backends. Plain Python, no Django.

A :class:`Pool` hands out :class:`Lease` objects: at most ``limit`` per key at a
time. Where the count lives is the backend's business:

* :class:`ProcessBackend`: a dict in this process.
* :class:`HostBackend`: Linux open-file-description locks on one byte per
  slot, in a file per (pool, key). The kernel drops such a lock the moment the
  process holding it dies, so a SIGKILLed gunicorn worker gives its slots back
  at once; no lease, no heartbeat, no cleaner.
* A cluster backend (Redis) implements the same three methods.

Waiting is the pool's job, the same for every backend: first come, first
served within a process; woken at once by a release in this process, and by
polling for releases elsewhere.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

from . import ofdlock


class Lease(Protocol):
    def release(self) -> None:
        """Give the slot back. Idempotent."""


class Backend(Protocol):
    #: True when every release happens in this process, so waiters never poll.
    local_only: bool

    def try_acquire(self, pool: str, key: str, limit: int) -> Lease | None:
        """Take a slot without blocking, or return None."""

    def in_use(self, pool: str, key: str, limit: int) -> int:
        """Slots of ``key`` held right now (by any process the backend spans)."""


# -- process --------------------------------------------------------------


class _CountLease:
    __slots__ = ("_backend", "_key", "_released")

    def __init__(self, backend: ProcessBackend, key: tuple[str, str]) -> None:
        self._backend = backend
        self._key = key
        self._released = False

    def release(self) -> None:
        self._backend._release(self)


class ProcessBackend:
    """Counts in a dict; a key's entry exists only while it holds a slot."""

    local_only = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def try_acquire(self, pool: str, key: str, limit: int) -> Lease | None:
        k = (pool, key)
        with self._lock:
            held = self._counts.get(k, 0)
            if held >= limit:
                return None
            self._counts[k] = held + 1
        return _CountLease(self, k)

    def _release(self, lease: _CountLease) -> None:
        with self._lock:
            if lease._released:
                return
            lease._released = True
            held = self._counts[lease._key] - 1
            if held:
                self._counts[lease._key] = held
            else:
                del self._counts[lease._key]

    def in_use(self, pool: str, key: str, limit: int) -> int:
        return self._counts.get((pool, key), 0)


# -- host -----------------------------------------------------------------


class _FileLease:
    __slots__ = ("_backend", "fd", "path", "slot")

    def __init__(self, backend: HostBackend, path: str, fd: int, slot: int) -> None:
        self._backend = backend
        self.path = path
        self.fd = fd
        self.slot = slot

    def release(self) -> None:  # called once, by PoolLease
        self._backend._release(self)


class HostBackend:
    """Slots shared by every process on the machine that uses ``directory``.

    Slot ``i`` of a pool key is byte ``i`` of its file, taken with an
    open-file-description lock (``F_OFD_SETLK``): exclusive between any two
    ``open()``s, threads of one process included, and released by the kernel
    when the description is closed, which death of the process does.

    A released slot is unlocked, and its descriptor kept for the next acquire
    (at most ``spare`` of them, for all keys together): an acquire and release
    then costs two ``fcntl()`` calls instead of ``open``, ``fcntl`` and
    ``close``. A forked child drops the spares it inherited, since a
    description shared across processes would let both hold one slot.

    Files are never deleted: one per (pool, key) ever seen, empty (locks may lie
    past the end of a file). Keys that come and go (per-IP pools) leave empty
    files behind; they cost an inode each, not memory.
    """

    local_only = False

    def __init__(self, directory: str, *, spare: int = 64) -> None:
        if not ofdlock.AVAILABLE:
            raise RuntimeError("scope='host' needs Linux open-file-description locks (F_OFD_SETLK)")
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._lock = threading.Lock()
        self._max_spare = spare
        self._spares: dict[str, list[int]] = {}
        self._spare_count = 0
        self._paths: dict[tuple[str, str], str] = {}
        self._held: dict[str, set[int]] = {}  # slots this process holds, by file
        self._pid = os.getpid()
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        for fds in self._spares.values():
            for fd in fds:
                os.close(fd)  # this child's copy; the parent keeps its own
        self._spares = {}
        self._spare_count = 0
        self._held = {}
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
        # The fcntl() calls keep the GIL (see core/ofdlock.py), so holding our lock
        # across them costs nothing extra: one lock round per acquire.
        with self._lock:
            fd = self._pop_spare(path)
            if fd >= 0:
                return self._lock_slot(path, fd, limit)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        with self._lock:
            return self._lock_slot(path, fd, limit)

    def _lock_slot(self, path: str, fd: int, limit: int) -> _FileLease | None:
        # Skip the slots this process holds (no syscall, no EAGAIN), and start
        # at a per-process offset so workers do not all try slot 0.
        mine = self._held.get(path)
        first = self._pid % limit
        for i in range(limit):
            slot = (first + i) % limit
            if mine is not None and slot in mine:
                continue
            try:
                taken = ofdlock.lock_byte(fd, slot)
            except OSError:
                os.close(fd)
                raise
            if taken:
                if mine is None:
                    mine = self._held[path] = set()
                mine.add(slot)
                return _FileLease(self, path, fd, slot)
        self._push_spare(path, fd)
        return None

    def _release(self, lease: _FileLease) -> None:
        with self._lock:
            mine = self._held[lease.path]
            mine.discard(lease.slot)
            if not mine:
                del self._held[lease.path]
            try:
                ofdlock.unlock_byte(lease.fd, lease.slot)
            except OSError:
                os.close(lease.fd)  # closing drops the lock just as well
                return
            self._push_spare(lease.path, lease.fd)

    def _pop_spare(self, path: str) -> int:
        fds = self._spares.get(path)
        if not fds:
            return -1
        fd = fds.pop()
        if not fds:
            del self._spares[path]
        self._spare_count -= 1
        return fd

    def _push_spare(self, path: str, fd: int) -> None:
        if self._spare_count < self._max_spare:
            self._spares.setdefault(path, []).append(fd)
            self._spare_count += 1
        else:
            os.close(fd)

    def in_use(self, pool: str, key: str, limit: int) -> int:
        try:
            fd = os.open(self.path(pool, key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            # One probe per slot: F_OFD_GETLK reports *a* conflicting lock in
            # the range, not the lowest, so a range scan could skip some.
            return sum(1 for slot in range(limit) if ofdlock.is_locked(fd, slot))
        finally:
            os.close(fd)


# -- pools ----------------------------------------------------------------


class _Waiter:
    """One request waiting for a slot, sync (a thread) or async (a task)."""

    __slots__ = ("event", "future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.loop = loop
        self.event: threading.Event | None = None
        self.future: asyncio.Future[None] | None = None
        if loop is None:
            self.event = threading.Event()
        else:
            self.future = loop.create_future()

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()
        elif self.loop is not None and self.future is not None:
            self.loop.call_soon_threadsafe(_set_done, self.future)

    def reset(self) -> None:
        if self.event is not None:
            self.event.clear()
        elif self.loop is not None:
            self.future = self.loop.create_future()


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class PoolLease:
    """A slot of a pool. ``release()`` is idempotent and wakes the next waiter."""

    __slots__ = ("_inner", "_pool", "acquired_at", "key", "released", "waited")

    def __init__(self, pool: Pool, key: str, inner: Lease, waited: float, now: float) -> None:
        self._pool = pool
        self._inner = inner
        self.key = key
        self.waited = waited
        self.acquired_at = now
        self.released = False

    def release(self) -> None:
        if self._pool._mark_released(self):
            self._inner.release()
            self._pool._wake(self.key)  # after the slot is really free


class Pool:
    """At most ``limit`` leases per key, through ``backend``.

    ``poll_interval``: how often waiters retry when slots may be freed by other
    processes (not used when the backend is process-local).
    """

    def __init__(
        self,
        *,
        name: str,
        limit: int,
        backend: Backend,
        poll_interval: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"pool {name!r}: limit must be an int >= 1, got {limit!r}")
        self.name = name
        self.limit = limit
        self.backend = backend
        self.poll_interval = poll_interval
        self.clock = clock
        self._lock = threading.Lock()
        # Only keys that have waiters have an entry: memory follows demand.
        self._queues: dict[str, collections.deque[_Waiter]] = {}
        self.held = 0  # leases of this pool held by this process

    def in_use(self, key: str = "") -> int:
        return self.backend.in_use(self.name, key, self.limit)

    def _take(self, key: str, waiter: _Waiter | None, started: float) -> PoolLease | None:
        """Try for a slot; a newcomer may not overtake waiters of this process."""
        with self._lock:
            queue = self._queues.get(key)
            if queue and (waiter is None or queue[0] is not waiter):
                return None
            inner = self.backend.try_acquire(self.name, key, self.limit)
            if inner is None:
                return None
            if queue:
                queue.popleft()
                if queue:
                    queue[0].wake()  # it may fit too
                else:
                    del self._queues[key]
            self.held += 1
        now = self.clock()
        return PoolLease(self, key, inner, now - started, now)

    def _mark_released(self, lease: PoolLease) -> bool:
        """Mark ``lease`` released; False if it already was."""
        with self._lock:
            if lease.released:
                return False
            lease.released = True
            self.held -= 1
        return True

    def _wake(self, key: str) -> None:
        # Unlocked peek: a waiter that enqueues after it tries _take() once
        # more before it sleeps, and sees this slot free.
        if not self._queues:
            return
        with self._lock:
            queue = self._queues.get(key)
            if queue:
                queue[0].wake()

    def _enqueue(self, key: str, waiter: _Waiter) -> None:
        with self._lock:
            self._queues.setdefault(key, collections.deque()).append(waiter)

    def _dequeue(self, key: str, waiter: _Waiter) -> None:
        with self._lock:
            queue = self._queues.get(key)
            if queue is None:
                return
            was_first = bool(queue) and queue[0] is waiter
            try:
                queue.remove(waiter)
            except ValueError:
                return
            if not queue:
                del self._queues[key]
            elif was_first:
                queue[0].wake()  # give the turn on

    def try_acquire(self, key: str = "") -> PoolLease | None:
        return self._take(key, None, self.clock())

    def _attempt(
        self, key: str, waiter: _Waiter, started: float, deadline: float
    ) -> PoolLease | float:
        """One turn of a wait: a lease, or how long to sleep (<= 0: give up)."""
        lease = self._take(key, waiter, started)
        if lease is not None:
            return lease
        remaining = deadline - self.clock()
        if remaining > 0 and not self.backend.local_only:
            remaining = min(remaining, self.poll_interval)  # releases elsewhere: poll
        return remaining

    def acquire(self, key: str = "", *, timeout: float) -> PoolLease | None:
        """Wait up to ``timeout`` seconds for a slot (blocking this thread)."""
        started = self.clock()
        lease = self._take(key, None, started)
        if lease is not None or timeout <= 0:
            return lease
        waiter = _Waiter(None)
        event = threading.Event()
        waiter.event = event
        self._enqueue(key, waiter)
        try:
            while True:
                turn = self._attempt(key, waiter, started, started + timeout)
                if isinstance(turn, PoolLease):
                    return turn
                if turn <= 0:
                    return None
                event.wait(turn)
                event.clear()
        finally:
            self._dequeue(key, waiter)

    async def aacquire(self, key: str = "", *, timeout: float) -> PoolLease | None:
        """Wait up to ``timeout`` seconds for a slot without blocking the loop.

        Cancelling the awaiting task (Django does when the client disconnects)
        gives up the place in the queue.
        """
        started = self.clock()
        lease = self._take(key, None, started)
        if lease is not None or timeout <= 0:
            return lease
        waiter = _Waiter(asyncio.get_running_loop())
        self._enqueue(key, waiter)
        try:
            while True:
                turn = self._attempt(key, waiter, started, started + timeout)
                if isinstance(turn, PoolLease):
                    return turn
                if turn <= 0:
                    return None
                await asyncio.wait({waiter.future}, timeout=turn)  # type: ignore[type-var]
                waiter.reset()
        finally:
            self._dequeue(key, waiter)
