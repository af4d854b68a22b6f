"""The heartbeat's work for a cluster backend: probe Redis, renew every lease. No Django.

Once every ``lease / 3`` seconds per process (``heartbeat.Heartbeat`` calls it),
whatever the number of streams: while the breaker is open it probes Redis and
closes the breaker when it answers; then it renews every live lease of the
process in one round trip. A lease Redis no longer holds (it expired there
before this renewal arrived) is lost, logged once and never handed on; after
Redis restarted empty (a new epoch, ``scripts.py``) every listed lease of an
earlier epoch is added back, unless released since. Releases kept while Redis
could not be reached go as soon as it answers.
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
        backend.flush()  # the releases kept meanwhile
    now = backend.clock()
    live = backend.leases.to_renew(now, backend.lease)
    if not live:
        return
    args: list[str | int] = [int(backend.lease * 1000), backend.keep_ms()]
    for lease in live:
        args += [lease.keys.base, lease.ident, lease.epoch]
    keys = [backend.owner_key(), *backend.epoch_keys()]
    try:
        epoch, gone = backend.calls("RENEW", keys=keys, args=args)
    except redis.RedisError as exc:
        backend.failed(None, exc)
        return
    backend.epoch = epoch = epoch.decode()
    gone = {ident.decode() for ident in gone}
    for lease in live:
        if lease.ident in gone:
            backend.leases.lose(lease, why="expired in Redis before its renewal")
        else:
            lease.renewed, lease.epoch = now, epoch
