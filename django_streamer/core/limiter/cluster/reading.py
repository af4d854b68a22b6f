"""The reading side of a cluster backend: counts and a dead process's leases. No Django.

Never on a request's path: the metrics (``in_use_many`` once per scrape),
tests, and gunicorn's arbiter (``release_owner`` from ``child_exit``). Each
first sends the process's pending releases, so what it counts is current.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import scripts as lua

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

    None while Redis cannot be reached (the breaker is open, or this call
    failed): the caller shows the pools as running on their fallback.
    """
    import redis

    if backend.breaker.is_open:
        return None
    backend.flush()
    pipe = backend.client.pipeline(transaction=False)
    script = backend.client.register_script(lua.IN_USE_POOL)
    for pool in pools:
        script(keys=[backend.index(pool)], client=pipe)
    if not pools:
        pipe.ping()  # still ask: the answer says whether Redis is there
    try:
        replies = pipe.execute()[: len(pools)]
    except redis.RedisError as exc:
        backend.failed(None, exc)
        return None
    return {pool: (int(n), int(most)) for pool, (n, most) in zip(pools, replies, strict=True)}


def release_owner(backend: ClusterBackend, owner: str) -> int:
    """Drop every lease of ``owner`` ("host:pid"), a process known to be dead."""
    keys = [backend.owner_key(owner)]
    return int(backend.calls("RELEASE_OWNER", keys=keys, args=[backend.channel]))
