"""The dashboard's fleet view: every host's figures, through Redis.

With ``STREAMER_FLEET`` on (and ``STREAMER_REDIS_URL`` set), one process per
host (elected by a lock file in the metrics directory, as the multiprocess
mirror is) publishes the
host's snapshot every :data:`INTERVAL` seconds. Each publication is stamped
with Redis's clock, so hosts' clocks need not agree, and a host unheard for
:data:`EXPIRY` seconds is dropped by the next read. The dashboard's JSON then
sums every host's figures (:func:`fleet_json`); Prometheus stays per host.
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured

from ..conf import conf, redis_prefix
from ..core.metrics import Snapshot
from ..core.metrics.layout import MAXIMA
from ..extras import require
from .dashboard import RateTracker, rates, render_json
from .elected import ElectedThread, elect, open_election_lock
from .published import build, parse
from .store import read_snapshot

__all__ = [
    "EXPIRY",
    "INTERVAL",
    "Publisher",
    "elect",
    "fleet_json",
    "host_name",
    "keys",
    "open_lock",
    "publish",
    "publisher",
]

log = logging.getLogger("django_streamer")
INTERVAL = 1.0
EXPIRY = 5.0  # seconds a host stays listed after its last publication
TIMEOUT = 0.25  # a dashboard poll or a publication never waits longer on Redis
NO_URL = "STREAMER_FLEET is on but STREAMER_REDIS_URL is not set"

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
# KEYS: snapshots, seen. ARGV: host, snapshot, keep ms (the keys, if every host stops).
PUBLISH = (
    _NOW
    + """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return now
"""
)
# KEYS: snapshots, seen. ARGV: expiry ms. Drops hosts unheard for that long;
# returns {now, host, last seen, snapshot, host, ...}.
READ = (
    _NOW
    + """
local cutoff = now - tonumber(ARGV[1])
for _, host in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff)) do
  redis.call('HDEL', KEYS[1], host)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cutoff)
local out = {now}
local seen = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
for i = 1, #seen, 2 do
  out[#out + 1] = seen[i]
  out[#out + 1] = seen[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[1], seen[i]) or ''
end
return out
"""
)


def keys() -> tuple[str, str]:
    """The hash of snapshots (host -> JSON) and the sorted set of when Redis last heard
    each host (ms), under this deployment's prefix (:func:`~django_streamer.conf.redis_prefix`)."""
    prefix = redis_prefix()
    return f"{prefix}{{fleet}}:snapshots", f"{prefix}{{fleet}}:seen"


def host_name() -> str:
    return conf.STREAMER_FLEET_HOST or socket.gethostname()


_clients: dict[str, Any] = {}


def _client(url: str) -> Any:
    """A client with short timeouts and no retries; redis-py reconnects after a fork."""
    client = _clients.get(url)
    if client is None:
        redis = require("redis", feature="the fleet view (STREAMER_FLEET)")
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = _clients[url] = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT, retry=Retry(NoBackoff(), 0)
        )
    return client


# -- publishing ---------------------------------------------------------------------------


def publish(url: str, tracker: RateTracker) -> None:
    """Publish this host's snapshot once (the elected process calls it every second)."""
    snap = read_snapshot()
    body = json.dumps(build(snap, tracker.active(snap)))
    keep = int(EXPIRY * 1000 * 12)
    _client(url).eval(PUBLISH, 2, *keys(), host_name(), body, keep)


class Publisher(ElectedThread):
    """Publishes this host's snapshot every second from the host's elected process."""

    thread_name = "django-streamer-fleet"
    lock_name = ".fleet.lock"
    interval = INTERVAL
    what = "the fleet publisher (this host's figures to Redis)"

    def __init__(self) -> None:
        super().__init__()
        self.tracker = RateTracker()

    def target(self) -> str | None:
        return (conf.STREAMER_REDIS_URL or None) if conf.STREAMER_FLEET else None

    def tick(self, target: str) -> None:
        publish(target, self.tracker)

    def reset(self) -> None:
        super().reset()
        self.tracker = RateTracker()


def open_lock() -> int:
    return open_election_lock(Publisher.lock_name)


publisher = Publisher()


# -- reading ------------------------------------------------------------------------------


Host = tuple[str, float, dict[str, Any]]  # name, seconds since Redis heard it, snapshot


def _hosts(url: str) -> tuple[list[Host], list[str]]:
    """Every listed host with a readable snapshot, and the names of the others."""
    reply = _client(url).eval(READ, 2, *keys(), int(EXPIRY * 1000))
    now = float(reply[0])
    found: list[Host] = []
    unreadable: list[str] = []
    for i in range(1, len(reply), 3):
        name, seen, body = reply[i].decode(errors="replace"), float(reply[i + 1]), reply[i + 2]
        raw = parse(body) if body else None
        if raw is None:
            unreadable.append(name)
        else:
            found.append((name, max(now - seen, 0.0) / 1000, raw))
    return found, unreadable


def _merge(into: dict[str, dict[str, Any]], rows: dict[str, dict[str, Any]]) -> None:
    for name, entry in rows.items():
        target = into.setdefault(name, {})
        for figure, value in entry.items():
            old = target.get(figure)
            if isinstance(value, list):
                old_list = old if isinstance(old, list) else [0.0] * len(value)
                target[figure] = [a + b for a, b in zip(old_list, value, strict=False)]
            elif figure in MAXIMA:
                target[figure] = max(float(old or 0.0), float(value))
            else:
                target[figure] = float(old or 0.0) + float(value)


def _row(name: str, age: float, raw: dict[str, Any]) -> dict[str, Any]:
    active = cast(list[dict[str, Any]], raw["active"])
    return {
        "host": name,
        "processes": raw["processes"],
        "active": sum(int(e.get("active", 0)) for e in raw["streams"].values()),
        "bytes_per_second": sum(a["bytes_per_second"] for a in active),
        "last_seen": age,
    }


def fleet_json(snap: Snapshot) -> dict[str, Any]:
    """The dashboard's JSON over every host: fleet totals, ``hosts``, every active stream.

    This host's figures are read now rather than taken from Redis. With Redis
    unreachable it is this host alone, and ``fleet`` says why.
    """
    publisher.start_once()  # a host with no stream yet is listed once its dashboard is read
    me = host_name()
    own = build(snap, [{**a, "host": me} for a in rates.active(snap)])
    try:
        if not conf.STREAMER_REDIS_URL:
            raise ImproperlyConfigured(NO_URL)  # check E028 says so too
        listed, unreadable = _hosts(conf.STREAMER_REDIS_URL)
        others = [h for h in listed if h[0] != me]
        problem = None
    except Exception as exc:  # the dashboard shows this host rather than fail
        others, unreadable, problem = [], [], f"unavailable: {type(exc).__name__}: {exc}"
    hosts = [(me, 0.0, own), *sorted(others, key=lambda h: h[0])]
    merged = Snapshot(taken_at=snap.taken_at)
    active: list[dict[str, Any]] = []
    for name, _, raw in hosts:
        _merge(merged.streams, raw["streams"])
        _merge(merged.pools, raw["pools"])
        merged.processes += int(raw["processes"])
        merged.active_hidden += int(raw["active_hidden"])
        merged.store_errors += int(raw["store_errors"])
        active += [{**a, "host": name} for a in raw["active"]]
    body = render_json(merged, sorted(active, key=lambda a: cast(float, a["started"])))
    body["hosts"] = [_row(name, age, raw) for name, age, raw in hosts]
    body["fleet"] = problem
    body["unreadable"] = sorted(set(unreadable) - {me})  # hosts whose snapshot was skipped
    return body
