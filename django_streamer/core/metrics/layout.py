"""The metrics file format: a header, rows of doubles, and the active-streams table.

Every file in a metrics directory (one per process, plus ``archive.bin``) has
this shape. Readers never trust it: :func:`parse` checks magic, version, size,
row bounds and that every figure is finite before a file is summed.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

from ..recorder import Outcome

__all__ = [
    "ACTIVE",
    "DURATION_BUCKETS",
    "GAUGES",
    "HEADER",
    "MAXIMA",
    "OUTCOMES",
    "POOL",
    "STREAM",
    "TTFB_BUCKETS",
    "WAIT_BUCKETS",
    "BadFile",
    "Geometry",
    "Layout",
    "bucket",
    "parse",
]

MAGIC = b"DSM2"
# 3: outcome ``drained`` and ``bytes_uncompressed`` per stream; 4: a pool's
# ``backend_errors`` and ``cluster`` flag; 5: ``bytes_compressed`` per stream and
# a pool's ``host`` flag. A
# reader refuses (quarantines) any other version, so do not mix releases on one
# directory.
VERSION = 5
# magic, version, pid, max_names, max_active, (pad), created, store errors, hidden actives
HEADER = struct.Struct("<4sIIII4xddd")
HEADER_SIZE = 64
ERRORS_AT = 5  # index (in doubles) of the store-errors figure in the header
HIDDEN_AT = 6  # index of the count of active streams the table had no room for
# Bounds a reader accepts: a file claiming more is not one of ours.
MAX_NAMES_LIMIT = 100_000
MAX_ACTIVE_LIMIT = 1_000_000

TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0)


class BadFile(ValueError):
    """A file in the metrics directory that is not a valid metrics file."""


class Layout:
    """Offsets (in doubles) of each figure within a name's row."""

    def __init__(self, fields: list[tuple[str, int]]) -> None:
        self.offsets: dict[str, int] = {}
        self.widths: dict[str, int] = {}
        at = 0
        for name, width in fields:
            self.offsets[name] = at
            self.widths[name] = width
            at += width
        self.width = at


def _histogram(name: str, buckets: tuple[float, ...]) -> list[tuple[str, int]]:
    # One count per bucket (not cumulative) plus +Inf, then sum and count.
    return [(f"{name}_buckets", len(buckets) + 1), (f"{name}_sum", 1), (f"{name}_count", 1)]


STREAM = Layout(
    [
        ("started", 1),
        ("active", 1),
        ("completed", 1),
        ("aborted", 1),
        ("failed", 1),
        ("lost", 1),  # active when its process died: started == outcomes + active
        ("drained", 1),  # ended cleanly because its worker was shutting down
        ("rejected", 1),
        ("bytes", 1),
        ("bytes_uncompressed", 1),  # before compression, for streams that were compressed
        ("bytes_compressed", 1),  # on the wire, for the same streams: the ratio's divisor
        ("chunks", 1),
        ("chunk_max", 1),
        *_histogram("ttfb", TTFB_BUCKETS),
        *_histogram("duration", DURATION_BUCKETS),
    ]
)
POOL = Layout(
    [
        ("admitted", 1),
        ("rejected", 1),
        ("in_use", 1),
        ("limit", 1),
        ("backend_errors", 1),  # cluster pools: Redis calls that failed at admission
        # 1 for a cluster pool: tells the scrape, in any process of the host,
        # which pools to read from Redis.
        ("cluster", 1),
        ("host", 1),  # 1 for a host pool: the reader counts its busiest key's slots
        *_histogram("wait", WAIT_BUCKETS),
    ]
)
# Every way a stream ends, each a figure of its row: started == sum + active.
OUTCOMES = tuple(outcome.value for outcome in Outcome)
GAUGES = {"active", "in_use"}  # per process: dropped with the process
# Combined with max(), not +; ``busiest`` (a key's slots) is added by readers.
MAXIMA = {"chunk_max", "limit", "cluster", "host", "busiest"}
# An active stream: name row, started (wall clock), bytes so far, path.
ACTIVE = struct.Struct("<i4xdd200s")


def bucket(value: float, buckets: tuple[float, ...]) -> int:
    for i, bound in enumerate(buckets):
        if value <= bound:
            return i
    return len(buckets)


@dataclass(frozen=True)
class Geometry:
    """Where each part of a file with these caps lives, in bytes and doubles."""

    max_names: int
    max_active: int

    @property
    def stream_base(self) -> int:  # in doubles
        return HEADER_SIZE // 8

    @property
    def pool_base(self) -> int:  # in doubles
        return self.stream_base + (self.max_names + 1) * STREAM.width

    @property
    def active_base(self) -> int:  # in bytes
        return (self.pool_base + (self.max_names + 1) * POOL.width) * 8

    @property
    def size(self) -> int:
        return self.active_base + self.max_active * ACTIVE.size

    def header(self, pid: int, created: float) -> bytes:
        fields = (MAGIC, VERSION, pid, self.max_names, self.max_active, created, 0.0, 0.0)
        return HEADER.pack(*fields).ljust(HEADER_SIZE, b"\0")


def parse(data: bytes) -> tuple[Geometry, int]:
    """The geometry and pid of a file's bytes; :class:`BadFile` says what is wrong."""
    if len(data) < HEADER_SIZE:
        raise BadFile(f"{len(data)} bytes, shorter than the header")
    magic, version, pid, max_names, max_active, _, _, _ = HEADER.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise BadFile(f"magic {magic!r} version {version}, not {MAGIC!r} version {VERSION}")
    if not (0 < max_names <= MAX_NAMES_LIMIT and 0 <= max_active <= MAX_ACTIVE_LIMIT):
        raise BadFile(f"caps out of bounds: {max_names} names, {max_active} active")
    geometry = Geometry(max_names, max_active)
    if len(data) != geometry.size:
        raise BadFile(f"{len(data)} bytes where its header implies {geometry.size}")
    figures = memoryview(data)[: geometry.active_base].cast("d")
    if not math.isfinite(sum(figures)):  # any inf or nan makes the sum so
        raise BadFile("a figure is not a finite number")
    for i in range(max_active):
        row, started, sent, _ = ACTIVE.unpack_from(data, geometry.active_base + i * ACTIVE.size)
        if started and not (0 <= row <= max_names and math.isfinite(started + sent)):
            raise BadFile(f"active-streams record {i} is out of bounds")
    return geometry, pid
