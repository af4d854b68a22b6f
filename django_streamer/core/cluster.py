"""Cluster-scope pools: slots shared by every host through Redis. Plain Python, no Django.

:class:`ClusterBackend` implements the :class:`~.limiter.Backend` protocol
(``try_acquire``, ``in_use``) and adds its own waits, ``acquire`` and
``aacquire``, since a fair wait across hosts needs a queue in Redis rather than
the pool's per-process one (see ``cluster_scripts`` for the Lua).

Round trips: one at admission, one at release, and per process one renewal of
all its leases every ``lease / 3`` seconds. A lease lives ``lease`` seconds
without renewal, so a host that dies gives its slots back by then; a gunicorn
worker that dies gives them back at once through ``release_owner``.

While Redis cannot be reached (the breaker is open) no request talks to it:
``on_error`` says what happens instead, ``"local"`` (the ``fallback`` backend,
host scope, with the same limit), ``"open"`` (admit) or ``"closed"`` (refuse).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import cluster_scripts as lua
from .cluster_heartbeat import Breaker, Heartbeat, Wakeups, log
from .limiter import Backend, Lease

ON_ERROR = ("local", "open", "closed")
POLL = 1.0  # seconds between retries of a waiter that heard no wake-up
FALLBACK_POLL = 0.05  # the same for a wait on the fallback pool during an outage
SCRIPTS = ("ACQUIRE", "RELEASE", "GIVE_UP", "RENEW", "RELEASE_OWNER", "IN_USE")


@dataclass(frozen=True)
class Keys:
    base: str  # prefix{digest}: the hash tag keeps a pool key's Redis keys together
    digest: str

    def k(self, suffix: str) -> str:
        return f"{self.base}:{suffix}"


class ClusterLease:
    __slots__ = ("_backend", "ident", "keys", "lost", "released", "renewed")

    def __init__(self, backend: ClusterBackend, keys: Keys, ident: str, now: float) -> None:
        self._backend = backend
        self.keys = keys
        self.ident = ident
        self.renewed = now  # when the last renewal that succeeded was sent
        self.lost = False
        self.released = False

    def release(self) -> None:
        self._backend.release(self)


class _OpenLease:
    """What ``on_error="open"`` admits with: nothing to give back."""

    def release(self) -> None:
        pass


OPEN_LEASE = _OpenLease()


class ClusterBackend:
    local_only = False

    def __init__(
        self,
        url: str,
        *,
        lease: float = 10.0,
        on_error: str = "local",
        fallback: Callable[[], Backend] | None = None,
        prefix: str = "streamer:",
        timeout: float = 0.08,
        probe: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")
        if on_error == "local" and fallback is None:
            raise ValueError("on_error='local' needs a fallback backend")
        self.url = url
        self.lease = float(lease)
        self.on_error = on_error
        self._fallback = fallback
        self.prefix = prefix
        self.channel = prefix + "wake"
        self.clock = clock
        # Short timeouts and no retries: an admission decides within ~timeout
        # even while Redis hangs, then the breaker keeps the others off it.
        self._timeout = timeout
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        self._scripts = {name: self.client.register_script(getattr(lua, name)) for name in SCRIPTS}
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )
        self.errors: dict[str, int] = {}  # failed admissions, by pool
        self._probe = probe
        self._fresh_process()
        os.register_at_fork(after_in_child=self._fresh_process)

    def _fresh_process(self) -> None:
        # Threads, leases and the event loops' clients do not survive a fork.
        self._lock = threading.Lock()
        self._leases: dict[str, ClusterLease] = {}
        self._ids = itertools.count()
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._token = secrets.token_hex(4)  # two backends of one process never share an id
        self.breaker = Breaker(clock=self.clock)
        self.heartbeat = Heartbeat(
            beat=self._beat, breaker=self.breaker, interval=self.lease / 3, probe=self._probe
        )
        self.wakeups = Wakeups(subscribe=self._pubsub, channel=self.channel)
        self._aclients = weakref.WeakKeyDictionary()
        self._pending: set[asyncio.Task[None]] = set()

    def _pubsub(self) -> object:
        import redis

        # Its own connection, without a read timeout: it waits for messages.
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        return client.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]

    def _aclient(self) -> Any:
        loop = asyncio.get_running_loop()
        entry = self._aclients.get(loop)
        if entry is None:
            import redis.asyncio
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            client = redis.asyncio.Redis.from_url(
                self.url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=Retry(NoBackoff(), 0),
            )
            scripts = {name: client.register_script(getattr(lua, name)) for name in SCRIPTS}
            entry = self._aclients[loop] = (client, scripts)
        return entry[1]

    # -- shared pieces of the sync and async paths -----------------------------

    def keys(self, pool: str, key: str) -> Keys:
        digest = hashlib.sha256(f"{pool}\0{key}".encode()).hexdigest()[:24]
        return Keys(base=f"{self.prefix}{{{digest}}}", digest=digest)

    def _owner_key(self, owner: str | None = None) -> str:
        return f"{self.prefix}owner:{owner or self.owner}"

    def _keep_ms(self) -> int:
        return int(max(self.lease, 3.0) * 3000)

    def _acquire_call(self, keys: Keys, ident: str, limit: int, wait: bool) -> dict[str, Any]:
        names = [keys.k("h"), keys.k("q"), keys.k("e"), keys.k("n"), self._owner_key()]
        args = [ident, limit, int(self.lease * 1000), int(wait), self._keep_ms(), keys.base]
        return {"keys": names, "args": [*args, self.channel, keys.digest]}

    def _release_call(self, lease: ClusterLease) -> dict[str, Any]:
        keys = lease.keys
        names = [keys.k("h"), keys.k("q"), self._owner_key()]
        return {"keys": names, "args": [lease.ident, keys.base, self.channel, keys.digest]}

    def _give_up_call(self, keys: Keys, ident: str) -> dict[str, Any]:
        return {"keys": [keys.k("q"), keys.k("e")], "args": [ident, self.channel, keys.digest]}

    def _new_ident(self) -> str:
        return f"{self.owner}:{self._token}:{next(self._ids)}"

    def _admitted(self, keys: Keys, ident: str, started: float) -> ClusterLease:
        lease = ClusterLease(self, keys, ident, started)
        with self._lock:
            self._leases[ident] = lease
        self.heartbeat.ensure_running()
        return lease

    def _failed(self, pool: str | None, exc: BaseException) -> None:
        if pool is not None:
            self.errors[pool] = self.errors.get(pool, 0) + 1
        self.breaker.failed(exc)
        self.heartbeat.ensure_running()
        self.heartbeat.poke()

    def fallback_try(self, pool: str, key: str, limit: int) -> Lease | None:
        if self.on_error == "open":
            return OPEN_LEASE
        if self.on_error == "closed" or self._fallback is None:
            return None
        return self._fallback().try_acquire(pool, key, limit)

    def _fallback_turn(self, pool: str, key: str, limit: int, deadline: float) -> Lease | float:
        """One turn of a wait on the fallback: a lease, or seconds to sleep (<= 0: give up)."""
        lease = self.fallback_try(pool, key, limit)
        if lease is not None or self.on_error != "local":
            return lease if lease is not None else 0.0
        return min(FALLBACK_POLL, deadline - self.clock())

    # -- admission -------------------------------------------------------------

    def try_acquire(self, pool: str, key: str, limit: int) -> Lease | None:
        return self.acquire(pool, key, limit, timeout=0)

    def acquire(self, pool: str, key: str, limit: int, *, timeout: float) -> Lease | None:
        """A slot, waiting up to ``timeout`` seconds in the cluster-wide queue."""
        started = self.clock()
        deadline = started + timeout
        if self.breaker.is_open:
            return self._fallback_wait(pool, key, limit, deadline)
        import redis

        keys, ident, wait = self.keys(pool, key), self._new_ident(), timeout > 0
        event = threading.Event()
        if wait:
            self.wakeups.add(keys.digest, event.set)
        admitted = False
        try:
            while True:
                try:
                    admitted = bool(
                        self._scripts["ACQUIRE"](**self._acquire_call(keys, ident, limit, wait))[0]
                    )
                except redis.RedisError as exc:
                    self._failed(pool, exc)
                    return self._fallback_wait(pool, key, limit, deadline)
                if admitted:
                    return self._admitted(keys, ident, started)
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return None
                event.wait(min(remaining, POLL))
                event.clear()
        finally:
            if wait:
                self.wakeups.remove(keys.digest, event.set)
                if not admitted:
                    self._give_up(keys, ident)

    def _fallback_wait(self, pool: str, key: str, limit: int, deadline: float) -> Lease | None:
        while True:
            turn = self._fallback_turn(pool, key, limit, deadline)
            if not isinstance(turn, float):
                return turn
            if turn <= 0:
                return None
            time.sleep(turn)

    def _give_up(self, keys: Keys, ident: str) -> None:
        if self.breaker.is_open:
            return  # the entry expires by itself
        import redis

        try:
            self._scripts["GIVE_UP"](**self._give_up_call(keys, ident))
        except redis.RedisError as exc:
            self._failed(None, exc)

    async def aacquire(self, pool: str, key: str, limit: int, *, timeout: float) -> Lease | None:
        """``acquire`` for async views: redis.asyncio, never blocking the loop."""
        started = self.clock()
        deadline = started + timeout
        if self.breaker.is_open:
            return await self._afallback_wait(pool, key, limit, deadline)
        import redis

        scripts = self._aclient()
        keys, ident, wait = self.keys(pool, key), self._new_ident(), timeout > 0
        waker = _AsyncWaker(asyncio.get_running_loop())
        if wait:
            self.wakeups.add(keys.digest, waker)
        admitted = False
        try:
            while True:
                try:
                    admitted = bool(
                        (await scripts["ACQUIRE"](**self._acquire_call(keys, ident, limit, wait)))[
                            0
                        ]
                    )
                except redis.RedisError as exc:
                    self._failed(pool, exc)
                    return await self._afallback_wait(pool, key, limit, deadline)
                if admitted:
                    return self._admitted(keys, ident, started)
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return None
                await waker.wait(min(remaining, POLL))
        finally:
            if wait:
                self.wakeups.remove(keys.digest, waker)
                if not admitted and not self.breaker.is_open:
                    await self._agive_up(scripts, keys, ident)

    async def _afallback_wait(
        self, pool: str, key: str, limit: int, deadline: float
    ) -> Lease | None:
        while True:
            turn = self._fallback_turn(pool, key, limit, deadline)
            if not isinstance(turn, float):
                return turn
            if turn <= 0:
                return None
            await asyncio.sleep(turn)

    async def _agive_up(self, scripts: dict[str, Any], keys: Keys, ident: str) -> None:
        import redis

        try:
            await scripts["GIVE_UP"](**self._give_up_call(keys, ident))
        except (redis.RedisError, asyncio.CancelledError) as exc:
            if isinstance(exc, redis.RedisError):
                self._failed(None, exc)

    # -- release, renewal, reading -------------------------------------------

    def release(self, lease: ClusterLease) -> None:
        with self._lock:
            if lease.released:
                return
            lease.released = True
            self._leases.pop(lease.ident, None)
        if lease.lost or self.breaker.is_open:
            return  # Redis forgets it within the lease
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:  # in an async view: do not block the loop
            task = loop.create_task(self._arelease(lease))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return
        import redis

        try:
            self._scripts["RELEASE"](**self._release_call(lease))
        except redis.RedisError as exc:
            self._failed(None, exc)

    async def _arelease(self, lease: ClusterLease) -> None:
        import redis

        try:
            await self._aclient()["RELEASE"](**self._release_call(lease))
        except redis.RedisError as exc:
            self._failed(None, exc)

    def _beat(self) -> None:
        """Probe while the breaker is open; renew every live lease in one call."""
        import redis

        if self.breaker.is_open:
            try:
                self.client.ping()
            except redis.RedisError:
                return
            self.breaker.recovered()
        now = self.clock()
        live = []
        with self._lock:
            for lease in list(self._leases.values()):
                if now - lease.renewed < self.lease:
                    live.append(lease)
                    continue
                lease.lost = True  # Redis may have handed the slot on: never add it back
                del self._leases[lease.ident]
                log.warning(
                    "django-streamer: cluster lease %s lost (not renewed in time)", lease.ident
                )
        if not live:
            return
        args: list[str | int] = [int(self.lease * 1000), self._keep_ms()]
        for lease in live:
            args += [lease.keys.base, lease.ident]
        try:
            self._scripts["RENEW"](keys=[self._owner_key()], args=args)
        except redis.RedisError as exc:
            self._failed(None, exc)
            return
        for lease in live:
            lease.renewed = now

    def close(self) -> None:
        """Stop the background threads (tests, shutdown); leases left expire in Redis."""
        self.heartbeat.stop()
        self.wakeups.stop()
        self.client.close()

    def held(self) -> int:
        """Leases this process holds in Redis now."""
        return len(self._leases)

    def in_use(self, pool: str, key: str, limit: int) -> int:
        """Slots of ``key`` held cluster-wide (the fallback's count during an outage)."""
        import redis

        if not self.breaker.is_open:
            try:
                return int(self._scripts["IN_USE"](keys=[self.keys(pool, key).k("h")]))
            except redis.RedisError as exc:
                self._failed(None, exc)
        if self.on_error == "local" and self._fallback is not None:
            return self._fallback().in_use(pool, key, limit)
        return 0

    def release_owner(self, owner: str) -> int:
        """Drop every lease of ``owner`` ("host:pid"), a process known to be dead."""
        return int(
            self._scripts["RELEASE_OWNER"](keys=[self._owner_key(owner)], args=[self.channel])
        )


class _AsyncWaker:
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
