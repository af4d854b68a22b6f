"""The async side of a cluster backend: redis.asyncio, one client per event loop. No Django.

The same Lua and the same shared steps (``ClusterBackend.hand_off``, ``turn``)
as the sync side (``sync.py``); only the waiting differs: a future woken from
the subscriber thread instead of a ``threading.Event``. Nothing here blocks the
loop; releases need no loop at all (they ride with the next admission or go
from the backend's thread).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any

from . import scripts as lua

if TYPE_CHECKING:
    from .. import Lease
    from .backend import ClusterBackend
    from .leases import Keys

SCRIPTS = ("ACQUIRE", "GIVE_UP")


class AsyncSide:
    def __init__(self, backend: ClusterBackend) -> None:
        self.backend = backend
        # A redis.asyncio connection belongs to the loop that opened it.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self._pending: set[asyncio.Task[None]] = set()

    def scripts(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        scripts = self._clients.get(loop)
        if scripts is None:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            client = redis.asyncio.Redis.from_url(
                self.backend.url,
                socket_timeout=self.backend.timeout,
                socket_connect_timeout=self.backend.timeout,
                retry=Retry(NoBackoff(), 0),
            )
            scripts = {name: client.register_script(getattr(lua, name)) for name in SCRIPTS}
            self._clients[loop] = scripts
        return scripts

    async def acquire(self, pool: str, key: str, limit: int, *, timeout: float) -> Lease | None:
        import redis

        b = self.backend
        deadline = b.clock() + timeout
        if b.breaker.is_open:
            return await self._fallback_wait(pool, key, limit, deadline)
        keys = b.keys(pool, key)
        handed = b.hand_off(keys, limit)
        if handed is not None:
            return handed
        scripts = self.scripts()
        ident, wait = b.new_ident(), timeout > 0
        call = b.acquire_call(keys, ident, limit, wait)
        waker = _Waker(asyncio.get_running_loop())
        if wait:
            b.wakeups.add(keys.digest, waker)
        admitted = False
        try:
            while True:
                sent = b.clock()
                try:
                    with b.carrying_releases(call) as carried:
                        reply = await scripts["ACQUIRE"](**carried)
                except redis.RedisError as exc:
                    b.releases.keep([keys.base, ident])  # it may run yet: Releaser.keep
                    b.failed(pool, exc)
                    return await self._fallback_wait(pool, key, limit, deadline)
                except asyncio.CancelledError:
                    b.releases.resend([keys.base, ident])  # Redis may have admitted it
                    raise
                turn = b.turn(reply, keys, ident, sent, deadline)
                if not isinstance(turn, float):
                    admitted = True
                    return turn
                if turn <= 0:
                    return None
                await waker.wait(turn)
        finally:
            if wait:
                b.wakeups.remove(keys.digest, waker)
                if not admitted and not b.breaker.is_open:
                    await self._give_up(scripts, keys, ident)

    async def _fallback_wait(
        self, pool: str, key: str, limit: int, deadline: float
    ) -> Lease | None:
        while True:
            turn = self.backend.fallback.turn(pool, key, limit, deadline)
            if not isinstance(turn, float):
                return turn
            if turn <= 0:
                return None
            await asyncio.sleep(turn)

    async def _give_up(self, scripts: dict[str, Any], keys: Keys, ident: str) -> None:
        import redis

        try:
            await scripts["GIVE_UP"](**self.backend.give_up_call(keys, ident))
        except redis.RedisError as exc:
            self.backend.failed(None, exc)
        except asyncio.CancelledError:
            pass  # cancelled twice: the entry expires in Redis by itself


class _Waker:
    """Wakes one async waiter from the subscriber thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()

    def __call__(self) -> None:
        self.loop.call_soon_threadsafe(self._set)

    def _set(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    async def wait(self, seconds: float) -> None:
        await asyncio.wait({self.future}, timeout=seconds)
        if self.future.done():
            self.future = self.loop.create_future()
