"""The reading side of a cluster backend: counts and a dead process's leases. No Django.

Never on a request's path: the metrics (``in_use_many`` once per scrape),
tests, and gunicorn's arbiter (``release_owner`` from ``child_exit``). Each
first sends the process's pending releases, so what it counts is current.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import scripts as lua

PAGE = 1000  # pool keys one IN_USE_POOL call reads: Redis serves others between pages

if TYPE_CHECKING:
    from .backend import ClusterBackend


def in_use(backend: ClusterBackend, pool: str, key: str, limit: int) -> int:
    """Slots of ``key`` held cluster-wide (the fallback's count during an outage)."""
    import redis

    if not backend.breaker.is_open:
        backend.flush()
        try:
            h = backend.keys(pool, key).k("h")
            return int(backend.calls("IN_USE", keys=[h], args=[]))
        except redis.RedisError as exc:
            backend.failed(None, exc)
    return backend.fallback.in_use(pool, key, limit)


def in_use_many(backend: ClusterBackend, pools: list[str]) -> dict[str, tuple[int, int]] | None:
    """Slots held cluster-wide of each pool, over all its keys and by its busiest key,
    in one round trip.

    One script call per :data:`PAGE` of a pool's index (at most
    ``backend.index_cap`` keys), so no single call holds Redis up for long.
    None while Redis cannot be reached (the breaker is open, or this call
    failed): the caller shows the pools as running on their fallback.
    """
    import redis

    if backend.breaker.is_open:
        return None
    backend.flush()
    pipe = backend.client.pipeline(transaction=False)
    script = backend.client.register_script(lua.IN_USE_POOL)
    pages = range(0, backend.index_cap, PAGE)
    for pool in pools:
        for first in pages:
            last = min(first + PAGE, backend.index_cap) - 1
            script(keys=[backend.index(pool)], args=[first, last], client=pipe)
    pipe.ping()  # an answer even with no pool: it says whether Redis is there
    try:
        replies = pipe.execute()[:-1]
    except redis.RedisError as exc:
        backend.failed(None, exc)
        return None
    per_pool = len(pages)
    counts = {}
    for i, pool in enumerate(pools):
        mine = replies[i * per_pool : (i + 1) * per_pool]
        counts[pool] = (sum(int(n) for n, _ in mine), max(int(most) for _, most in mine))
    return counts


def release_owner(backend: ClusterBackend, owner: str) -> int:
    """Drop every lease of ``owner`` ("host:pid"), a process known to be dead."""
    keys = [backend.owner_key(owner), backend.epoch_keys()[0]]
    released, epoch = backend.calls("RELEASE_OWNER", keys=keys, args=[backend.channel])
    backend.epoch = epoch.decode() or backend.epoch  # inherited by the workers forked next
    return int(released)
