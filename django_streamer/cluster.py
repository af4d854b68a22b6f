"""Django wiring of cluster-scope pools: settings to a Redis backend, and its waits.

The backend (``core/limiter/cluster/``) is made on first use from
``STREAMER_REDIS_URL``, ``STREAMER_CLUSTER_LEASE`` and
``STREAMER_CLUSTER_ON_ERROR``; its fallback is the host-scope backend, so with
``"local"`` each host keeps the same limit for itself while Redis is away.
"""

from __future__ import annotations

import threading
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured

from .conf import conf, redis_prefix
from .core.limiter import Backend, Pool, PoolLease
from .core.limiter.cluster.backend import ClusterBackend

_lock = threading.Lock()
_backends: dict[tuple[str, float, str, str], ClusterBackend] = {}


def settings_errors() -> list[str]:
    """What is wrong with the cluster settings, one message each (for checks and first use)."""
    names = (
        "STREAMER_REDIS_URL",
        "STREAMER_CLUSTER_LEASE",
        "STREAMER_CLUSTER_ON_ERROR",
        "STREAMER_REDIS_PREFIX",
    )
    return [problem for problem in map(conf.problem, names) if problem is not None]


def get_backend() -> ClusterBackend:
    """The backend for the current settings, made on first use."""
    url = conf.STREAMER_REDIS_URL
    if not url:
        raise ImproperlyConfigured(
            "limit_concurrency(scope='cluster') needs STREAMER_REDIS_URL "
            "(e.g. 'redis://127.0.0.1:6379/0')"
        )
    errors = settings_errors()
    if errors:
        raise ImproperlyConfigured("; ".join(errors))
    config = (url, conf.STREAMER_CLUSTER_LEASE, conf.STREAMER_CLUSTER_ON_ERROR, redis_prefix())
    backend = _backends.get(config)
    if backend is not None:
        return backend
    try:
        import redis  # noqa: F401
    except ImportError:
        raise ImproperlyConfigured(
            "scope='cluster' needs redis-py: pip install 'django-streamer[redis]'"
        ) from None
    with _lock:
        backend = _backends.get(config)
        if backend is None:
            backend = _backends[config] = ClusterBackend(
                url,
                lease=config[1],
                on_error=config[2],
                prefix=config[3],
                fallback=_host_backend,
                on_failure=_count_failure,
            )
    return backend


def _count_failure(pool: str) -> None:
    from .metrics.wiring import backend_error  # the metrics import the limiter: not at import

    backend_error(pool)


def _host_backend() -> Backend:
    from .pools import backend_for

    return backend_for("host")


def acquire(pool: Pool, key: str, *, timeout: float) -> PoolLease | None:
    """A slot of a cluster pool, waiting up to ``timeout`` (0: do not wait)."""
    backend = cast(ClusterBackend, pool.backend)
    started = pool.clock()
    inner = backend.acquire(pool.name, key, pool.limit, timeout=timeout)
    return None if inner is None else pool.adopt(key, inner, waited=pool.clock() - started)


async def aacquire(pool: Pool, key: str, *, timeout: float) -> PoolLease | None:
    backend = cast(ClusterBackend, pool.backend)
    started = pool.clock()
    inner = await backend.aacquire(pool.name, key, pool.limit, timeout=timeout)
    return None if inner is None else pool.adopt(key, inner, waited=pool.clock() - started)


def release_dead_worker(pid: int) -> int:
    """Drop the leases of a worker of this host that died (gunicorn's ``child_exit``)."""
    if not conf.STREAMER_REDIS_URL:
        return 0
    backend = get_backend()
    return backend.release_owner(f"{backend.owner.rsplit(':', 1)[0]}:{pid}")


def scrape(pools: dict[str, dict[str, Any]]) -> None:
    """Overlay the cluster pools' figures on a host snapshot's ``pools``, at scrape time.

    Pools the host's processes marked as cluster pools (the store's ``cluster``
    figure) get ``in_use`` counted cluster-wide, over all their keys, and
    ``busiest`` (the busiest key's slots), in one Redis round trip, and
    ``fallback`` 1 when Redis cannot be reached from here.
    """
    marked = sorted(name for name, entry in pools.items() if entry.get("cluster"))
    if not marked or not conf.STREAMER_REDIS_URL:
        return
    held = get_backend().in_use_many(marked)
    for name in marked:
        pools[name]["fallback"] = 1.0 if held is None else 0.0
        if held is not None:
            pools[name]["in_use"], pools[name]["busiest"] = map(float, held[name])


def figures() -> dict[str, dict[str, float]]:
    """Per cluster pool this process has used: the numbers for the metrics collector.

    ``in_use``: slots held cluster-wide (of the pool's unkeyed slot set: keyed
    pools would need a scan); ``backend_errors``: Redis calls that failed at
    admission, in this process; ``fallback``: 1 while the pool runs on its
    fallback (the breaker is open), else 0.
    """
    found: dict[str, dict[str, float]] = {}
    for backend in list(_backends.values()):
        fallback = float(backend.breaker.is_open)
        for pool, limit in list(backend.pools.items()):
            found[pool] = {
                "in_use": float(backend.in_use(pool, "", limit)),
                "backend_errors": float(backend.errors.get(pool, 0)),
                "fallback": fallback,
            }
    return found
