"""The Prometheus collector: the host-wide store as metric families.

The families are a table (:data:`STREAM_FAMILIES`, :data:`POOL_FAMILIES`):
adding a figure is adding a row. The README's "Prometheus names" table lists
what this serves; tests/test_metrics.py checks every name is served.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..core.metrics import DURATION_BUCKETS, OUTCOMES, TTFB_BUCKETS, WAIT_BUCKETS, Snapshot
from .store import read_snapshot

__all__ = [
    "POOL_FAMILIES",
    "STREAM_FAMILIES",
    "Family",
    "StreamerCollector",
    "collector",
    "register_with_prometheus",
    "registration",
    "render",
]

PREFIX = "django_streamer_"


@dataclass(frozen=True)
class Family:
    """One metric family: its kind, name and help, and the store figure it shows."""

    kind: str  # "counter", "gauge" or "histogram"
    name: str
    documentation: str
    figure: str
    buckets: tuple[float, ...] = ()  # a histogram's upper bounds
    only_where_known: bool = False  # no sample for a row without the figure (not a 0)


STREAM_FAMILIES = (
    Family("counter", "streams_started", "Streams started.", "started"),
    Family("gauge", "streams_active", "Streams active now.", "active"),
    Family("counter", "streams_rejected", "Requests the limiter turned away.", "rejected"),
    Family("counter", "bytes", "Bytes handed to the server.", "bytes"),
    Family(
        "counter",
        "bytes_uncompressed",
        "Bytes before compression, of the streams that were compressed.",
        "bytes_uncompressed",
    ),
    Family(
        "counter",
        "bytes_compressed",
        "Bytes handed to the server, of the streams that were compressed.",
        "bytes_compressed",
    ),
    Family("counter", "chunks", "Chunks handed to the server.", "chunks"),
    Family("gauge", "chunk_size_max_bytes", "Largest chunk sent.", "chunk_max"),
    Family(
        "histogram",
        "time_to_first_byte_seconds",
        "From the response's creation to its first chunk.",
        "ttfb",
        TTFB_BUCKETS,
    ),
    Family(
        "histogram",
        "stream_duration_seconds",
        "From the response's creation to the stream's end.",
        "duration",
        DURATION_BUCKETS,
    ),
)
POOL_FAMILIES = (
    Family(
        "gauge",
        "limiter_in_use",
        "Slots held now over all the pool's keys (cluster pools: cluster-wide).",
        "in_use",
    ),
    Family(
        "gauge",
        "limiter_limit",
        "Slots per key: the limit applies to each key on its own (process scope: per process).",
        "limit",
    ),
    Family(
        "gauge",
        "limiter_busiest_key_in_use",
        "Slots held now by the pool's busiest key, what limiter_limit caps (host and cluster "
        "pools).",
        "busiest",
        only_where_known=True,
    ),
    Family("counter", "limiter_admitted", "Requests given a slot.", "admitted"),
    Family("counter", "limiter_rejected", "Requests turned away.", "rejected"),
    Family(
        "counter",
        "limiter_backend_errors",
        "Cluster pools: admissions that could not reach Redis.",
        "backend_errors",
    ),
    Family(
        "gauge",
        "limiter_fallback",
        "Cluster pools: 1 while Redis cannot be reached and STREAMER_CLUSTER_ON_ERROR applies.",
        "fallback",
    ),
    Family(
        "histogram", "limiter_wait_seconds", "Time spent waiting for a slot.", "wait", WAIT_BUCKETS
    ),
)


def _num(entry: dict[str, Any], figure: str) -> float:
    return float(entry.get(figure, 0.0))


def _histogram(entry: dict[str, Any], family: Family) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) pairs and the sum, from per-bucket counts."""
    counts = entry.get(f"{family.figure}_buckets") or [0.0] * (len(family.buckets) + 1)
    cumulative, total = [], 0.0
    for count in counts:
        total += count
        cumulative.append(total)
    labels = [*(repr(float(b)) for b in family.buckets), "+Inf"]
    return list(zip(labels, cumulative, strict=True)), _num(entry, f"{family.figure}_sum")


def _families(
    table: tuple[Family, ...], label: str, rows: dict[str, dict[str, Any]]
) -> Iterator[Any]:
    """One metric family per row of ``table``, one sample per name in ``rows``."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    kinds = {
        "counter": CounterMetricFamily,
        "gauge": GaugeMetricFamily,
        "histogram": HistogramMetricFamily,
    }
    for family in table:
        metric = kinds[family.kind](PREFIX + family.name, family.documentation, labels=[label])
        for name, entry in sorted(rows.items()):
            if family.only_where_known and family.figure not in entry:
                continue
            if family.kind == "histogram":
                metric.add_metric([name], *_histogram(entry, family))
            else:
                metric.add_metric([name], _num(entry, family.figure))
        yield metric


def _finished(snap: Snapshot) -> Any:
    from prometheus_client.core import CounterMetricFamily

    finished = CounterMetricFamily(
        PREFIX + "streams_finished",
        "Streams finished, by outcome.",
        labels=["stream", "outcome"],
    )
    for name, entry in sorted(snap.streams.items()):
        for outcome in OUTCOMES:
            finished.add_metric([name, outcome], _num(entry, outcome))
    return finished


def _store_health(snap: Snapshot) -> Iterator[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    yield CounterMetricFamily(
        PREFIX + "store_errors",
        "Metrics store failures (figures dropped).",
        value=snap.store_errors,
    )
    yield GaugeMetricFamily(
        PREFIX + "streams_active_unlisted",
        "Active streams the active-streams table had no room for.",
        value=snap.active_hidden,
    )


class StreamerCollector:
    """A prometheus_client collector reading the host-wide store."""

    def describe(self) -> list[Any]:
        return []  # unchecked: names are documented, and reading the store costs I/O

    def collect(self) -> Iterator[Any]:
        snap = read_snapshot()
        from ..cluster import scrape  # the cluster wiring imports the limiter: not at import

        scrape(snap.pools)
        yield from _families(STREAM_FAMILIES, "stream", snap.streams)
        yield _finished(snap)
        yield from _families(POOL_FAMILIES, "limiter", snap.pools)
        yield from _store_health(snap)


collector = StreamerCollector()


class _Registration:
    """The registries our collector was added to, so it is added to each once."""

    def __init__(self) -> None:
        self.registries: list[Any] = []
        self.lock = threading.Lock()

    def add(self, registry: Any) -> None:
        with self.lock:
            if any(r is registry for r in self.registries):
                return
            registry.register(collector)
            self.registries.append(registry)

    def reset(self) -> None:
        """Take the collector out of every registry it was added to."""
        with self.lock:
            for registry in self.registries:
                registry.unregister(collector)
            self.registries.clear()


registration = _Registration()


def register_with_prometheus() -> None:
    """Add our collector to prometheus_client's global registry, once.

    That registry is what django-prometheus's ``/metrics`` serves outside
    prometheus_client's multiprocess mode; in that mode, see
    :func:`~django_streamer.metrics.mirror.write_multiprocess_mirror`.
    """
    try:
        from prometheus_client import REGISTRY
    except ImportError:
        return
    registration.add(REGISTRY)


def render(openmetrics: bool) -> tuple[bytes, str]:
    """The endpoint's body and content type, in the text or OpenMetrics format."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    if openmetrics:
        from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(registry), CONTENT_TYPE_LATEST  # type: ignore[no-untyped-call]
    from prometheus_client.exposition import CONTENT_TYPE_LATEST as TEXT
    from prometheus_client.exposition import generate_latest as text

    return text(registry), TEXT
