"""Right-sizing of stream chunks for async sources.

The source is read by a pump task, so ``flush_interval`` holds even while the
source is silent. Chunks are cut with the helpers the sync re-chunker uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable

from .chunking import PIECE_TYPES, Piece, bad_item, split_all, split_exact, take_pieces, to_bytes


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
        # Per item only what a list-and-join rechunker does. ``pieces.append``
        # (not a bound method kept in a local: 3.11 inlines list.append) and
        # no ``try`` in the loop: each costs ~3% on 33-byte records (bench/).
        pieces = self.pieces
        chunk_size = self.chunk_size
        iterator = aiter(self.source)
        total = 0
        piece: object = b""  # bound for the error path, should the source yield nothing
        try:
            async for piece in iterator:
                total += len(piece)
                pieces.append(piece)
                if total >= self.limit:
                    self.total = total
                    self.wake()
                    if total - self.taken >= chunk_size:
                        self.space = asyncio.get_running_loop().create_future()
                        await self.space
                    else:
                        self.limit = self.taken + chunk_size
        except TypeError as exc:
            self.error = self._bad_item(exc, piece)
        except Exception as exc:
            self.error = exc
        finally:
            self.total = total
            self.done = True
            self.wake()
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    def _bad_item(self, exc: TypeError, piece: object) -> Exception:
        """``len()`` of a bad item failed in ``run()`` itself: name the item."""
        raised_here = exc.__traceback__ is not None and exc.__traceback__.tb_next is None
        if raised_here and not isinstance(piece, PIECE_TYPES):
            return bad_item(self.name, piece)
        return exc  # the source's own TypeError

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
        cut = None if whole or not counted else self._one_chunk(units + carried)
        if cut is not None:
            chunks, rest = cut
        else:
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

    def _one_chunk(self, buffered: int) -> tuple[list[bytes], bytes] | None:
        """Exactly one chunk's worth and a bit: cut the last piece, not the joined chunk.

        The common case of a fast source (the pump stops at the first piece
        that crosses ``chunk_size``): the chunk is joined once, where joining
        and then splitting copies it twice. None: take the general path.
        """
        pieces, carry = self.pieces, self.carry
        excess = buffered - self.chunk_size
        last = pieces[-1] if pieces else None
        if type(last) is not bytes or not 0 <= excess <= len(last):
            return None
        keep = len(last) - excess
        if excess:
            pieces[-1] = last[:keep]
        if carry:
            pieces.insert(0, carry)
        try:
            chunk = b"".join(pieces)  # type: ignore[arg-type]
        except TypeError:  # a str among them: counted in characters, not bytes
            if carry:
                del pieces[0]
            pieces[-1] = last
            return None
        pieces.clear()
        rest = last[keep:] if excess else b""
        if len(chunk) != self.chunk_size:  # a memoryview of wider items: len() is not bytes
            return split_exact(chunk + rest, self.chunk_size)
        return [chunk], rest

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
    oldest: float | None = None  # when the oldest buffered byte was first seen
    try:
        while not pump.done:
            if pump.total - pump.taken >= chunk_size:
                chunks, rest = pump.take(whole=False, encoding=encoding)
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
            else:
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
        elif not task.cancelled():
            task.exception()  # retrieved: the pump keeps what it caught in ``error``


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
