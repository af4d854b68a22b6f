"""Pools: at most ``limit`` leases per key, and the waiting for them.

Waiting is the pool's job, the same for every backend: first come, first
served within a process; woken at once by a release in this process, and by
polling for releases elsewhere when the backend is not ``local_only``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import Callable, Generator

from .. import validate
from .backend import Backend, Lease, after_fork_in_child


class _Waiter:
    """One request waiting for a slot, sync (a thread) or async (a task)."""

    __slots__ = ("event", "future", "loop")

    def __init__(
        self, *, event: threading.Event | None = None, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        # Exactly one of the two: a thread sleeps on ``event``, a task on a future.
        self.loop = loop
        self.event = event
        self.future: asyncio.Future[None] | None = None if loop is None else loop.create_future()

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
    """A slot of a pool. ``release()`` is idempotent and wakes the next waiter.

    A pool makes its leases of its ``lease_class``: a subclass may add what a
    lease means to its user (the Django layer's ``Slot`` ties it to a response).
    """

    __slots__ = ("_generation", "_inner", "key", "pool", "released", "waited")

    def __init__(self, pool: Pool, key: str, inner: Lease, waited: float) -> None:
        self.pool = pool
        self._inner = inner
        self._generation = pool._generation
        self.key = key
        self.waited = waited
        self.released = False

    def release(self) -> bool:
        """Give the slot back; True for the one call that did (of any threads)."""
        # Unlocked peek: a slot is released up to three times per request (the
        # stream's end, the response's close, the request's end); only the
        # first needs the lock. ``released`` never goes back to False.
        if self.released:
            return False
        pool = self.pool
        lock = pool._lock
        lock.acquire()  # not ``with``: see "The hot path" in docs/architecture.md
        try:
            if self.released or self._generation != pool._generation:
                return False  # released meanwhile, or a parent's lease after a fork
            self.released = True
        finally:
            lock.release()
        self._inner.release()
        # After the slot is really free. Unlocked peek: a waiter that enqueues
        # after it tries _take() once more before it sleeps, and sees it free.
        if pool._queues:
            pool._wake(self.key)
        return True


class Pool:
    """At most ``limit`` leases per key, through ``backend``.

    ``poll_interval``: how often waiters retry when slots may be freed by other
    processes (not used when the backend is process-local). ``lease_class``:
    what the pool's leases are made of, :class:`PoolLease` or a subclass taking
    the same arguments.
    """

    def __init__(
        self,
        *,
        name: str,
        limit: int,
        backend: Backend,
        poll_interval: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
        lease_class: type[PoolLease] = PoolLease,
    ) -> None:
        self.name = name
        self.limit = validate.positive_int(limit, what=f"pool {name!r}: limit")
        self.backend = backend
        self.poll_interval = poll_interval
        self.clock = clock
        self.lease_class = lease_class
        self._lock = threading.Lock()
        # Only keys that have waiters have an entry: memory follows demand.
        self._queues: dict[str, collections.deque[_Waiter]] = {}
        # A forked child starts empty: its parent's leases and waiters are not its own.
        self._generation = 0
        after_fork_in_child(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._queues = {}
        self._generation += 1

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
        # Granted at the first try: no wait, and no second clock read.
        return self.lease_class(self, key, inner, 0.0 if waiter is None else self.clock() - started)

    def adopt(self, key: str, inner: Lease, *, waited: float) -> PoolLease:
        """A lease for a slot a backend granted by itself (a cluster wait in Redis)."""
        return self.lease_class(self, key, inner, waited)

    def _wake(self, key: str) -> None:
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
        """A slot at once, or None; never ahead of this process's waiters.

        ``_take`` for a newcomer, written out: this is every admission's path,
        and it takes no lock of the pool's. The look at the queues is a peek: a
        newcomer that looked just before a waiter queued came first, and the
        backend, not the pool, is what never admits more than ``limit``.
        """
        if key in self._queues:
            return None
        inner = self.backend.try_acquire(self.name, key, self.limit)
        if inner is None:
            return None
        return self.lease_class(self, key, inner, 0.0)

    def _turns(
        self, key: str, waiter: _Waiter, started: float, deadline: float
    ) -> Generator[float, None, PoolLease | None]:
        """A wait in the queue, the same for threads and tasks.

        Yields how long to sleep before the next try; returns the lease, or
        None at the deadline. Closing it (a cancelled task) leaves the queue.
        """
        self._enqueue(key, waiter)
        try:
            while True:
                lease = self._take(key, waiter, started)
                if lease is not None:
                    return lease
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return None
                if not self.backend.local_only:
                    remaining = min(remaining, self.poll_interval)  # releases elsewhere: poll
                yield remaining
        finally:
            self._dequeue(key, waiter)

    def acquire(self, key: str = "", *, timeout: float) -> PoolLease | None:
        """Wait up to ``timeout`` seconds for a slot (blocking this thread)."""
        started = self.clock()
        lease = self._take(key, None, started)
        if lease is not None or timeout <= 0:
            return lease
        event = threading.Event()
        turns = self._turns(key, _Waiter(event=event), started, started + timeout)
        with contextlib.closing(turns):
            try:
                while True:
                    event.wait(next(turns))
                    event.clear()
            except StopIteration as done:
                granted: PoolLease | None = done.value
                return granted

    async def aacquire(self, key: str = "", *, timeout: float) -> PoolLease | None:
        """Wait up to ``timeout`` seconds for a slot without blocking the loop.

        Cancelling the awaiting task (Django does when the client disconnects)
        gives up the place in the queue.
        """
        started = self.clock()
        lease = self._take(key, None, started)
        if lease is not None or timeout <= 0:
            return lease
        waiter = _Waiter(loop=asyncio.get_running_loop())
        turns = self._turns(key, waiter, started, started + timeout)
        with contextlib.closing(turns):
            try:
                while True:
                    await asyncio.wait({waiter.future}, timeout=next(turns))  # type: ignore[type-var]
                    waiter.reset()
            except StopIteration as done:
                granted: PoolLease | None = done.value
                return granted
