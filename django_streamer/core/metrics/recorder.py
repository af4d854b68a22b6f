"""Recording into a :class:`~.store.Store`: streams and limiter pools."""

from __future__ import annotations

import time
from bisect import bisect_left as bucket  # = layout.bucket, in C

from ..recorder import Outcome, StreamRecorder
from .layout import DURATION_BUCKETS, POOL, STREAM, TTFB_BUCKETS, WAIT_BUCKETS
from .store import Store

__all__ = [
    "StreamMetrics",
    "record_admitted",
    "record_backend_error",
    "record_rejected",
    "record_released",
]

_STARTED = STREAM.offsets["started"]
_ACTIVE = STREAM.offsets["active"]
_DURATION = STREAM.offsets["duration_buckets"]
_DURATION_SUM = STREAM.offsets["duration_sum"]
_DURATION_COUNT = STREAM.offsets["duration_count"]
_BYTES = STREAM.offsets["bytes"]
_UNCOMPRESSED = STREAM.offsets["bytes_uncompressed"]
_COMPRESSED = STREAM.offsets["bytes_compressed"]
_CHUNKS = STREAM.offsets["chunks"]
_CHUNK_MAX = STREAM.offsets["chunk_max"]
_TTFB = STREAM.offsets["ttfb_buckets"]
_TTFB_SUM = STREAM.offsets["ttfb_sum"]
_TTFB_COUNT = STREAM.offsets["ttfb_count"]
_NO_ROW = -2  # start() not called: no row of the active table was claimed
# On the hot paths below the store's lock is taken with acquire() and a
# try/finally rather than ``with``, which costs twice as many instructions
# (two special-method lookups, a three-argument __exit__ call); and figures,
# being doubles, get float constants (no int-to-float conversion per add).
# A limiter event is per request: one row base, then fixed offsets.
_ADMITTED = POOL.offsets["admitted"]
_IN_USE = POOL.offsets["in_use"]
_LIMIT = POOL.offsets["limit"]
_WAIT = POOL.offsets["wait_buckets"]
_WAIT_SUM = POOL.offsets["wait_sum"]
_WAIT_COUNT = POOL.offsets["wait_count"]
_CLUSTER = POOL.offsets["cluster"]
_HOST = POOL.offsets["host"]


class StreamMetrics(StreamRecorder):
    """Records one stream into a :class:`Store`.

    Per chunk it only adds to its own attributes and reads the clock; it
    publishes to the mapped file (a few stores under a lock) at most every
    ``publish_interval`` seconds, and at the end. So the store lags a running
    stream by that much, and a SIGKILLed process loses at most that much.
    The stream stays bound to the file it started in: if that file is
    replaced meanwhile, its figures go with the old one.
    """

    __slots__ = (
        "_active",
        "_base",
        "_chunks",
        "_file",
        "_interval",
        "_max",
        "_path",
        "_publish_at",
        "_published_chunks",
        "_published_compressed",
        "_published_sent",
        "_published_uncompressed",
        "_row",
        "_sent",
        "_sent_at",
        "_started",
        "_store",
        "_uncompressed",
    )

    def __init__(
        self, store: Store, name: str, path: str = "", *, publish_interval: float = 0.1
    ) -> None:
        self._store = store
        self._started = now = time.monotonic()
        self._file, self._base, self._row = store.stream_figures(name, now)
        self._path = path
        self._active = _NO_ROW  # claimed by start()
        self._sent_at = -1  # where the active row's bytes sent are in values, if it has one
        self._interval = publish_interval
        self._publish_at = 0.0  # the first chunk publishes at once (time to first byte)
        self._sent = self._chunks = self._max = 0
        self._published_sent = self._published_chunks = 0
        self._uncompressed = self._published_uncompressed = self._published_compressed = 0

    def start(self) -> None:
        # One lock round: the counters and a row of the active-streams table.
        f = self._file
        values = f.values
        base = self._base
        store = self._store
        lock = store.lock
        lock.acquire()
        try:
            values[base + _STARTED] += 1.0
            values[base + _ACTIVE] += 1.0
            self._active = active = store.take_active_locked(f)
        finally:
            lock.release()
        if active >= 0:
            self._sent_at = f.put_active(active, self._row, self._path)

    def chunk(self, nbytes: int) -> None:
        self._sent += nbytes
        self._chunks += 1
        if nbytes > self._max:
            self._max = nbytes
        now = time.monotonic()
        if now >= self._publish_at:  # publish (inline: one call less per publish)
            lock = self._store.lock
            lock.acquire()
            try:
                self._add_published(now)
            finally:
                lock.release()
            self._publish_at = now + self._interval
            if self._sent_at >= 0:
                self._file.values[self._sent_at] = self._sent

    def uncompressed(self, nbytes: int) -> None:
        """``nbytes`` of the source went into compression.

        The compression stage calls this per chunk it compresses, next to the
        stream's ``chunk()`` for the compressed bytes put on the wire; it is
        published with them. Streams that are not compressed never call it; the
        wire bytes of those that do also go to ``bytes_compressed``, so
        ``bytes_uncompressed / bytes_compressed`` is the ratio of a name's
        compressed streams, whatever share of its streams they are.
        """
        self._uncompressed += nbytes

    def _add_published(self, now: float) -> None:
        """Add what was sent since the last publish (with the store's ``lock`` held)."""
        values = self._file.values
        base = self._base
        chunks = self._chunks
        values[base + _BYTES] += self._sent - self._published_sent
        values[base + _CHUNKS] += chunks - self._published_chunks
        if self._uncompressed:  # a compressed stream: all its wire bytes so far count
            values[base + _UNCOMPRESSED] += self._uncompressed - self._published_uncompressed
            values[base + _COMPRESSED] += self._sent - self._published_compressed
            self._published_uncompressed = self._uncompressed
            self._published_compressed = self._sent
        if self._max > values[base + _CHUNK_MAX]:
            values[base + _CHUNK_MAX] = self._max
        if self._published_chunks == 0 and chunks > 0:  # the first byte went
            ttfb = now - self._started
            values[base + _TTFB + bucket(TTFB_BUCKETS, ttfb)] += 1.0
            values[base + _TTFB_SUM] += ttfb
            values[base + _TTFB_COUNT] += 1.0
        self._published_sent = self._sent
        self._published_chunks = chunks

    def finish(self, outcome: Outcome) -> None:
        # One lock round: what is left to publish, the outcome, the active row.
        now = time.monotonic()
        values = self._file.values
        base = self._base
        duration = now - self._started
        active, self._active = self._active, -1
        self._sent_at = -1
        store = self._store
        lock = store.lock
        lock.acquire()
        try:
            if (
                self._chunks != self._published_chunks
                or self._uncompressed != self._published_uncompressed
            ):
                self._add_published(now)
            values[base + _ACTIVE] -= 1.0
            values[base + STREAM.offsets[outcome._value_]] += 1.0  # no enum property
            values[base + _DURATION + bucket(DURATION_BUCKETS, duration)] += 1.0
            values[base + _DURATION_SUM] += duration
            values[base + _DURATION_COUNT] += 1.0
            if active != _NO_ROW:
                store.free_active_locked(self._file, active)
        finally:
            lock.release()


def _mark_cluster(values: memoryview[float], at: int, cluster: int) -> None:
    if cluster > values[at]:
        values[at] = cluster


def record_rejected(store: Store, stream: str, pool: str, *, cluster: int = 0) -> None:
    """``cluster``: 1 for a cluster pool, else 0."""
    f = store.file()
    row = store.pool_row(pool)
    with store.lock:
        f.values[f.stream_at(store.stream_row(stream), "rejected")] += 1
        f.values[f.pool_at(row, "rejected")] += 1
        _mark_cluster(f.values, f.pool_at(row, "cluster"), cluster)


def record_backend_error(store: Store, pool: str) -> None:
    """A cluster pool's admission could not reach Redis."""
    f = store.file()
    row = store.pool_row(pool)
    with store.lock:
        f.values[f.pool_at(row, "backend_errors")] += 1
        _mark_cluster(f.values, f.pool_at(row, "cluster"), 1)


def record_admitted(
    store: Store, pool: str, limit: int, waited: float, cluster: int = 0, host: int = 0
) -> None:
    """``cluster``: 1 for a cluster pool, else 0; ``host``: 1 for a host pool, else 0."""
    f, base = store.pool_figures(pool)
    values = f.values
    wait = base + _WAIT + bucket(WAIT_BUCKETS, waited)
    lock = store.lock
    lock.acquire()
    try:
        # An access to the mapped file costs more than a branch: none is spent
        # on a process pool's cluster flag or on adding a wait of 0.
        if cluster and cluster > values[base + _CLUSTER]:
            values[base + _CLUSTER] = cluster
        if host and host > values[base + _HOST]:
            values[base + _HOST] = host
        values[base + _ADMITTED] += 1.0
        values[base + _IN_USE] += 1.0
        values[base + _LIMIT] = limit
        values[wait] += 1.0
        if waited:
            values[base + _WAIT_SUM] += waited
        values[base + _WAIT_COUNT] += 1.0
    finally:
        lock.release()


def record_released(store: Store, pool: str) -> None:
    f, base = store.pool_figures(pool)
    lock = store.lock
    lock.acquire()
    try:
        f.values[base + _IN_USE] -= 1.0
    finally:
        lock.release()
