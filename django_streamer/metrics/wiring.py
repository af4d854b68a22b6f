"""What plugs the metrics store into streams and limiter pools.

``AppConfig.ready()`` registers :func:`stream_recorder` and a
:class:`PoolRecorder`. Metrics never break a request: a store failure drops
the figures, is logged once per process and cause, and is counted.
"""

from __future__ import annotations

from typing import Any

from ..conf import conf
from ..core.limiter import Pool, PoolLease
from ..core.limiter.cluster.backend import ClusterBackend
from ..core.metrics import (
    StreamMetrics,
    check_name,
    record_admitted,
    record_backend_error,
    record_rejected,
    record_released,
)
from ..core.stream import Stream
from ..decorators import LimiterRecorder, Rejection
from .fleet import publisher
from .mirror import mirror
from .store import get_store

__all__ = ["PoolRecorder", "backend_error", "stream_recorder"]


def stream_recorder(stream: Stream) -> StreamMetrics | None:
    """The stream's metrics recorder; None (figures dropped) if the store fails.

    A name that cannot label figures (see
    :func:`~django_streamer.core.metrics.check_name`) is counted under ``other``.
    """
    if not conf.STREAMER_METRICS:
        return None
    store = get_store()
    try:
        mirror.start_once()
        publisher.start_once()
        try:
            name = check_name(stream.name)
        except ValueError as exc:
            store.report("stream name", exc)
            name = "other"
        return StreamMetrics(store, name, stream.path)
    except Exception as exc:
        store.report(f"recording a stream ({type(exc).__name__})", exc)
        return None


def _cluster(pool: Pool) -> int:
    """The pool's ``cluster`` figure: 1 for a cluster pool (the scrape reads Redis for it)."""
    return 1 if isinstance(pool.backend, ClusterBackend) else 0


class PoolRecorder(LimiterRecorder):
    """Limiter figures; like streams, a store failure drops them and is logged once."""

    def admitted(self, pool: Pool, lease: PoolLease) -> None:
        if conf.STREAMER_METRICS:
            store = get_store()
            try:
                record_admitted(store, pool.name, pool.limit, lease.waited, cluster=_cluster(pool))
            except Exception as exc:
                store.report(f"recording a limiter event ({type(exc).__name__})", exc)

    def rejected(self, pool: Pool, rejection: Rejection) -> None:
        # The rejection is counted on both the stream and the limiter row: a
        # rejected request has no stream yet, so its stream label is the
        # limiter's (pool's) name, as the README's metrics table says.
        if conf.STREAMER_METRICS:
            cluster = _cluster(pool)
            _safely(record_rejected, rejection.pool, rejection.pool, cluster=cluster)

    def released(self, pool: Pool, lease: PoolLease) -> None:
        if conf.STREAMER_METRICS:
            store = get_store()
            try:
                record_released(store, pool.name)
            except Exception as exc:
                store.report(f"recording a limiter event ({type(exc).__name__})", exc)


def backend_error(pool: str) -> None:
    """A cluster pool's admission failed to reach Redis: counted host-wide."""
    if conf.STREAMER_METRICS:
        _safely(record_backend_error, pool)


def _safely(record: Any, *args: Any, **kwargs: Any) -> None:
    store = get_store()
    try:
        record(store, *args, **kwargs)
    except Exception as exc:
        store.report(f"recording a limiter event ({type(exc).__name__})", exc)
