"""Cluster-scope pools: slots shared by every host through Redis. Plain Python, no Django.

:class:`ClusterBackend` implements the :class:`~.limiter.Backend` protocol
(``try_acquire``, ``in_use``) and adds its own waits, ``acquire`` and
``aacquire``, since a fair wait across hosts needs a queue in Redis rather than
the pool's per-process one (see ``scripts.py`` for the Lua).

Round trips: one at admission, at most one at release, and per process one
renewal of all its leases every ``lease / 3`` seconds. A release is deferred:
it rides with the process's next admission (the same EVALSHA), or, if none
comes within ``release_delay`` seconds, a background thread sends every
pending release in one call. Until then the slot still counts as held, which
can only refuse, never over-admit. A lease lives ``lease`` seconds
without renewal, so a host that dies gives its slots back by then; a gunicorn
worker that dies gives them back at once through ``release_owner``.

While Redis cannot be reached (the breaker is open) no request talks to it:
``on_error`` says what happens instead, ``"local"`` (the ``fallback`` backend,
host scope, with the same limit), ``"open"`` (admit) or ``"closed"`` (refuse).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import Backend, Lease
from . import scripts as lua
from .aio import AsyncSide
from .calls import Calls
from .heartbeat import Breaker, Heartbeat, Releaser, Wakeups
from .leases import ClusterLease, Keys, LeaseBook

ON_ERROR = ("local", "open", "closed")
POLL = 1.0  # seconds between retries of a waiter that heard no wake-up
FALLBACK_POLL = 0.05  # the same for a wait on the fallback pool during an outage
RELEASE_DELAY = 0.005  # seconds a release waits for an admission to ride with
KEYS_CACHED = 4096  # pool keys whose Redis names are remembered (cleared when full)
SCRIPTS = ("ACQUIRE", "RELEASE", "GIVE_UP", "RENEW", "RELEASE_OWNER", "IN_USE", "IN_USE_POOL")


class _OpenLease:
    """What ``on_error="open"`` admits with: nothing to give back."""

    def release(self) -> None:
        pass


OPEN_LEASE = _OpenLease()
_NO_WAIT = threading.Event()  # never set: what a request that does not wait never waits on


class ClusterBackend:
    local_only = False

    def __init__(
        self,
        url: str,
        *,
        lease: float = 10.0,
        on_error: str = "local",
        fallback: Callable[[], Backend] | None = None,
        on_failure: Callable[[str], None] | None = None,
        prefix: str = "streamer:",
        timeout: float = 0.08,
        probe: float = 0.25,
        release_delay: float = RELEASE_DELAY,
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
        self.on_failure = on_failure  # told the pool of each admission Redis failed
        self.prefix = prefix
        self.channel = prefix + "wake"
        self.clock = clock
        # Short timeouts and no retries: an admission decides within ~timeout
        # even while Redis hangs, then the breaker keeps the others off it.
        self.timeout = timeout
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        self._scripts = {name: self.client.register_script(getattr(lua, name)) for name in SCRIPTS}
        self.errors: dict[str, int] = {}  # failed admissions, by pool
        self._probe = probe
        self.release_delay = release_delay
        self._fresh_process()
        os.register_at_fork(after_in_child=self._fresh_process)

    def _fresh_process(self) -> None:
        # Threads, leases, connections and the event loops' clients do not survive a fork.
        self.calls = Calls(self.client, {name: getattr(lua, name) for name in SCRIPTS})
        self.leases = LeaseBook()
        self._ids = itertools.count()
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._token = secrets.token_hex(4)  # two backends of one process never share an id
        self.breaker = Breaker(clock=self.clock)
        self.heartbeat = Heartbeat(
            beat=self._beat, breaker=self.breaker, interval=self.lease / 3, probe=self._probe
        )
        self.wakeups = Wakeups(subscribe=self._pubsub, channel=self.channel)
        self.aio = AsyncSide(self)
        self.pools: dict[str, int] = {}  # pool -> limit, for the metrics
        # The parent's pending releases are the parent's to send.
        self.releases = Releaser(send=self._send_releases, delay=self.release_delay)
        self._keys: dict[tuple[str, str], Keys] = {}

    def _pubsub(self) -> object:
        import redis

        # Its own connection, without a read timeout: it waits for messages.
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        return client.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]

    # -- shared pieces of the sync and async paths -----------------------------

    def keys(self, pool: str, key: str) -> Keys:
        found = self._keys.get((pool, key))
        if found is None:
            digest = hashlib.sha256(f"{pool}\0{key}".encode()).hexdigest()[:24]
            found = Keys(base=f"{self.prefix}{{{digest}}}", digest=digest, index=self._index(pool))
            if len(self._keys) >= KEYS_CACHED:
                self._keys.clear()  # per-client keys: do not grow without bound
            self._keys[(pool, key)] = found
        return found

    def _index(self, pool: str) -> str:
        return f"{self.prefix}pool:{hashlib.sha256(pool.encode()).hexdigest()[:24]}"

    def _owner_key(self, owner: str | None = None) -> str:
        return f"{self.prefix}owner:{owner or self.owner}"

    def _keep_ms(self) -> int:
        return int(max(self.lease, 3.0) * 3000)

    def acquire_call(self, keys: Keys, ident: str, limit: int, wait: bool) -> dict[str, Any]:
        """ACQUIRE's keys and arguments; each attempt appends the releases it carries."""
        args = [keys.base, ident, limit, int(self.lease * 1000), int(wait), self._keep_ms()]
        return {"keys": [self._owner_key(), keys.index], "args": [*args, self.channel]}

    def with_releases(self, call: dict[str, Any]) -> dict[str, Any]:
        """``call`` carrying every release pending in this process."""
        taken = self.releases.take()
        return {"keys": call["keys"], "args": call["args"] + taken} if taken else call

    def _send_releases(self, pairs: list[str]) -> None:
        if self.breaker.is_open:
            return  # Redis forgets them within the lease
        import redis

        try:
            self.calls("RELEASE", keys=[self._owner_key()], args=[self.channel, *pairs])
        except redis.RedisError as exc:
            self.failed(None, exc)

    def flush(self) -> None:
        """Send the pending releases now (the metrics read, tests, shutdown)."""
        self.releases.flush()

    def give_up_call(self, keys: Keys, ident: str) -> dict[str, Any]:
        return {"keys": [keys.k("q"), keys.k("e")], "args": [ident, self.channel, keys.digest]}

    def new_ident(self) -> str:
        return f"{self.owner}:{self._token}:{next(self._ids)}"

    def admitted(self, keys: Keys, ident: str, started: float) -> ClusterLease:
        lease = ClusterLease(self.release, keys, ident, started)
        self.leases.add(lease)
        self.heartbeat.ensure_running()
        return lease

    def failed(self, pool: str | None, exc: BaseException) -> None:
        if pool is not None:
            self.errors[pool] = self.errors.get(pool, 0) + 1
            if self.on_failure is not None:
                self.on_failure(pool)
        self.breaker.failed(exc)
        self.heartbeat.ensure_running()
        self.heartbeat.poke()

    def fallback_try(self, pool: str, key: str, limit: int) -> Lease | None:
        if self.on_error == "open":
            return OPEN_LEASE
        if self.on_error == "closed" or self._fallback is None:
            return None
        return self._fallback().try_acquire(pool, key, limit)

    def fallback_turn(self, pool: str, key: str, limit: int, deadline: float) -> Lease | float:
        """One turn of a wait on the fallback: a lease, or seconds to sleep (<= 0: give up)."""
        lease = self.fallback_try(pool, key, limit)
        if lease is not None or self.on_error != "local":
            return lease if lease is not None else 0.0
        return min(FALLBACK_POLL, deadline - self.clock())

    def turn(
        self, reply: Any, keys: Keys, ident: str, started: float, deadline: float
    ) -> ClusterLease | float:
        """After one ACQUIRE: the lease, or seconds to wait for a wake-up (<= 0: give up)."""
        if reply[0]:
            return self.admitted(keys, ident, started)
        return min(deadline - self.clock(), POLL)

    # -- admission -------------------------------------------------------------

    def try_acquire(self, pool: str, key: str, limit: int) -> Lease | None:
        return self.acquire(pool, key, limit, timeout=0)

    async def aacquire(self, pool: str, key: str, limit: int, *, timeout: float) -> Lease | None:
        """``acquire`` for async views: redis.asyncio, never blocking the loop."""
        self.pools[pool] = limit
        return await self.aio.acquire(pool, key, limit, timeout=timeout)

    def acquire(self, pool: str, key: str, limit: int, *, timeout: float) -> Lease | None:
        """A slot, waiting up to ``timeout`` seconds in the cluster-wide queue."""
        self.pools[pool] = limit
        started = self.clock()
        deadline = started + timeout
        if self.breaker.is_open:
            return self._fallback_wait(pool, key, limit, deadline)
        import redis

        keys, ident, wait = self.keys(pool, key), self.new_ident(), timeout > 0
        event = threading.Event() if wait else _NO_WAIT  # no wait: one attempt
        if wait:
            self.wakeups.add(keys.digest, event.set)
        call = self.acquire_call(keys, ident, limit, wait)
        admitted = False
        try:
            while True:
                try:
                    reply = self.calls("ACQUIRE", **self.with_releases(call))
                except redis.RedisError as exc:
                    self.failed(pool, exc)
                    return self._fallback_wait(pool, key, limit, deadline)
                turn = self.turn(reply, keys, ident, started, deadline)
                if not isinstance(turn, float):
                    admitted = True
                    return turn
                if turn <= 0:
                    return None
                event.wait(turn)
                event.clear()
        finally:
            if wait:
                self.wakeups.remove(keys.digest, event.set)
                if not admitted:
                    self._give_up(keys, ident)

    def _fallback_wait(self, pool: str, key: str, limit: int, deadline: float) -> Lease | None:
        while True:
            turn = self.fallback_turn(pool, key, limit, deadline)
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
            self.calls("GIVE_UP", **self.give_up_call(keys, ident))
        except redis.RedisError as exc:
            self.failed(None, exc)

    # -- release, renewal, reading -------------------------------------------

    def release(self, lease: ClusterLease) -> None:
        if not self.leases.close(lease):
            return
        if lease.lost or self.breaker.is_open:
            return  # Redis forgets it within the lease
        # Sent later, off this thread (so never blocking an event loop either).
        self.releases.add(lease.keys.base, lease.ident)

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
        live = self.leases.to_renew(now, self.lease)
        if not live:
            return
        args: list[str | int] = [int(self.lease * 1000), self._keep_ms()]
        for lease in live:
            args += [lease.keys.base, lease.ident]
        try:
            self.calls("RENEW", keys=[self._owner_key()], args=args)
        except redis.RedisError as exc:
            self.failed(None, exc)
            return
        for lease in live:
            lease.renewed = now

    def close(self) -> None:
        """Stop the background threads (tests, shutdown); leases left expire in Redis."""
        self.flush()
        self.releases.stop()
        self.heartbeat.stop()
        self.wakeups.stop()
        self.calls.close()
        self.client.close()

    def held(self) -> int:
        """Leases this process holds in Redis now."""
        return len(self.leases)

    def in_use(self, pool: str, key: str, limit: int) -> int:
        """Slots of ``key`` held cluster-wide (the fallback's count during an outage)."""
        import redis

        if not self.breaker.is_open:
            self.flush()
            try:
                return int(self.calls("IN_USE", keys=[self.keys(pool, key).k("h")], args=[]))
            except redis.RedisError as exc:
                self.failed(None, exc)
        if self.on_error == "local" and self._fallback is not None:
            return self._fallback().in_use(pool, key, limit)
        return 0

    def in_use_many(self, pools: list[str]) -> dict[str, int] | None:
        """The slots held cluster-wide of each pool, over all its keys, in one round trip.

        None while Redis cannot be reached (the breaker is open, or this call
        failed): the caller shows the pools as running on their fallback.
        """
        import redis

        if self.breaker.is_open:
            return None
        self.flush()
        pipe = self.client.pipeline(transaction=False)
        for pool in pools:
            self._scripts["IN_USE_POOL"](keys=[self._index(pool)], client=pipe)
        if not pools:
            pipe.ping()  # still ask: the answer says whether Redis is there
        try:
            replies = pipe.execute()[: len(pools)]
        except redis.RedisError as exc:
            self.failed(None, exc)
            return None
        return {pool: int(n) for pool, n in zip(pools, replies, strict=True)}

    def release_owner(self, owner: str) -> int:
        """Drop every lease of ``owner`` ("host:pid"), a process known to be dead."""
        return int(self.calls("RELEASE_OWNER", keys=[self._owner_key(owner)], args=[self.channel]))
