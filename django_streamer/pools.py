"""The project's pools: one per (scope, name), on backends made from settings."""

from __future__ import annotations

import threading
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured

from .conf import state_dir
from .core.limiter import Backend, HostBackend, Pool, ProcessBackend
from .core.statedir import UnsafeStateError
from .slots import Slot

__all__ = ["backend_for", "count_busiest_keys", "get_pool", "limiter_dir"]

SCOPES = ("process", "host", "cluster")

# The caches' one owner; made on first use, never at import.
_lock = threading.Lock()
_process_backend: list[ProcessBackend] = []
_host_backends: dict[str, HostBackend] = {}
_pools: dict[tuple[str, int, str], Pool] = {}


def limiter_dir() -> tuple[str, str | None]:
    """The host pools' directory, and where its privacy checks start."""
    return state_dir("STREAMER_LIMITER_DIR", "pools")


def backend_for(scope: str) -> Backend:
    if scope == "process":
        with _lock:
            if not _process_backend:
                _process_backend.append(ProcessBackend())
            return _process_backend[0]
    if scope == "cluster":
        from . import cluster

        return cluster.get_backend()
    if scope != "host":
        raise ValueError(f"scope {scope!r} has no backend; use one of {SCOPES}")
    directory, owned_from = limiter_dir()
    with _lock:
        backend = _host_backends.get(directory)
        if backend is None:
            backend = _host_backends[directory] = _host_backend(directory, owned_from)
    return backend


def _host_backend(directory: str, owned_from: str | None) -> HostBackend:
    setting = "STREAMER_LIMITER_DIR" if owned_from is None else "the default limiter directory"
    try:
        return HostBackend(directory, owned_from=owned_from)
    except UnsafeStateError as exc:
        raise ImproperlyConfigured(f"{setting} is unsafe: {exc}") from exc
    except OSError as exc:
        raise ImproperlyConfigured(
            f"{setting} {directory!r} cannot be made or used: {exc.strerror or exc}. "
            "Point STREAMER_LIMITER_DIR at a directory the server's user can create."
        ) from exc


def get_pool(scope: str, name: str, limit: int) -> Pool:
    """The pool for (scope, name), made on first use; backends resolve settings then.

    Its leases are :class:`~django_streamer.slots.Slot`: the limiter recorders
    hear of each admission and release.
    """
    backend = backend_for(scope)
    where = id(backend)  # backends are kept for the life of the process
    with _lock:
        pool = _pools.get((scope, where, name))
        if pool is None:
            pool = _pools[(scope, where, name)] = Pool(
                name=name, limit=limit, backend=backend, lease_class=Slot
            )
        elif pool.limit != limit:
            raise ValueError(
                f"pool {name!r} ({scope}) is used with limit {pool.limit} and {limit}; "
                "views sharing a name must share a limit"
            )
        return pool


def count_busiest_keys(pools: dict[str, dict[str, Any]]) -> None:
    """Add ``busiest`` (the slots its busiest key holds, host-wide) to each host pool
    of a snapshot's ``pools``; the limit applies per key, so this is what meets it.

    Cluster pools get theirs from Redis at scrape time (``cluster.scrape``);
    process pools have none here, their keys being each process's own.
    """
    host = [(name, int(e.get("limit", 0))) for name, e in pools.items() if e.get("host")]
    if not host:
        return
    backend = cast(HostBackend, backend_for("host"))
    for name, limit in host:
        pools[name]["busiest"] = float(backend.busiest(name, limit))
