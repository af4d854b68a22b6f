"""The process backend: slots counted in a dict of this process."""

from __future__ import annotations

import threading

from .backend import Lease, after_fork_in_child


class _CountLease:
    __slots__ = ("_backend", "_generation", "_key", "_released")

    def __init__(self, backend: ProcessBackend, key: tuple[str, str]) -> None:
        self._backend = backend
        self._key = key
        self._released = False
        self._generation = backend._generation

    def release(self) -> None:
        backend = self._backend
        lock = backend._lock
        lock.acquire()  # not ``with``: see "The hot path" in docs/architecture.md
        try:
            if self._released or self._generation != backend._generation:
                return
            self._released = True
            key = self._key
            held = backend._counts[key] - 1
            if held:
                backend._counts[key] = held
            else:
                del backend._counts[key]
        finally:
            lock.release()


class ProcessBackend:
    """Counts in a dict; a key's entry exists only while it holds a slot."""

    local_only = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        # Leases a forked child inherited count its parent's requests, not its own.
        self._generation = 0
        after_fork_in_child(self)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._counts = {}
        self._generation += 1

    def try_acquire(self, pool: str, key: str, limit: int) -> Lease | None:
        k = (pool, key)
        lock = self._lock
        lock.acquire()
        try:
            held = self._counts.get(k, 0)
            if held >= limit:
                return None
            self._counts[k] = held + 1
        finally:
            lock.release()
        return _CountLease(self, k)

    def in_use(self, pool: str, key: str, limit: int) -> int:
        return self._counts.get((pool, key), 0)
