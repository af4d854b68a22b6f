"""What a cluster pool does while Redis cannot be reached (``on_error``). No Django.

While the breaker is open no request talks to Redis: ``"local"`` takes the slot
from the ``fallback`` backend (host scope, with the same limit), ``"open"``
admits and ``"closed"`` refuses. Slots taken from the fallback are not in
Redis: right after recovery a key may briefly hold up to its limit in Redis
plus what the fallback still holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .. import Backend, Lease

ON_ERROR = ("local", "open", "closed")
FALLBACK_POLL = 0.05  # seconds between retries of a wait on the fallback pool


class _OpenLease:
    """What ``on_error="open"`` admits with: nothing to give back."""

    def release(self) -> None:
        pass


OPEN_LEASE = _OpenLease()


class Fallback:
    def __init__(
        self,
        *,
        on_error: str,
        backend: Callable[[], Backend] | None,
        clock: Callable[[], float],
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
        if on_error == "local" and backend is None:
            raise ValueError("on_error='local' needs a fallback backend")
        self.on_error = on_error
        self._backend = backend
        self.clock = clock

    def try_acquire(self, pool: str, key: str, limit: int) -> Lease | None:
        if self.on_error == "open":
            return OPEN_LEASE
        if self.on_error == "closed" or self._backend is None:
            return None
        return self._backend().try_acquire(pool, key, limit)

    def turn(self, pool: str, key: str, limit: int, deadline: float) -> Lease | float:
        """One turn of a wait: a lease, or seconds to sleep (<= 0: give up)."""
        lease = self.try_acquire(pool, key, limit)
        if lease is not None or self.on_error != "local":
            return lease if lease is not None else 0.0
        return min(FALLBACK_POLL, deadline - self.clock())

    def wait(self, pool: str, key: str, limit: int, deadline: float) -> Lease | None:
        """A slot by ``deadline``, on this thread (``aio.py`` sleeps on its loop instead)."""
        while True:
            turn = self.turn(pool, key, limit, deadline)
            if not isinstance(turn, float):
                return turn
            if turn <= 0:
                return None
            time.sleep(turn)

    def in_use(self, pool: str, key: str, limit: int) -> int:
        """The fallback's count (0 when there is none)."""
        if self.on_error == "local" and self._backend is not None:
            return self._backend().in_use(pool, key, limit)
        return 0
