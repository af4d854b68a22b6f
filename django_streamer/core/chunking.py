"""Right-sizing of stream chunks: the shared helpers, and the sync re-chunker.

Plain Python, no Django. The sync coalescer keeps the per-item work to what a
ten-line list-and-join rechunker does (``append``, ``len``, one comparison);
everything else, the clock included, happens at *probe points* spaced by a
byte threshold that adapts to the producer's rate. Reading the clock on every
item costs about 50 ns, which on 200,000 rows of 33 bytes doubled the
rechunker's own cost in ``bench/``. The async re-chunker (``achunking``) cuts
chunks with the same helpers, so the two cannot drift.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

Piece = bytes | bytearray | memoryview | str

_BYTES_LIKE = (bytes, bytearray, memoryview)
PIECE_TYPES = (*_BYTES_LIKE, str)

# A probe happens at least every this many items of the current size.
_PROBE_ITEMS = 64

Clock = Callable[[], float]


class StreamSourceError(TypeError):
    """A stream's source is not usable, or yielded something that is not a piece."""


def bad_item(name: str, item: object) -> StreamSourceError:
    text = repr(item)
    if len(text) > 60:
        text = text[:57] + "..."
    return StreamSourceError(
        f"stream {name!r}: the source yielded {type(item).__name__} {text}; "
        "items must be bytes, bytearray, memoryview or str"
    )


def join_pieces(pieces: list[Piece], encoding: str, name: str) -> bytes:
    """Join buffered pieces into one bytes object, encoding str once per call."""
    try:
        return b"".join(pieces)  # type: ignore[arg-type]
    except TypeError:
        pass
    try:
        return "".join(pieces).encode(encoding)  # type: ignore[arg-type]
    except TypeError:
        pass
    # Mixed str and bytes, or a bad item: the slow path, once per chunk.
    out: list[bytes | bytearray | memoryview] = []
    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece.encode(encoding))
        elif isinstance(piece, _BYTES_LIKE):
            out.append(piece)
        else:
            raise bad_item(name, piece)
    return b"".join(out)


def split_exact(data: bytes, chunk_size: int) -> tuple[list[bytes], bytes]:
    """Cut ``data`` into full chunks of exactly ``chunk_size`` and a remainder."""
    size = len(data)
    if size <= chunk_size:
        return ([data], b"") if size == chunk_size else ([], data)
    full = size - size % chunk_size
    view = memoryview(data)
    chunks = [bytes(view[i : i + chunk_size]) for i in range(0, full, chunk_size)]
    return chunks, bytes(view[full:])


def split_all(data: bytes, chunk_size: int) -> list[bytes]:
    """Cut ``data`` into chunks of at most ``chunk_size``: the sync and async
    flush and end paths all go through here, so no chunk is ever bigger (a
    ``str`` counted in characters can encode to more bytes than it has)."""
    if len(data) <= chunk_size:
        return [data] if data else []
    chunks, rest = split_exact(data, chunk_size)
    if rest:
        chunks.append(rest)
    return chunks


def to_bytes(piece: object, encoding: str, name: str) -> bytes:
    if type(piece) is bytes:
        return piece
    if isinstance(piece, str):
        return piece.encode(encoding)
    if isinstance(piece, _BYTES_LIKE):
        return bytes(piece)
    raise bad_item(name, piece)


def take_pieces(buf: list[Piece], carry: bytes, encoding: str, name: str) -> bytes:
    """Empty ``buf`` into one bytes object, after ``carry``."""
    data = join_pieces(buf, encoding, name) if buf else b""
    buf.clear()
    return carry + data if carry else data


def _close(obj: object) -> None:
    close = getattr(obj, "close", None)
    if close is not None:
        close()


class _Coalescer:
    """The sync re-chunker's state between probes.

    The hot loop in :func:`iter_chunks` keeps only ``size`` and ``threshold``
    in locals; everything here runs once per chunk or per probe, never per item.
    """

    __slots__ = (
        "buf",
        "carry",
        "chunk_size",
        "clock",
        "drained",
        "encoding",
        "flush_interval",
        "last_probe",
        "name",
        "oldest",
        "on_forced",
        "seen_at_probe",
        "stride",
    )

    def __init__(
        self,
        chunk_size: int,
        flush_interval: float,
        encoding: str,
        name: str,
        clock: Clock,
        on_forced: Callable[[bytes], None] | None = None,
    ) -> None:
        self.buf: list[Piece] = []
        self.on_forced = on_forced
        # The encoded tail of the last chunk, kept apart from buf so that a
        # stream of str pieces stays all-str for join_pieces' fast path.
        self.carry = b""
        self.chunk_size = chunk_size
        self.flush_interval = flush_interval
        self.encoding = encoding
        self.name = name
        self.clock = clock
        self.drained = 0  # bytes (chars) taken out of the buffer so far
        self.last_probe = clock()
        self.seen_at_probe = 0
        self.oldest = self.last_probe  # lower bound on the oldest buffered byte's arrival
        self.stride = 1

    def take(self) -> bytes:
        data = take_pieces(self.buf, self.carry, self.encoding, self.name)
        self.carry = b""
        return data

    def full(self, size: int, piece: Piece) -> tuple[list[bytes], int, int]:
        """``size`` reached ``chunk_size``: the full chunks, the new size and threshold.

        A full chunk goes out at once, so it needs no clock read.
        """
        buf, chunk_size = self.buf, self.chunk_size
        if size == chunk_size and not self.carry and len(buf) == 1 and type(piece) is bytes:
            # One piece of exactly chunk_size: pass it through as is.
            buf.clear()
            self.drained += size
            return [piece], 0, min(chunk_size, self.stride)
        chunks, self.carry = split_exact(self.take(), chunk_size)
        rest = len(self.carry)
        self.drained += size - rest
        self.oldest = self.last_probe  # a lower bound for what the carry holds
        return chunks, rest, min(chunk_size, rest + self.stride)

    def flush(self, now: float) -> list[bytes]:
        """What waited ``flush_interval``, as chunks (a probe found it due)."""
        # Split: a str counted in characters can encode to over chunk_size bytes.
        chunks = split_all(self.take(), self.chunk_size)
        if chunks and self.on_forced is not None:
            self.on_forced(chunks[-1])
        self.oldest = now
        return chunks

    def respace(self, now: float, size: int, piece: Piece) -> int:
        """Space the next probe after one at ``now``; return the new threshold."""
        elapsed = now - self.last_probe
        seen = self.drained + size
        if elapsed >= self.flush_interval or elapsed <= 0:
            self.stride = 1
        else:
            rate = (seen - self.seen_at_probe) / elapsed
            stride = int(rate * self.flush_interval / 4)
            # At most doubling per probe: a rate measured over microseconds
            # (the first item of a producer that then waits) says nothing, and
            # jumping to 64 items on it held a slow feed back until its end.
            cap = max(2 * self.stride, len(piece))
            self.stride = max(1, min(stride, cap, _PROBE_ITEMS * len(piece)))
        self.last_probe = now
        self.seen_at_probe = seen
        return min(self.chunk_size, size + self.stride)


def iter_chunks(
    source: Iterable[Piece],
    *,
    chunk_size: int,
    flush_interval: float,
    encoding: str = "utf-8",
    name: str = "stream",
    clock: Clock = time.monotonic,
    on_end: Callable[[int], None] | None = None,
    on_forced: Callable[[bytes], None] | None = None,
) -> Iterator[bytes]:
    """Re-chunk a sync source into bytes chunks of exactly ``chunk_size``.

    What holds for ``flush_interval`` (a sync source cannot be interrupted
    without a thread, so nothing can be sent while ``next()`` blocks):

    * A piece that arrives when the oldest buffered byte has waited
      ``flush_interval`` or more is sent at once, with everything before it.
    * When the gap between probes reaches ``flush_interval`` (a slow
      producer), every following item is probed, so a producer of one record a
      second gets each record sent as it arrives.
    * Probes happen at least every 64 items and, at the rate seen at the last
      probe, at least four times per ``flush_interval``; the spacing at most
      doubles from one probe to the next, starting from one item. A producer
      that abruptly slows down after a fast burst can therefore hold back at
      most 64 items before the slowdown is seen, and one that is slow from its
      start has each item sent when the next arrives, at the latest.

    The source is closed (``close()``) when this generator ends or is closed.
    ``on_end(n)`` is called once the source is exhausted, with the number of
    bytes still to be yielded (with ``flush_interval`` 0, only for an empty source).
    ``on_forced(chunk)`` is called, before ``chunk`` is yielded, with the last
    chunk of each flush that ``flush_interval`` forced (at a probe, so never per
    item); not with ``flush_interval`` 0, where every chunk is forced.
    """
    if flush_interval == 0:
        yield from _passthrough(
            source, chunk_size=chunk_size, encoding=encoding, name=name, on_end=on_end
        )
        return
    iterator = iter(source)
    state = _Coalescer(chunk_size, flush_interval, encoding, name, clock, on_forced)
    append = state.buf.append
    size = 0  # bytes of carry plus len() units (chars for str) in buf
    threshold = 1
    try:
        for piece in iterator:
            try:
                size += len(piece)
            except TypeError:
                raise bad_item(name, piece) from None
            append(piece)
            if size < threshold:
                continue
            if size >= chunk_size:
                chunks, size, threshold = state.full(size, piece)
                yield from chunks
                continue
            # A probe: one clock read; a flush only when something waited too long.
            now = clock()
            if now - state.oldest >= flush_interval:
                state.drained += size
                size = 0
                yield from state.flush(now)
            threshold = state.respace(now, size, piece)
        data = state.take()
        if on_end is not None:
            on_end(len(data))
        yield from split_all(data, chunk_size)
    finally:
        _close(iterator)


def _passthrough(
    source: Iterable[Piece],
    *,
    chunk_size: int,
    encoding: str,
    name: str,
    on_end: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """``flush_interval=0``: every piece goes out as it comes, split if too big."""
    iterator = iter(source)
    sent = 0
    try:
        for piece in iterator:
            data = to_bytes(piece, encoding, name)
            if len(data) <= chunk_size:
                if data:
                    sent += len(data)
                    yield data
                continue
            sent += len(data)
            yield from split_all(data, chunk_size)
        if on_end is not None and sent == 0:
            on_end(0)
    finally:
        _close(iterator)
