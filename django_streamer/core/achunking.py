"""Right-sizing of stream chunks for async sources.

The source is read by a pump task, so ``flush_interval`` holds even while the
source is silent. Chunks are cut with the helpers the sync re-chunker uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable

from .chunking import Piece, bad_item, split_all, split_exact, take_pieces, to_bytes


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
        data = take_pieces(pieces, self.carry, encoding, self.name)
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

    def last(self, encoding: str, on_end: Callable[[int], None] | None) -> list[bytes]:
        """Once the source ended: what is left, as chunks (``on_end`` told, unless it failed)."""
        chunks = self.take(whole=True, encoding=encoding)[0] if self.pieces or self.carry else []
        if on_end is not None and self.error is None:
            on_end(sum(map(len, chunks)))
        return chunks

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
    on_forced: Callable[[bytes], None] | None = None,
) -> AsyncIterator[bytes]:
    """Re-chunk an async source. ``flush_interval`` holds even while the source
    is silent: a timer sends whatever has waited that long. ``on_forced`` is
    told of the last chunk of each such timed flush, as in ``iter_chunks``; with
    ``on_forced``, a source silent for ``flush_interval`` after full chunks gets
    an empty forced chunk, so what a compressor made of them goes out too.

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
    oldest: float | None = None  # when the oldest buffered byte was first seen
    sent_full = False  # full chunks went out since the last timed flush
    try:
        while not pump.done:
            if pump.total - pump.taken >= chunk_size:
                chunks, rest = pump.take(whole=False, encoding=encoding)
                sent_full = True
                if not rest:
                    oldest = None
            elif pump.pieces or pump.carry:
                now = loop.time()
                oldest = now if oldest is None else oldest
                remaining = oldest + flush_interval - now
                if remaining > 0:
                    await pump.wait(remaining)
                    continue
                oldest = None
                chunks = pump.take(whole=True, encoding=encoding, counted=False)[0]
                if chunks and on_forced is not None:
                    on_forced(chunks[-1])
                sent_full = False
            else:
                if sent_full and on_forced is not None:
                    # A compressing stage may still hold what the full chunks
                    # made: once the source has been silent for flush_interval,
                    # an empty forced chunk makes it flush.
                    await pump.wait(flush_interval)
                    if not (pump.pieces or pump.carry or pump.done):
                        sent_full = False
                        on_forced(b"")
                        yield b""
                    continue
                await pump.wait(None)
                oldest = loop.time()
                continue
            for chunk in chunks:
                yield chunk
        for chunk in pump.last(encoding, on_end):
            yield chunk
        if pump.error is not None:
            raise pump.error
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
