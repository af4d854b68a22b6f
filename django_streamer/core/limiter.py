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
import errno
import fcntl
import hashlib
import os
import struct
import threading
import time
from collections.abc import Callable
from typing import Protocol


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

# struct flock on LP64 Linux: short l_type, short l_whence, (pad), off_t l_start,
# off_t l_len, pid_t l_pid, (pad). F_OFD_* needs l_pid == 0.
_FLOCK = struct.Struct("hhxxxxqqixxxx")
_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", None)
_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", None)


def _flock(kind: int, start: int, length: int) -> bytes:
    return _FLOCK.pack(kind, os.SEEK_SET, start, length, 0)


class _FileLease:
    __slots__ = ("_fd", "_lock", "slot")

    def __init__(self, fd: int, slot: int) -> None:
        self._fd = fd
        self.slot = slot
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # closing the description drops its lock


class HostBackend:
    """Slots shared by every process on the machine that uses ``directory``.

    Slot ``i`` of a pool key is byte ``i`` of its file, taken with an
    open-file-description lock (``F_OFD_SETLK``): exclusive between any two
    ``open()``s, threads of one process included, and released by the kernel
    when the description is closed, which death of the process does.

    Files are never deleted: one per (pool, key) ever seen, empty (locks may lie
    past the end of a file). Keys that come and go (per-IP pools) leave empty
    files behind; they cost an inode each, not memory.
    """

    local_only = False

    def __init__(self, directory: str) -> None:
        if _OFD_SETLK is None:
            raise RuntimeError("scope='host' needs Linux open-file-description locks (F_OFD_SETLK)")
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def path(self, pool: str, key: str) -> str:
        digest = hashlib.sha256(f"{pool}\0{key}".encode()).hexdigest()[:32]
        return os.path.join(self.directory, digest)

    def try_acquire(self, pool: str, key: str, limit: int) -> Lease | None:
        fd = os.open(self.path(pool, key), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            # Start at a per-process offset so workers do not all fight over slot 0.
            first = os.getpid() % limit
            for i in range(limit):
                slot = (first + i) % limit
                try:
                    fcntl.fcntl(fd, _OFD_SETLK, _flock(fcntl.F_WRLCK, slot, 1))  # type: ignore[arg-type]
                except OSError as exc:
                    if exc.errno in (errno.EAGAIN, errno.EACCES):
                        continue
                    raise
                lease = _FileLease(fd, slot)
                fd = -1
                return lease
            return None
        finally:
            if fd >= 0:
                os.close(fd)

    def in_use(self, pool: str, key: str, limit: int) -> int:
        try:
            fd = os.open(self.path(pool, key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            # One probe per slot: F_OFD_GETLK reports *a* conflicting lock in
            # the range, not the lowest, so a range scan could skip some.
            held = 0
            for slot in range(limit):
                probe = _flock(fcntl.F_WRLCK, slot, 1)
                answer = fcntl.fcntl(fd, _OFD_GETLK, probe)  # type: ignore[arg-type]
                if _FLOCK.unpack(answer)[0] != fcntl.F_UNLCK:
                    held += 1
            return held
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

    __slots__ = ("_inner", "_lock", "_pool", "acquired_at", "key", "released", "waited")

    def __init__(self, pool: Pool, key: str, inner: Lease, waited: float) -> None:
        self._pool = pool
        self._inner = inner
        self._lock = threading.Lock()
        self.key = key
        self.waited = waited
        self.acquired_at = time.monotonic()
        self.released = False

    def release(self) -> None:
        with self._lock:
            if self.released:
                return
            self.released = True
        try:
            self._inner.release()
        finally:
            self._pool._released(self.key)


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
        return PoolLease(self, key, inner, self.clock() - started)

    def _released(self, key: str) -> None:
        with self._lock:
            self.held -= 1
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
            deadline = started + timeout
            while True:
                lease = self._take(key, waiter, started)
                if lease is not None:
                    return lease
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return None
                if not self.backend.local_only:
                    remaining = min(remaining, self.poll_interval)
                event.wait(remaining)
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
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop)
        self._enqueue(key, waiter)
        try:
            deadline = started + timeout
            while True:
                lease = self._take(key, waiter, started)
                if lease is not None:
                    return lease
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return None
                if not self.backend.local_only:
                    remaining = min(remaining, self.poll_interval)
                await asyncio.wait({waiter.future}, timeout=remaining)  # type: ignore[type-var]
                waiter.reset()
        finally:
            self._dequeue(key, waiter)
