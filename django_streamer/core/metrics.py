"""A metrics store that tells the truth across processes. Plain Python, no Django.

Each process writes its figures into its own memory-mapped file in a shared
directory: an update is one store into a mapped array of doubles (about
0.1 us), visible to readers at once and kept by the kernel if the process
is SIGKILLed. Each file is locked (``F_OFD_SETLK``) by its process for its
life, so a reader knows a dead process by being able to take the lock: no pid
checks, no pid reuse trouble.

Readers sum the live files, plus ``archive.bin``, into which the files of
dead processes are folded (counters and histograms added, maxima kept,
gauges dropped) before they are deleted. So totals never go backwards, dead
processes' gauges vanish, and the directory holds about one file per live
process. This is what prometheus_client's multiprocess mode lacks: it keeps a
file per dead pid forever, keeps their gauges, and resets counters when those
files are deleted.

Names are capped: ``names.bin`` assigns each stream or pool name a row, host
wide, first come first served; once ``max_names`` are taken, further names are
counted under ``other``.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import cast

from . import ofdlock
from .recorder import Outcome, StreamRecorder

MAGIC = b"DSM1"
HEADER = struct.Struct("4sIIIIIdd")  # magic, version, pid, max_names, max_active, _, created, _
HEADER_SIZE = 64
NAME_BYTES = 120
OTHER = "other"

TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0)


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
        ("rejected", 1),
        ("bytes", 1),
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
        *_histogram("wait", WAIT_BUCKETS),
    ]
)
GAUGES = {"active", "in_use"}  # per process: dropped with the process
MAXIMA = {"chunk_max", "limit"}  # combined with max(), not +
# An active stream: name row, started (wall clock), bytes so far, path.
ACTIVE = struct.Struct("i4xdd200s")


def _bucket(value: float, buckets: tuple[float, ...]) -> int:
    for i, bound in enumerate(buckets):
        if value <= bound:
            return i
    return len(buckets)


def _try_lock(fd: int) -> bool:
    """Take the life lock of a metrics file: byte 0, as the limiter takes a slot."""
    return ofdlock.lock_byte(fd, 0)


class _Dir:
    """Serialises folding dead files into the archive against readers."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(path, mode=0o700, exist_ok=True)

    def lock(self, exclusive: bool) -> int:
        fd = os.open(os.path.join(self.path, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        return fd


class Names:
    """Host-wide name -> row assignment, shared through ``names.bin``.

    Row 0 of each kind is ``other``. A process asks the file only for names it
    has not seen yet, under an exclusive flock.
    """

    def __init__(self, directory: str, max_names: int) -> None:
        self.path = os.path.join(directory, "names.bin")
        self.max_names = max_names
        self._cache: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def row(self, kind: str, name: str) -> int:
        try:
            return self._cache[(kind, name)]
        except KeyError:
            pass
        with self._lock:
            row = self._assign(kind, name)
            self._cache[(kind, name)] = row
            return row

    def _read(self, fd: int) -> dict[tuple[str, str], int]:
        data = b""
        while chunk := os.read(fd, 1 << 16):
            data += chunk
        table: dict[tuple[str, str], int] = {}
        for line in data.decode("utf-8", "replace").splitlines():
            kind, _, name = line.partition("\t")
            if name:
                table[(kind, name)] = sum(1 for k in table if k[0] == kind) + 1
        return table

    def _assign(self, kind: str, name: str) -> int:
        if name == OTHER:
            return 0
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            table = self._read(fd)
            row = table.get((kind, name))
            if row is not None:
                return row
            taken = sum(1 for k in table if k[0] == kind)
            if taken >= self.max_names:
                return 0
            os.lseek(fd, 0, os.SEEK_END)
            line = f"{kind}\t{name.replace(chr(10), ' ').replace(chr(9), ' ')}\n"
            os.write(fd, line.encode())
            return taken + 1
        finally:
            os.close(fd)

    def all(self) -> dict[str, list[str]]:
        """Row names by kind, row 0 being ``other``."""
        out: dict[str, list[str]] = {"stream": [OTHER], "pool": [OTHER]}
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return out
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            for (kind, name), _row in sorted(self._read(fd).items(), key=lambda kv: kv[1]):
                out.setdefault(kind, [OTHER]).append(name)
        finally:
            os.close(fd)
        return out


class ProcessFile:
    """This process's mapped file: rows of doubles for streams and pools,
    and a table of the streams active right now."""

    def __init__(self, path: str, *, max_names: int, max_active: int, create: bool) -> None:
        self.path = path
        self.max_names = max_names
        self.max_active = max_active
        rows = max_names + 1
        self.stream_base = HEADER_SIZE // 8
        self.pool_base = self.stream_base + rows * STREAM.width
        self.active_base = (self.pool_base + rows * POOL.width) * 8
        self.size = self.active_base + max_active * ACTIVE.size
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if create else 0)
        self.fd = os.open(path, flags, 0o600)
        if create:
            os.ftruncate(self.fd, self.size)
        self.map = mmap.mmap(self.fd, self.size)
        self.values = memoryview(self.map).cast("d")
        if create:
            HEADER.pack_into(
                self.map, 0, MAGIC, 1, os.getpid(), max_names, max_active, 0, time.time(), 0.0
            )

    @classmethod
    def open_existing(cls, path: str) -> ProcessFile | None:
        try:
            with open(path, "rb") as f:
                header = f.read(HEADER.size)
        except FileNotFoundError:
            return None
        if len(header) < HEADER.size:
            return None
        magic, _, _, max_names, max_active, _, _, _ = HEADER.unpack(header)
        if magic != MAGIC:
            return None
        try:
            return cls(path, max_names=max_names, max_active=max_active, create=False)
        except (FileNotFoundError, ValueError):
            return None

    def close(self) -> None:
        self.values.release()
        self.map.close()
        os.close(self.fd)

    def stream_at(self, row: int, figure: str) -> int:
        return self.stream_base + row * STREAM.width + STREAM.offsets[figure]

    def pool_at(self, row: int, figure: str) -> int:
        return self.pool_base + row * POOL.width + POOL.offsets[figure]

    def active(self) -> Iterator[tuple[int, float, float, str]]:
        for i in range(self.max_active):
            row, started, sent, path = ACTIVE.unpack_from(
                self.map, self.active_base + i * ACTIVE.size
            )
            if started:
                yield row, started, sent, path.rstrip(b"\0").decode("utf-8", "replace")


@dataclass
class Snapshot:
    """Host-wide figures: sums over live processes and the archive."""

    streams: dict[str, dict[str, float | list[float]]] = field(default_factory=dict)
    pools: dict[str, dict[str, float | list[float]]] = field(default_factory=dict)
    active: list[dict[str, object]] = field(default_factory=list)
    processes: int = 0
    taken_at: float = 0.0


class Store:
    """One process's writer, and any process's reader, of a metrics directory."""

    def __init__(self, directory: str, *, max_names: int = 100, max_active: int = 512) -> None:
        self.dir = _Dir(directory)
        self.directory = directory
        self.max_names = max_names
        self.max_active = max_active
        self.names = Names(directory, max_names)
        self._file: ProcessFile | None = None
        self._lock = threading.Lock()
        self._free_active: list[int] = []
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        # The parent's file is the parent's: a child makes its own.
        self._file = None
        self._lock = threading.Lock()

    # -- writing ---------------------------------------------------------

    def file(self) -> ProcessFile:
        """This process's file, made (after a fork, too) on first use."""
        f = self._file
        if f is not None:
            return f
        with self._lock:
            if self._file is None:
                pid = os.getpid()
                self.compact()  # a new process tidies what dead ones left
                name = f"p-{pid}-{uuid.uuid4().hex[:8]}.bin"
                self._file = ProcessFile(
                    os.path.join(self.directory, name),
                    max_names=self.max_names,
                    max_active=self.max_active,
                    create=True,
                )
                if not _try_lock(self._file.fd):
                    raise RuntimeError(f"cannot lock {self._file.path}")
                self._free_active = list(range(self.max_active - 1, -1, -1))
            return self._file

    def stream_row(self, name: str) -> int:
        return self.names.row("stream", name)

    def pool_row(self, name: str) -> int:
        return self.names.row("pool", name)

    def lock(self) -> threading.Lock:
        return self._lock

    def take_active(self, row: int, path: str) -> int:
        """Claim a row of the active-streams table; -1 if it is full."""
        f = self.file()
        with self._lock:
            if not self._free_active:
                return -1
            slot = self._free_active.pop()
        ACTIVE.pack_into(
            f.map, f.active_base + slot * ACTIVE.size, row, time.time(), 0.0,
            path.encode("utf-8", "replace")[:200],
        )  # fmt: skip
        return slot

    def set_active_bytes(self, slot: int, sent: float) -> None:
        f = self.file()
        # The ``bytes`` double of that record.
        f.values[(f.active_base + slot * ACTIVE.size + 16) // 8] = sent

    def free_active(self, slot: int) -> None:
        f = self.file()
        # A zero ``started`` marks the record free for readers.
        f.values[(f.active_base + slot * ACTIVE.size + 8) // 8] = 0.0
        with self._lock:
            self._free_active.append(slot)

    # -- reading ---------------------------------------------------------

    def _files(self) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(os.path.join(self.directory, n) for n in names if n.startswith("p-"))

    def compact(self) -> int:
        """Fold the files of dead processes into the archive; return how many."""
        folded = 0
        lock_fd = self.dir.lock(exclusive=True)
        try:
            archive: ProcessFile | None = None
            for path in self._files():
                if self._file is not None and path == self._file.path:
                    continue
                dead = ProcessFile.open_existing(path)
                if dead is None:
                    continue
                try:
                    if not _try_lock(dead.fd):
                        continue  # its process is alive
                    if archive is None:
                        archive = self._archive(dead.max_names)
                    _fold(dead, archive)
                    os.unlink(path)
                    folded += 1
                finally:
                    dead.close()
            if archive is not None:
                archive.map.flush()
                archive.close()
        finally:
            os.close(lock_fd)
        return folded

    def _archive(self, max_names: int) -> ProcessFile:
        path = os.path.join(self.directory, "archive.bin")
        existing = ProcessFile.open_existing(path)
        if existing is not None:
            return existing
        tmp = f"{path}.{os.getpid()}.tmp"
        made = ProcessFile(tmp, max_names=max_names, max_active=0, create=True)
        os.rename(tmp, path)
        made.path = path
        return made

    def snapshot(self) -> Snapshot:
        """Every figure, summed over the archive and the live processes."""
        self.compact()
        names = self.names.all()
        snap = Snapshot(taken_at=time.time())
        lock_fd = self.dir.lock(exclusive=False)
        try:
            paths = self._files()
            archive = os.path.join(self.directory, "archive.bin")
            for path in [archive, *paths]:
                f = ProcessFile.open_existing(path)
                if f is None:
                    continue
                try:
                    if path != archive:
                        snap.processes += 1
                    _accumulate(f, names, snap)
                finally:
                    f.close()
        finally:
            os.close(lock_fd)
        return snap


def _fold(dead: ProcessFile, archive: ProcessFile) -> None:
    rows = min(dead.max_names, archive.max_names) + 1
    for layout, dbase, abase in (
        (STREAM, dead.stream_base, archive.stream_base),
        (POOL, dead.pool_base, archive.pool_base),
    ):
        for row in range(rows):
            for figure, offset in layout.offsets.items():
                width = layout.widths[figure]
                for k in range(width):
                    d = dead.values[dbase + row * layout.width + offset + k]
                    if not d or figure in GAUGES:
                        continue
                    a = abase + row * layout.width + offset + k
                    if figure in MAXIMA:
                        archive.values[a] = max(archive.values[a], d)
                    else:
                        archive.values[a] += d


def _accumulate(f: ProcessFile, names: dict[str, list[str]], snap: Snapshot) -> None:
    for kind, layout, base, target in (
        ("stream", STREAM, f.stream_base, snap.streams),
        ("pool", POOL, f.pool_base, snap.pools),
    ):
        labels = names.get(kind, [OTHER])
        for row in range(min(len(labels), f.max_names + 1)):
            start = base + row * layout.width
            values = f.values[start : start + layout.width].tolist()
            if not any(values):
                continue
            entry = target.setdefault(labels[row], {})
            for figure, offset in layout.offsets.items():
                width = layout.widths[figure]
                chunk = values[offset : offset + width]
                if width == 1:
                    old = cast(float, entry.get(figure, 0.0))
                    entry[figure] = max(old, chunk[0]) if figure in MAXIMA else old + chunk[0]
                else:
                    old_list = entry.get(figure)
                    if not isinstance(old_list, list):
                        old_list = [0.0] * width
                    entry[figure] = [a + b for a, b in zip(old_list, chunk, strict=True)]
    stream_names = names.get("stream", [OTHER])
    for row, started, sent, path in f.active():
        snap.active.append(
            {
                "stream": stream_names[row] if row < len(stream_names) else OTHER,
                "path": path,
                "started": started,
                "bytes": sent,
                "pid": HEADER.unpack_from(f.map, 0)[2],
            }
        )


class StreamMetrics(StreamRecorder):
    """Records one stream into a :class:`Store`.

    Per chunk it only adds to its own attributes and reads the clock; it
    publishes to the mapped file (a few stores under a lock) at most every
    ``publish_interval`` seconds, and at the end. So the store lags a running
    stream by that much, and a SIGKILLed process loses at most that much.
    """

    __slots__ = (
        "_active",
        "_base",
        "_chunks",
        "_file",
        "_interval",
        "_max",
        "_publish_at",
        "_published_chunks",
        "_published_sent",
        "_sent",
        "_started",
        "_store",
    )

    def __init__(
        self, store: Store, name: str, path: str = "", *, publish_interval: float = 0.1
    ) -> None:
        self._store = store
        self._file = store.file()
        row = store.stream_row(name)
        self._base = self._file.stream_at(row, "started")
        self._active = store.take_active(row, path)
        self._started = time.monotonic()
        self._interval = publish_interval
        self._publish_at = 0.0  # the first chunk publishes at once (time to first byte)
        self._sent = self._chunks = self._max = 0
        self._published_sent = self._published_chunks = 0

    def start(self) -> None:
        values = self._file.values
        with self._store.lock():
            values[self._base + _STARTED] += 1
            values[self._base + _ACTIVE] += 1

    def chunk(self, nbytes: int) -> None:
        self._sent += nbytes
        self._chunks += 1
        if nbytes > self._max:
            self._max = nbytes
        now = time.monotonic()
        if now >= self._publish_at:
            self._publish(now)

    def _publish(self, now: float) -> None:
        values = self._file.values
        base = self._base
        first = self._published_chunks == 0 and self._chunks > 0
        with self._store.lock():
            values[base + _BYTES] += self._sent - self._published_sent
            values[base + _CHUNKS] += self._chunks - self._published_chunks
            if self._max > values[base + _CHUNK_MAX]:
                values[base + _CHUNK_MAX] = self._max
            if first:
                ttfb = now - self._started
                values[base + _TTFB + _bucket(ttfb, TTFB_BUCKETS)] += 1
                values[base + _TTFB_SUM] += ttfb
                values[base + _TTFB_COUNT] += 1
        self._published_sent = self._sent
        self._published_chunks = self._chunks
        self._publish_at = now + self._interval
        if self._active >= 0:
            self._store.set_active_bytes(self._active, self._sent)

    def finish(self, outcome: Outcome) -> None:
        now = time.monotonic()
        if self._chunks != self._published_chunks:
            self._publish(now)
        values = self._file.values
        base = self._base
        duration = now - self._started
        with self._store.lock():
            values[base + _ACTIVE] -= 1
            values[base + STREAM.offsets[outcome.value]] += 1
            values[base + _DURATION + _bucket(duration, DURATION_BUCKETS)] += 1
            values[base + _DURATION_SUM] += duration
            values[base + _DURATION_COUNT] += 1
        if self._active >= 0:
            self._store.free_active(self._active)
            self._active = -1


_STARTED = STREAM.offsets["started"]
_ACTIVE = STREAM.offsets["active"]
_DURATION = STREAM.offsets["duration_buckets"]
_DURATION_SUM = STREAM.offsets["duration_sum"]
_DURATION_COUNT = STREAM.offsets["duration_count"]
_BYTES = STREAM.offsets["bytes"]
_CHUNKS = STREAM.offsets["chunks"]
_CHUNK_MAX = STREAM.offsets["chunk_max"]
_TTFB = STREAM.offsets["ttfb_buckets"]
_TTFB_SUM = STREAM.offsets["ttfb_sum"]
_TTFB_COUNT = STREAM.offsets["ttfb_count"]


def record_rejected(store: Store, stream: str, pool: str) -> None:
    f = store.file()
    with store.lock():
        f.values[f.stream_at(store.stream_row(stream), "rejected")] += 1
        f.values[f.pool_at(store.pool_row(pool), "rejected")] += 1


def record_admitted(store: Store, pool: str, limit: int, waited: float) -> None:
    f = store.file()
    row = store.pool_row(pool)
    values = f.values
    with store.lock():
        values[f.pool_at(row, "admitted")] += 1
        values[f.pool_at(row, "in_use")] += 1
        values[f.pool_at(row, "limit")] = limit
        values[f.pool_at(row, "wait_buckets") + _bucket(waited, WAIT_BUCKETS)] += 1
        values[f.pool_at(row, "wait_sum")] += waited
        values[f.pool_at(row, "wait_count")] += 1


def record_released(store: Store, pool: str) -> None:
    f = store.file()
    with store.lock():
        f.values[f.pool_at(store.pool_row(pool), "in_use")] -= 1
