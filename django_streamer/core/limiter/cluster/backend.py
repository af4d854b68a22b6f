"""Cluster-scope pools: slots shared by every host through Redis. Plain Python, no Django.

:class:`ClusterBackend` implements the :class:`~.limiter.Backend` protocol
(``try_acquire``, ``in_use``) and adds its own waits, ``acquire`` and
``aacquire``, since a fair wait across hosts needs a queue in Redis rather than
the pool's per-process one (see ``scripts.py`` for the Lua).

Round trips: at most one at admission, at most one at release, and per process
one renewal of all its leases every ``lease / 3`` seconds. A release is
deferred (``releases.py``): it rides with the process's next admission (the
same EVALSHA), or, if none comes within ``release_delay`` seconds, a
background thread sends every pending release in one call. Until then the slot
still counts as held, which can only refuse, never over-admit. An admission of
a key whose release is still pending here takes that lease back with no round
trip at all (a hand-off), while Redis's last word on the key, less than
``REUSE_WINDOW`` old, was that nobody waits for it. A lease lives ``lease``
seconds without renewal, so a host that dies gives its slots back by then; a
gunicorn worker that dies gives them back at once through ``release_owner``.

While Redis cannot be reached (the breaker is open) no request talks to it:
``on_error`` says what happens instead (``fallback.py``); releases wait and go
once it answers again. After Redis restarted empty, nothing new is admitted for
one lease while every process adds its leases back (the epoch, ``scripts.py``;
``docs/cluster-recovery.md``). Counting and a dead worker's leases are in
``reading.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from .. import Backend, Lease
from . import reading, renewal
from . import scripts as lua
from .aio import AsyncSide
from .calls import Calls
from .fallback import OPEN_LEASE, Fallback
from .heartbeat import Breaker, Heartbeat, Wakeups
from .leases import ClusterLease, Keys, LeaseBook
from .releases import REUSE_WINDOW, Quiet, Releaser
from .releases import hand_off as take_back
from .sync import SyncSide

__all__ = ["OPEN_LEASE", "ClusterBackend"]

POLL = 1.0  # seconds between retries of a waiter that heard no wake-up
RELEASE_DELAY = 0.005  # seconds a release waits for an admission to ride with
KEYS_CACHED = 4096  # pool keys whose Redis names are remembered (cleared when full)
INDEX_CAP = 10_000  # pool keys a pool's Redis index keeps for the metrics (oldest dropped)
SCRIPTS = ("ACQUIRE", "RELEASE", "GIVE_UP", "RENEW", "RELEASE_OWNER", "IN_USE")


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
        reuse_window: float = REUSE_WINDOW,
        index_cap: int = INDEX_CAP,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.fallback = Fallback(on_error=on_error, backend=fallback, clock=clock)
        self.url = url
        self.lease = float(lease)
        self.on_error = on_error
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
        self.errors: dict[str, int] = {}  # failed admissions, by pool
        self._probe = probe
        self.release_delay = release_delay
        self.reuse_window = reuse_window
        self.index_cap = index_cap
        # The last epoch (scripts.py) seen: a process that saw one knows that a
        # Redis without one restarted empty. Still true in a forked child.
        self.epoch = ""
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
        self.sync = SyncSide(self)
        self.aio = AsyncSide(self)
        self.pools: dict[str, int] = {}  # pool -> limit, for the metrics
        # The parent's pending releases are the parent's to send.
        self.quiet = Quiet(window=self.reuse_window)
        self.releases = Releaser(
            send=self._send_releases,
            delay=self.release_delay,
            hold=lambda bases: self.quiet.left(bases, self.clock()),
        )
        self.handoffs = 0  # admissions that took a pending release back (tests, bench)
        self._keys: dict[tuple[str, str], Keys] = {}

    def _pubsub(self) -> object:
        import redis

        # Its own connection, without a read timeout: it waits for messages.
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        return client.pubsub(ignore_subscribe_messages=False)

    # -- shared pieces of the sync and async paths -----------------------------

    def keys(self, pool: str, key: str) -> Keys:
        found = self._keys.get((pool, key))
        if found is None:
            digest = hashlib.sha256(f"{pool}\0{key}".encode()).hexdigest()[:24]
            found = Keys(base=f"{self.prefix}{{{digest}}}", digest=digest, index=self.index(pool))
            if len(self._keys) >= KEYS_CACHED:
                self._keys.clear()  # per-client keys: do not grow without bound
            self._keys[(pool, key)] = found
        return found

    def index(self, pool: str) -> str:
        """The Redis key of ``pool``'s index of its pool keys."""
        return f"{self.prefix}pool:{hashlib.sha256(pool.encode()).hexdigest()[:24]}"

    def owner_key(self, owner: str | None = None) -> str:
        return f"{self.prefix}owner:{owner or self.owner}"

    def keep_ms(self) -> int:
        return int(max(self.lease, 3.0) * 3000)

    def epoch_keys(self) -> list[str]:
        """The Redis keys of the epoch and of its recovery window (``scripts.py``)."""
        return [f"{self.prefix}epoch", f"{self.prefix}epoch:recovering"]

    def acquire_call(self, keys: Keys, ident: str, limit: int, wait: bool) -> dict[str, Any]:
        """ACQUIRE's keys and arguments; each attempt appends the releases it carries."""
        args = [keys.base, ident, limit, int(self.lease * 1000), int(wait), self.keep_ms()]
        return {
            "keys": [self.owner_key(), keys.index, *self.epoch_keys()],
            "args": [*args, self.channel, self.epoch, self.index_cap],
        }

    @contextlib.contextmanager
    def carrying_releases(self, call: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """``call`` carrying every release pending in this process.

        Should the call raise (an error, a timeout, a cancelled task), Redis
        may not have run it: the releases it carried are sent again.
        """
        taken = self.releases.take()
        if not taken:
            yield call
            return
        try:
            yield {"keys": call["keys"], "args": call["args"] + taken}
        except BaseException:
            self.releases.resend(taken)
            raise

    def _send_releases(self, pairs: list[str]) -> None:
        if self.breaker.is_open:
            # Kept until Redis answers again (the heartbeat flushes them then):
            # dropped, they would fill their keys until their leases ran out.
            self.releases.keep(pairs)
            return
        import redis

        args = [self.channel, self.keep_ms(), *pairs]
        try:
            self.calls("RELEASE", keys=[self.owner_key()], args=args)
        except redis.RedisError as exc:
            self.releases.keep(pairs)
            self.failed(None, exc)

    def flush(self) -> None:
        """Send the pending releases now (the metrics read, tests, shutdown)."""
        self.releases.flush()

    def give_up_call(self, keys: Keys, ident: str) -> dict[str, Any]:
        return {"keys": [keys.k("q"), keys.k("e")], "args": [ident, self.channel, keys.digest]}

    def new_ident(self) -> str:
        return f"{self.owner}:{self._token}:{next(self._ids)}"

    def admitted(self, keys: Keys, ident: str, renewed: float, epoch: str) -> ClusterLease:
        lease = ClusterLease(self.release, keys, ident, renewed, epoch)
        self.leases.add(lease)
        self.heartbeat.ensure_running()
        return lease

    def hand_off(self, keys: Keys, limit: int) -> ClusterLease | None:
        """A pending release of ``keys`` taken back for this admission (``releases.py``)."""
        return take_back(self, keys, limit)

    def failed(self, pool: str | None, exc: BaseException) -> None:
        if pool is not None:
            self.errors[pool] = self.errors.get(pool, 0) + 1
            if self.on_failure is not None:
                self.on_failure(pool)
        self.breaker.failed(exc)
        self.heartbeat.ensure_running()
        self.heartbeat.poke()

    def turn(
        self, reply: Any, keys: Keys, ident: str, sent: float, deadline: float
    ) -> ClusterLease | float:
        """After one ACQUIRE sent at ``sent``: the lease, or seconds to wait (<= 0: give up).

        ``reply`` is (admitted 0/1, held, waiters queued for the key, Redis's epoch).
        """
        self.quiet.heard(keys.base, sent, reply[2], reply[1])
        epoch = reply[3].decode()
        if epoch != self.epoch:
            self.epoch = epoch
            if len(self.leases):  # Redis restarted empty: add ours back now
                self.heartbeat.poke()
        if reply[0]:
            return self.admitted(keys, ident, sent, epoch)  # expiry set after ``sent``
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
        return self.sync.acquire(pool, key, limit, timeout=timeout)

    # -- release, renewal ------------------------------------------------------

    def release(self, lease: ClusterLease) -> None:
        if not self.leases.close(lease):
            return
        if lease.lost:
            return  # Redis forgot it already
        # Sent later, off this thread (so never blocking an event loop either),
        # and while Redis cannot be reached, once it can again.
        self.releases.add(lease)

    def _beat(self) -> None:
        """The heartbeat's work: see :func:`.renewal.beat`."""
        renewal.beat(self)

    def close(self) -> None:
        """Stop the background threads (tests, shutdown); leases left expire in Redis."""
        self.flush()
        self.releases.stop()
        self.heartbeat.stop()
        self.wakeups.stop()
        self.calls.close()
        self.client.close()

    # -- reading (reading.py) --------------------------------------------------

    def held(self) -> int:
        """Leases this process holds in Redis now."""
        return len(self.leases)

    def in_use(self, pool: str, key: str, limit: int) -> int:
        return reading.in_use(self, pool, key, limit)

    def in_use_many(self, pools: list[str]) -> dict[str, tuple[int, int]] | None:
        return reading.in_use_many(self, pools)

    def release_owner(self, owner: str) -> int:
        return reading.release_owner(self, owner)
