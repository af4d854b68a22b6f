"""The heartbeat's work for a cluster backend: probe Redis, renew every lease. No Django.

Once every ``lease / 3`` seconds per process (``heartbeat.Heartbeat`` calls it),
whatever the number of streams: while the breaker is open it probes Redis and
closes the breaker when it answers; then it renews every live lease of the
process in one round trip. A lease Redis no longer holds (it expired there
before this renewal arrived) is lost, logged once and never handed on; after
Redis restarted empty (``renew_all``) every listed lease is added back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backend import ClusterBackend


def beat(backend: ClusterBackend) -> None:
    """Probe while the breaker is open; renew every live lease in one call."""
    import redis

    if backend.breaker.is_open:
        try:
            backend.client.ping()
        except redis.RedisError:
            return
        backend.breaker.recovered()
    now = backend.clock()
    live = backend.leases.to_renew(now, backend.lease)
    renew_all, backend.renew_all = backend.renew_all, False
    if not live:
        return
    args: list[str | int] = [int(backend.lease * 1000), backend.keep_ms(), int(renew_all)]
    for lease in live:
        args += [lease.keys.base, lease.ident]
    try:
        gone = backend.calls("RENEW", keys=[backend.owner_key()], args=args)
    except redis.RedisError as exc:
        backend.renew_all = backend.renew_all or renew_all
        backend.failed(None, exc)
        return
    gone = {ident.decode() for ident in gone}
    for lease in live:
        if lease.ident in gone:
            backend.leases.lose(lease, why="expired in Redis before its renewal")
        else:
            lease.renewed = now
