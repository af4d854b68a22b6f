"""Right-sizing of stream chunks, for sync and async sources.

Plain Python, no Django. The sync coalescer keeps the per-item work to what a
ten-line list-and-join rechunker does (``append``, ``len``, one comparison);
everything else, the clock included, happens at *probe points* spaced by a
byte threshold that adapts to the producer's rate. Reading the clock on every
item costs about 50 ns, which on 200,000 rows of 33 bytes doubled the
rechunker's own cost in ``bench/``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator

Piece = bytes | bytearray | memoryview | str

_BYTES_LIKE = (bytes, bytearray, memoryview)

# A probe happens at least every this many items of the current size.
_PROBE_ITEMS = 64


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


def _take(buf: list[Piece], carry: bytes, encoding: str, name: str) -> bytes:
    data = join_pieces(buf, encoding, name) if buf else b""
    buf.clear()
    return carry + data if carry else data


def _close(obj: object) -> None:
    close = getattr(obj, "close", None)
    if close is not None:
        close()


def iter_chunks(
    source: Iterable[Piece],
    *,
    chunk_size: int,
    flush_interval: float,
    encoding: str = "utf-8",
    name: str = "stream",
    clock: Callable[[], float] = time.monotonic,
    on_end: Callable[[int], None] | None = None,
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
      probe, at least four times per ``flush_interval``. A producer that
      abruptly slows down after a fast burst can therefore hold back at most
      64 items before the slowdown is seen.

    The source is closed (``close()``) when this generator ends or is closed.
    ``on_end(n)`` is called once the source is exhausted, with the number of
    bytes still to be yielded (with ``flush_interval`` 0, only for an empty source).
    """
    if flush_interval == 0:
        yield from _passthrough(
            source, chunk_size=chunk_size, encoding=encoding, name=name, on_end=on_end
        )
        return
    iterator = iter(source)
    try:
        buf: list[Piece] = []
        append = buf.append
        carry = b""  # the encoded tail of the last chunk, kept apart from buf so
        # that a stream of str pieces stays all-str for join_pieces' fast path
        size = 0  # bytes of carry plus len() units (chars for str) in buf
        drained = 0  # bytes (chars) taken out of the buffer so far
        last_probe = clock()
        seen_at_probe = 0
        oldest = last_probe  # lower bound on the arrival of the oldest buffered byte
        threshold = stride = 1
        for piece in iterator:
            try:
                size += len(piece)
            except TypeError:
                raise bad_item(name, piece) from None
            append(piece)
            if size < threshold:
                continue
            if size >= chunk_size:
                # A full chunk goes out at once, so it needs no clock read.
                if size == chunk_size and not carry and len(buf) == 1 and type(piece) is bytes:
                    # One piece of exactly chunk_size: pass it through as is.
                    buf.clear()
                    drained += size
                    size = 0
                    threshold = min(chunk_size, stride)
                    yield piece
                    continue
                data = _take(buf, carry, encoding, name)
                chunks, carry = split_exact(data, chunk_size)
                drained += size
                size = len(carry)
                drained -= size
                oldest = last_probe  # a lower bound for what the carry holds
                threshold = min(chunk_size, size + stride)
                yield from chunks
                continue
            now = clock()
            if now - oldest >= flush_interval:
                data = _take(buf, carry, encoding, name)
                carry = b""
                drained += size
                size = 0
                oldest = now
                yield from split_all(data, chunk_size)
            elapsed = now - last_probe
            seen = drained + size
            if elapsed >= flush_interval or elapsed <= 0:
                stride = 1
            else:
                rate = (seen - seen_at_probe) / elapsed
                stride = max(1, min(int(rate * flush_interval / 4), _PROBE_ITEMS * len(piece)))
            threshold = min(chunk_size, size + stride)
            last_probe = now
            seen_at_probe = seen
        data = _take(buf, carry, encoding, name)
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


class _Pump:
    """Reads an async source into a buffer in its own task.

    Book-keeping is in ``len()`` units (bytes, or chars for ``str``) as
    running totals: the pump owns ``total`` (appended so far) and the consumer
    owns ``taken``; what is buffered is ``total - taken``. Per item the pump
    compares its local total with one attribute, ``limit``, which the consumer
    sets to ``taken + 1`` while it waits for anything and to
    ``taken + chunk_size`` otherwise. So the consumer is woken per chunk, at
    the end, or by the first piece after an empty buffer; never per item.
    """

    __slots__ = (
        "carry",
        "chunk_size",
        "done",
        "error",
        "limit",
        "name",
        "pieces",
        "source",
        "space",
        "taken",
        "total",
        "waiter",
    )

    def __init__(self, source: AsyncIterable[Piece], chunk_size: int, name: str) -> None:
        self.source = source
        self.chunk_size = chunk_size
        self.name = name
        self.pieces: list[Piece] = []
        self.carry = b""  # encoded tail of the last chunk, counted in ``taken``'s complement
        self.total = 0  # published by the pump whenever it wakes the consumer
        self.taken = 0
        self.limit = 1
        self.done = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.space: asyncio.Future[None] | None = None

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def make_room(self) -> None:
        space = self.space
        if space is not None and not space.done():
            space.set_result(None)

    async def run(self) -> None:
        append = self.pieces.append
        chunk_size = self.chunk_size
        iterator = aiter(self.source)
        total = 0
        try:
            async for piece in iterator:
                try:
                    total += len(piece)
                except TypeError:
                    raise bad_item(self.name, piece) from None
                append(piece)
                if total >= self.limit:
                    self.total = total
                    self.wake()
                    if total - self.taken >= chunk_size:
                        self.space = asyncio.get_running_loop().create_future()
                        await self.space
                    else:
                        self.limit = self.taken + chunk_size
        except Exception as exc:
            self.error = exc
        finally:
            self.total = total
            self.done = True
            self.wake()
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    def take(
        self, *, whole: bool, encoding: str, counted: bool = True
    ) -> tuple[list[bytes], bytes]:
        """Take the buffer: full chunks (and, if ``whole``, the rest as well).

        ``counted``: ``total`` is up to date (the pump published it and is
        suspended, or it finished); otherwise count what is buffered. Runs
        without awaiting, so the pump cannot append meanwhile.
        """
        pieces = self.pieces
        carried = len(self.carry)
        units = self.total - self.taken - carried if counted else sum(map(len, pieces))
        data = _take(pieces, self.carry, encoding, self.name)
        chunks, rest = split_exact(data, self.chunk_size)
        if whole and rest:
            chunks.append(rest)
            rest = b""
        self.carry = rest
        # ``taken`` + ``len(carry)`` is what the pump's total has handed over.
        self.taken += units + carried - len(rest)
        self.limit = self.taken + (self.chunk_size if rest else 1)
        self.make_room()
        return chunks, rest

    async def wait(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self.waiter = waiter
        handle = None
        if timeout is not None:
            handle = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            self.waiter = None
            if handle is not None:
                handle.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def aiter_chunks(
    source: AsyncIterable[Piece],
    *,
    chunk_size: int,
    flush_interval: float,
    encoding: str = "utf-8",
    name: str = "stream",
    on_end: Callable[[int], None] | None = None,
) -> AsyncIterator[bytes]:
    """Re-chunk an async source. ``flush_interval`` holds even while the source
    is silent: a timer sends whatever has waited that long.

    The source is read by a helper task, so ``aclose()`` of this generator (or
    cancellation) cancels that task and ``aclose()``s the source.
    """
    if flush_interval == 0:
        async for chunk in _apassthrough(
            source, chunk_size=chunk_size, encoding=encoding, name=name, on_end=on_end
        ):
            yield chunk
        return
    loop = asyncio.get_running_loop()
    pump = _Pump(source, chunk_size, name)
    task = loop.create_task(pump.run())
    pieces = pump.pieces
    oldest: float | None = None  # when the oldest buffered byte was first seen
    try:
        while True:
            if pump.done:
                last = pump.take(whole=True, encoding=encoding)[0] if pieces or pump.carry else []
                if on_end is not None and pump.error is None:
                    on_end(sum(map(len, last)))
                for chunk in last:
                    yield chunk
                if pump.error is not None:
                    raise pump.error
                return
            if pump.total - pump.taken >= chunk_size:
                chunks, rest = pump.take(whole=False, encoding=encoding)
                if not rest:
                    oldest = None
                for chunk in chunks:
                    yield chunk
                continue
            if pieces or pump.carry:
                now = loop.time()
                if oldest is None:
                    oldest = now
                remaining = oldest + flush_interval - now
                if remaining <= 0:
                    oldest = None
                    taken = pump.take(whole=True, encoding=encoding, counted=False)
                    for chunk in taken[0]:
                        yield chunk
                    continue
                await pump.wait(remaining)
            else:
                await pump.wait(None)
                oldest = loop.time()
    finally:
        if not task.done():
            task.cancel()
        # The pump closes the source in its own ``finally``; wait for that.
        await asyncio.gather(task, return_exceptions=True)


async def _apassthrough(
    source: AsyncIterable[Piece],
    *,
    chunk_size: int,
    encoding: str,
    name: str,
    on_end: Callable[[int], None] | None = None,
) -> AsyncIterator[bytes]:
    iterator = aiter(source)
    sent = 0
    try:
        async for piece in iterator:
            data = to_bytes(piece, encoding, name)
            sent += len(data)
            for chunk in split_all(data, chunk_size):
                yield chunk
        if on_end is not None and sent == 0:
            on_end(0)
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
