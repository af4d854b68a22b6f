"""The metrics registry: wiring the store to streams and pools, and reading it out.

Nothing here runs at import. ``AppConfig.ready()`` registers the recorders;
the store's directory is created on the first stream.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

from django.core.exceptions import ImproperlyConfigured

from .conf import conf, state_dir
from .core.limiter import Pool, PoolLease
from .core.metrics import (
    DURATION_BUCKETS,
    TTFB_BUCKETS,
    WAIT_BUCKETS,
    Snapshot,
    Store,
    StreamMetrics,
    check_name,
    record_admitted,
    record_rejected,
    record_released,
)
from .core.statedir import UnsafeStateError, open_private_file
from .core.stream import Stream
from .decorators import LimiterRecorder, Rejection

_stores: dict[tuple[str, int], Store] = {}
_current: list[Any] = []  # [(settings it was made for), store]: the common case, no lock
_lock = threading.Lock()


def get_store() -> Store:
    key = (conf.STREAMER_METRICS_DIR, conf.STREAMER_METRICS_MAX_NAMES)
    current = _current
    if current and current[0] == key:
        return cast(Store, current[1])
    directory, owned_from = state_dir("STREAMER_METRICS_DIR", "metrics")
    with _lock:
        store = _stores.get((directory, key[1]))
        if store is None:
            store = Store(directory, max_names=key[1], owned_from=owned_from)
            _stores[(directory, key[1])] = store
        _current[:] = [key, store]
        return store


def stream_recorder(stream: Stream) -> StreamMetrics | None:
    """The stream's metrics recorder; None (figures dropped) if the store fails.

    Metrics never break a request: a failure is logged once per process and
    cause, and counted. A name that cannot label figures (see
    :func:`~django_streamer.core.metrics.check_name`) is counted under ``other``.
    """
    if not conf.STREAMER_METRICS:
        return None
    store = get_store()
    try:
        if _mirror_checked[0] != os.getpid():
            ensure_mirror()
        try:
            name = check_name(stream.name)
        except ValueError as exc:
            store.report("stream name", exc)
            name = "other"
        return StreamMetrics(store, name, stream.path)
    except Exception as exc:
        store.report(f"recording a stream ({type(exc).__name__})", exc)
        return None


class PoolRecorder(LimiterRecorder):
    """Limiter figures; like streams, a store failure drops them and is logged once."""

    def admitted(self, pool: Pool, lease: PoolLease) -> None:
        if conf.STREAMER_METRICS:
            _safely(record_admitted, pool.name, pool.limit, lease.waited)

    def rejected(self, pool: Pool, rejection: Rejection) -> None:
        # The rejection is counted on both the stream and the limiter row: a
        # rejected request has no stream yet, so its stream label is the
        # limiter's (pool's) name, as the README's metrics table says.
        if conf.STREAMER_METRICS:
            _safely(record_rejected, rejection.pool, rejection.pool)

    def released(self, pool: Pool, lease: PoolLease) -> None:
        if conf.STREAMER_METRICS:
            _safely(record_released, pool.name)


def _safely(record: Any, *args: Any) -> None:
    store = get_store()
    try:
        record(store, *args)
    except Exception as exc:
        store.report(f"recording a limiter event ({type(exc).__name__})", exc)


def read_snapshot() -> Snapshot:
    """The host-wide figures, for the endpoint and the dashboard.

    An unsafe metrics directory is a configuration error, raised where the
    operator looks; streams meanwhile are served without figures.
    """
    try:
        return get_store().snapshot()
    except UnsafeStateError as exc:
        raise ImproperlyConfigured(f"STREAMER_METRICS_DIR: {exc}") from exc


# -- reading out -------------------------------------------------------------


def _num(entry: dict[str, Any], figure: str) -> float:
    return float(entry.get(figure, 0.0))


def _cumulative(counts: list[float]) -> list[float]:
    out, total = [], 0.0
    for c in counts:
        total += c
        out.append(total)
    return out


# Throughput now, computed here only: the dashboard's table and chart show these
# figures. Per active stream, the bytes it sent since this process's previous
# snapshot divided by the time between them (its whole life when it is new
# here). So a stalled stream reads 0, and a name with no active stream reads 0.
_seen: dict[tuple[object, object, object], tuple[float, float]] = {}
_seen_lock = threading.Lock()


def active_rates(snap: Snapshot) -> list[dict[str, Any]]:
    """The active streams, oldest first, each with its ``bytes_per_second`` now."""
    now = snap.taken_at
    active = []
    seen: dict[tuple[object, object, object], tuple[float, float]] = {}
    with _seen_lock:
        for a in sorted(snap.active, key=lambda a: cast(float, a["started"])):
            key = (a["pid"], a["started"], a["stream"])
            sent = cast(float, a["bytes"])
            then, before = _seen.get(key, (cast(float, a["started"]), 0.0))
            rate = max(sent - before, 0.0) / max(now - then, 1e-6)
            seen[key] = (now, sent)
            entry = {k: a[k] for k in ("stream", "path", "pid", "started")}
            active.append({**entry, "bytes": int(sent), "bytes_per_second": rate})
        _seen.clear()
        _seen.update(seen)  # only streams still active: bounded by the active table
    return active


def snapshot_json(snapshot: Snapshot | None = None) -> dict[str, Any]:
    """The dashboard's JSON API (documented in the README)."""
    snap = snapshot or read_snapshot()
    now = snap.taken_at
    active = active_rates(snap)
    rate: dict[str, float] = {}
    for a in active:
        rate[a["stream"]] = rate.get(a["stream"], 0.0) + a["bytes_per_second"]
    streams = {}
    for name, e in sorted(snap.streams.items()):
        chunks = _num(e, "chunks")
        sent = _num(e, "bytes")
        ttfb_count = _num(e, "ttfb_count")
        duration_count = _num(e, "duration_count")
        streams[name] = {
            "started": int(_num(e, "started")),
            "active": int(_num(e, "active")),
            "completed": int(_num(e, "completed")),
            "aborted": int(_num(e, "aborted")),
            "failed": int(_num(e, "failed")),
            "lost": int(_num(e, "lost")),
            "rejected": int(_num(e, "rejected")),
            "bytes": int(sent),
            "chunks": int(chunks),
            "chunk_size_max": int(_num(e, "chunk_max")),
            "chunk_size_avg": sent / chunks if chunks else 0.0,
            "ttfb_avg": _num(e, "ttfb_sum") / ttfb_count if ttfb_count else None,
            "duration_avg": _num(e, "duration_sum") / duration_count if duration_count else None,
            "bytes_per_second": rate.get(name, 0.0),
        }
    pools = {}
    for name, e in sorted(snap.pools.items()):
        waits = _num(e, "wait_count")
        pools[name] = {
            "in_use": int(_num(e, "in_use")),
            "limit": int(_num(e, "limit")),
            "admitted": int(_num(e, "admitted")),
            "rejected": int(_num(e, "rejected")),
            "wait_avg": _num(e, "wait_sum") / waits if waits else 0.0,
        }
    return {
        "time": now,
        "processes": snap.processes,
        "streams": streams,
        "pools": pools,
        "active": active,
        "active_hidden": snap.active_hidden,
        "store_errors": snap.store_errors,
    }


class StreamerCollector:
    """A prometheus_client collector reading the host-wide store."""

    def describe(self) -> list[Any]:
        return []  # unchecked: names are documented, and reading the store costs I/O

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        snap = read_snapshot()
        p = "django_streamer_"
        started = CounterMetricFamily(p + "streams_started", "Streams started.", labels=["stream"])
        active = GaugeMetricFamily(p + "streams_active", "Streams active now.", labels=["stream"])
        finished = CounterMetricFamily(
            p + "streams_finished", "Streams finished, by outcome.", labels=["stream", "outcome"]
        )
        rejected = CounterMetricFamily(
            p + "streams_rejected", "Requests the limiter turned away.", labels=["stream"]
        )
        sent = CounterMetricFamily(p + "bytes", "Bytes handed to the server.", labels=["stream"])
        chunks = CounterMetricFamily(
            p + "chunks", "Chunks handed to the server.", labels=["stream"]
        )
        chunk_max = GaugeMetricFamily(
            p + "chunk_size_max_bytes", "Largest chunk sent.", labels=["stream"]
        )
        ttfb = HistogramMetricFamily(
            p + "time_to_first_byte_seconds",
            "From the response's creation to its first chunk.",
            labels=["stream"],
        )
        duration = HistogramMetricFamily(
            p + "stream_duration_seconds",
            "From the response's creation to the stream's end.",
            labels=["stream"],
        )
        for name, e in sorted(snap.streams.items()):
            started.add_metric([name], _num(e, "started"))
            active.add_metric([name], _num(e, "active"))
            for outcome in ("completed", "aborted", "failed", "lost"):
                finished.add_metric([name, outcome], _num(e, outcome))
            rejected.add_metric([name], _num(e, "rejected"))
            sent.add_metric([name], _num(e, "bytes"))
            chunks.add_metric([name], _num(e, "chunks"))
            chunk_max.add_metric([name], _num(e, "chunk_max"))
            ttfb.add_metric([name], *_buckets(e, "ttfb", TTFB_BUCKETS))
            duration.add_metric([name], *_buckets(e, "duration", DURATION_BUCKETS))
        yield from (started, active, finished, rejected, sent, chunks, chunk_max, ttfb, duration)

        in_use = GaugeMetricFamily(p + "limiter_in_use", "Slots held now.", labels=["limiter"])
        limit = GaugeMetricFamily(p + "limiter_limit", "Slots in the pool.", labels=["limiter"])
        admitted = CounterMetricFamily(
            p + "limiter_admitted", "Requests given a slot.", labels=["limiter"]
        )
        turned = CounterMetricFamily(
            p + "limiter_rejected", "Requests turned away.", labels=["limiter"]
        )
        wait = HistogramMetricFamily(
            p + "limiter_wait_seconds", "Time spent waiting for a slot.", labels=["limiter"]
        )
        for name, e in sorted(snap.pools.items()):
            in_use.add_metric([name], _num(e, "in_use"))
            limit.add_metric([name], _num(e, "limit"))
            admitted.add_metric([name], _num(e, "admitted"))
            turned.add_metric([name], _num(e, "rejected"))
            wait.add_metric([name], *_buckets(e, "wait", WAIT_BUCKETS))
        yield from (in_use, limit, admitted, turned, wait)
        errors = CounterMetricFamily(
            p + "store_errors",
            "Metrics store failures (figures dropped).",
            value=snap.store_errors,
        )
        hidden = GaugeMetricFamily(
            p + "streams_active_unlisted",
            "Active streams the active-streams table had no room for.",
            value=snap.active_hidden,
        )
        yield from (errors, hidden)


def _buckets(
    entry: dict[str, Any], figure: str, bounds: tuple[float, ...]
) -> tuple[list[tuple[str, float]], float]:
    counts = entry.get(f"{figure}_buckets") or [0.0] * (len(bounds) + 1)
    cumulative = _cumulative(list(counts))
    labels = [*(repr(float(b)) for b in bounds), "+Inf"]
    return list(zip(labels, cumulative, strict=True)), _num(entry, f"{figure}_sum")


_collector = StreamerCollector()
_registered: list[Any] = []


def register_with_prometheus() -> None:
    """Add our collector to prometheus_client's global registry, once.

    That registry is what django-prometheus's ``/metrics`` serves outside
    prometheus_client's multiprocess mode; in that mode, see
    :func:`write_multiprocess_mirror`.
    """
    try:
        from prometheus_client import REGISTRY
    except ImportError:
        return
    if REGISTRY in _registered:
        return
    REGISTRY.register(_collector)
    _registered.append(REGISTRY)


def render(openmetrics: bool) -> tuple[bytes, str]:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_collector)
    if openmetrics:
        from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(registry), CONTENT_TYPE_LATEST  # type: ignore[no-untyped-call]
    from prometheus_client.exposition import CONTENT_TYPE_LATEST as TEXT
    from prometheus_client.exposition import generate_latest as text

    return text(registry), TEXT


# -- prometheus_client's multiprocess mode ----------------------------------

MIRROR_SUFFIX = "djangostreamer"
MIRROR_INTERVAL = 1.0
_mirror_started: list[int] = []  # pid that runs the mirror thread
_mirror_checked = [0]  # pid that looked for the mode


def write_multiprocess_mirror(directory: str) -> None:
    """Write every figure into ``directory`` as prometheus_client multiprocess files.

    In that mode django-prometheus serves only what ``MultiProcessCollector``
    finds in ``PROMETHEUS_MULTIPROC_DIR``. One set of files holds the
    host-wide figures (no pid in their names, so ``mark_process_dead`` never
    touches them), replaced whole, so each metric shows up exactly once.
    """
    from prometheus_client.mmap_dict import MmapedDict, mmap_key

    files: dict[str, list[tuple[str, float]]] = {"counter": [], "gauge_max": [], "histogram": []}
    for family in _collector.collect():
        kind = {"counter": "counter", "gauge": "gauge_max", "histogram": "histogram"}[family.type]
        previous: dict[tuple[tuple[str, str], ...], float] = {}
        for sample in family.samples:
            labels = dict(sample.labels)
            value = float(sample.value)
            if family.type == "histogram":
                if sample.name.endswith("_count"):
                    continue  # the collector recounts from the buckets
                if sample.name.endswith("_bucket"):
                    # Stored per bucket, not cumulative: the collector adds them up.
                    group = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
                    cumulative = value
                    value -= previous.get(group, 0.0)
                    previous[group] = cumulative
            names = sorted(labels)
            key = mmap_key(
                family.name, sample.name, names, [labels[n] for n in names], family.documentation
            )
            files[kind].append((key, value))
    os.makedirs(directory, exist_ok=True)
    for kind, entries in files.items():
        final = os.path.join(directory, f"{kind}_{MIRROR_SUFFIX}.db")
        tmp = f"{final}.{os.getpid()}.tmp"
        mapped = MmapedDict(tmp)  # type: ignore[no-untyped-call]
        try:
            for key, value in entries:
                mapped.write_value(key, value, 0.0)  # type: ignore[no-untyped-call]
        finally:
            mapped.close()  # type: ignore[no-untyped-call]
        os.replace(tmp, final)


def open_mirror_lock() -> int:
    """The mirror's election lock: private, never followed through a symlink,
    and close-on-exec so a spawned program cannot keep this process elected."""
    return open_private_file(os.path.join(get_store().directory, ".mirror.lock"))


def _mirror_loop(directory: str) -> None:
    import fcntl

    lock = open_mirror_lock()
    leader = False
    while True:
        time.sleep(MIRROR_INTERVAL)
        if not leader:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                leader = True  # held until this process exits; then another takes over
            except OSError:
                continue
        try:
            write_multiprocess_mirror(directory)
        except Exception:  # a bad tick must not end the thread
            logging.getLogger("django_streamer").exception("metrics mirror failed")


def ensure_mirror() -> None:
    """Start the mirror thread in this process, once, when the mode is on."""
    _mirror_checked[0] = os.getpid()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory or (_mirror_started and _mirror_started[0] == os.getpid()):
        return
    with _lock:
        if _mirror_started and _mirror_started[0] == os.getpid():
            return
        _mirror_started[:] = [os.getpid()]
    threading.Thread(
        target=_mirror_loop, args=(directory,), name="django-streamer-mirror", daemon=True
    ).start()
