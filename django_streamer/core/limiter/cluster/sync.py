"""The sync side of a cluster backend: a request thread's admission and wait. No Django.

The same Lua and the same shared steps (``ClusterBackend.hand_off``, ``turn``)
as the async side (``aio.py``); only the waiting differs: a
``threading.Event`` set by the subscriber thread on a release of the key.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .. import Lease
    from .backend import ClusterBackend
    from .leases import Keys

_NO_WAIT = threading.Event()  # never set: what a request that does not wait never waits on


class SyncSide:
    def __init__(self, backend: ClusterBackend) -> None:
        self.backend = backend

    def acquire(self, pool: str, key: str, limit: int, *, timeout: float) -> Lease | None:
        b = self.backend
        deadline = b.clock() + timeout
        if b.breaker.is_open:
            return b.fallback.wait(pool, key, limit, deadline)
        keys = b.keys(pool, key)
        handed = b.hand_off(keys, limit)
        if handed is not None:
            return handed
        import redis

        ident, wait = b.new_ident(), timeout > 0
        event = threading.Event() if wait else _NO_WAIT  # no wait: one attempt
        if wait:
            b.wakeups.add(keys.digest, event.set)
        call = b.acquire_call(keys, ident, limit, wait)
        admitted = False
        try:
            while True:
                sent = b.clock()
                try:
                    with b.carrying_releases(call) as carried:
                        reply = b.calls("ACQUIRE", **carried)
                except redis.RedisError as exc:
                    b.releases.keep([keys.base, ident])  # it may run yet: Releaser.keep
                    b.failed(pool, exc)
                    return b.fallback.wait(pool, key, limit, deadline)
                turn = b.turn(reply, keys, ident, sent, deadline)
                if not isinstance(turn, float):
                    admitted = True
                    return turn
                if turn <= 0:
                    return None
                event.wait(turn)
                event.clear()
        finally:
            if wait:
                b.wakeups.remove(keys.digest, event.set)
                if not admitted:
                    self._give_up(keys, ident)

    def _give_up(self, keys: Keys, ident: str) -> None:
        b = self.backend
        if b.breaker.is_open:
            return  # the entry expires by itself
        import redis

        try:
            b.calls("GIVE_UP", **b.give_up_call(keys, ident))
        except redis.RedisError as exc:
            b.failed(None, exc)
