"""What plugs the metrics store into streams and limiter pools.

``AppConfig.ready()`` registers :func:`stream_recorder` and a
:class:`PoolRecorder`. Metrics never break a request: a store failure drops
the figures, is logged once per process and cause, and is counted.
"""

from __future__ import annotations

from typing import Any

from ..conf import conf
from ..core.limiter import HostBackend, Pool, PoolLease
from ..core.limiter.cluster.backend import ClusterBackend
from ..core.metrics import (
    Store,
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
from .store import get_store, stores

__all__ = ["PoolRecorder", "backend_error", "stream_recorder"]


def stream_recorder(stream: Stream) -> StreamMetrics | None:
    """The stream's metrics recorder; None (figures dropped) if the store fails.

    A name that cannot label figures (see
    :func:`~django_streamer.core.metrics.check_name`) is counted under ``other``.
    """
    if not conf.STREAMER_METRICS:
        return None
    # Per stream, while no setting changed: comparisons only, no calls (what
    # get_store() and the two start_once() would do).
    generation = conf.generation
    current = stores.current
    store = current[2] if current is not None and current[0] == generation else get_store()
    try:
        if mirror.checked != generation or publisher.checked != generation:
            mirror.start_once()
            publisher.start_once()
        name = stream.name
        if name.__class__ is not str or name not in _checked_names:
            name = _stream_label(store, name)
        return StreamMetrics(store, name, stream.path)
    except Exception as exc:
        store.report(f"recording a stream ({type(exc).__name__})", exc)
        return None


# Stream names check_name() accepted: names repeat, so each is checked once.
# Bounded like the store's caches; whether a name gets a row is the store's.
_checked_names: set[str] = set()


def _stream_label(store: Store, name: object) -> str:
    """``name`` once checked, or ``other`` (and a store failure) if it cannot label figures."""
    try:
        label = check_name(name)
    except ValueError as exc:
        store.report("stream name", exc)
        return "other"
    if label.__class__ is str:
        if len(_checked_names) >= 1024:
            _checked_names.clear()
        _checked_names.add(label)
    return label


def _cluster(pool: Pool) -> int:
    """The pool's ``cluster`` figure: 1 for a cluster pool (the scrape reads Redis for it)."""
    return 1 if isinstance(pool.backend, ClusterBackend) else 0


class PoolRecorder(LimiterRecorder):
    """Limiter figures; like streams, a store failure drops them and is logged once."""

    def admitted(self, pool: Pool, lease: PoolLease) -> None:
        if conf.STREAMER_METRICS:
            store = get_store()
            try:
                host = 1 if isinstance(pool.backend, HostBackend) else 0
                record_admitted(store, pool.name, pool.limit, lease.waited, _cluster(pool), host)
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
