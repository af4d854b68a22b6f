"""The pump: a task that reads an async source into batches, for ``achunking``.

Book-keeping is in ``len()`` units (bytes, or chars for ``str``) as running
totals: the pump owns ``total`` (appended so far) and the consumer owns
``taken``; ``taken + len(carry)`` is what the consumer has been handed. Per
item the pump does what a list-and-join rechunker does (``append``, ``len``,
one comparison with ``limit``). At ``limit`` (a chunk boundary, or the first
piece after the consumer found the buffer empty) it publishes ``total``, wakes
the consumer, and at a boundary closes the open batch: a list of pieces that
ends with the piece crossing the boundary, so a chunk is one join of a batch
and the consumer is woken per chunk, never per item.

The pump stops (``space``) only with ``AHEAD`` chunks buffered: while the
consumer's sends do not suspend, every switch between the two tasks costs an
event-loop round, which per chunk of small records cost ~10% (bench/).
Plain Python, no Django.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterable, Callable

from .chunking import PIECE_TYPES, Piece, bad_item, split_all, split_exact, take_pieces

__all__ = ["AHEAD", "Pump"]

# How many chunks the pump may read ahead of the consumer.
AHEAD = 4


class Pump:
    __slots__ = (
        "batches",
        "carry",
        "chunk_size",
        "closed",
        "done",
        "eager",
        "error",
        "high",
        "limit",
        "name",
        "pieces",
        "set_limit",
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
        self.pieces: list[Piece] = []  # the open batch; the pump appends to it
        self.batches: collections.deque[tuple[list[Piece], int]] = collections.deque()
        self.carry = b""  # encoded tail of the last chunk
        self.total = 0  # published by the pump at each ``limit``
        self.closed = 0  # ``total`` where the open batch starts
        self.taken = 0
        self.limit = 1
        self.eager = True  # ``limit`` is "any piece", not a chunk boundary
        self.high = AHEAD * chunk_size
        self.done = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.space: asyncio.Future[None] | None = None
        # Tells a running ``run()`` of a new ``limit`` (its loop reads a local).
        self.set_limit: Callable[[int], None] = _ignore

    async def run(self) -> None:
        # ``pieces.append`` on a local list (3.11 inlines list.append; a bound
        # method in a local does not), no ``try`` in the loop, and ``limit`` a
        # variable of this frame rather than an attribute: per item, this loop
        # does no more than a list-and-join rechunker's.
        pieces = self.pieces
        iterator = aiter(self.source)
        total = 0
        limit = self.limit

        def set_limit(value: int) -> None:  # the consumer's, after a timed flush
            nonlocal limit
            limit = value

        self.set_limit = set_limit
        piece: object = b""  # bound for the error path, should the source yield nothing
        try:
            async for piece in iterator:
                total += len(piece)
                pieces.append(piece)
                if total >= limit:
                    pieces = self._cross(total)
                    limit = self.limit
                    if total - self.taken >= self.high:
                        self.space = asyncio.get_running_loop().create_future()
                        await self.space
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

    def _cross(self, total: int) -> list[Piece]:
        """``total`` reached ``limit``: publish, wake, close the batch at a boundary."""
        self.total = total
        self.wake()
        chunk_size = self.chunk_size
        if self.eager:
            self.eager = False
            self.limit = self.taken + chunk_size
            if total < self.limit:
                return self.pieces
        # A piece may cross several boundaries; the next is past ``total``.
        self.limit += chunk_size * ((total - self.limit) // chunk_size + 1)
        self.batches.append((self.pieces, total - self.closed))
        self.closed = total
        self.pieces = []
        return self.pieces

    def _bad_item(self, exc: TypeError, piece: object) -> Exception:
        """``len()`` of a bad item failed in ``run()`` itself: name the item."""
        raised_here = exc.__traceback__ is not None and exc.__traceback__.tb_next is None
        if raised_here and not isinstance(piece, PIECE_TYPES):
            return bad_item(self.name, piece)
        return exc  # the source's own TypeError

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _make_room(self) -> None:
        space = self.space
        if space is not None and not space.done():
            space.set_result(None)

    # -- the consumer's side: runs without awaiting, so the pump cannot append meanwhile

    def take_batch(self, encoding: str) -> list[bytes]:
        """The full chunks of the oldest closed batch, and what is left over."""
        batch, units = self.batches.popleft()
        carried = len(self.carry)
        cut = _one_chunk(batch, self.carry, units + carried, self.chunk_size)
        if cut is None:
            data = take_pieces(batch, self.carry, encoding, self.name)
            cut = split_exact(data, self.chunk_size)
        chunks, self.carry = cut
        self.taken += units + carried - len(self.carry)
        self._make_room()
        return chunks

    def take_all(self, encoding: str) -> list[bytes]:
        """Everything buffered, as chunks (the flush and the end)."""
        pieces = self.pieces  # the pump's open batch: emptied, not replaced
        if self.batches:
            pieces = [p for batch, _ in self.batches for p in batch] + pieces
            self.pieces.clear()
            self.batches.clear()
        if self.done:  # ``total`` is exact: no need to count
            self.taken = self.total
        else:
            self.taken += sum(map(len, pieces)) + len(self.carry)
        data = take_pieces(pieces, self.carry, encoding, self.name)
        self.carry = b""
        self.closed = self.taken
        self.limit, self.eager = self.taken + 1, True
        self.set_limit(self.limit)
        self._make_room()
        return split_all(data, self.chunk_size)

    def wake_on_any(self) -> None:
        """Nothing is buffered: wake the consumer at the next piece, not at the
        next chunk boundary (so a piece after silence starts the timer)."""
        if not self.eager:
            self.limit, self.eager = self.taken + 1, True
            self.set_limit(self.limit)

    def buffered(self) -> bool:
        return bool(self.batches or self.pieces or self.carry)

    def last(self, encoding: str, on_end: Callable[[int], None] | None) -> list[bytes]:
        """Once the source ended: what is left, as chunks (``on_end`` told, unless it failed)."""
        chunks = self.take_all(encoding) if self.buffered() else []
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


def _ignore(limit: int) -> None:
    """``set_limit`` before ``run()`` started: it reads ``limit`` when it does."""


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _one_chunk(
    batch: list[Piece], carry: bytes, buffered: int, chunk_size: int
) -> tuple[list[bytes], bytes] | None:
    """One chunk and a bit: cut the batch's last piece, not the joined chunk.

    The common case (a batch ends with the piece that crossed the boundary):
    the chunk is joined once, where joining and then splitting copies it
    twice. None: take the general path.
    """
    excess = buffered - chunk_size
    last = batch[-1] if batch else None
    if type(last) is not bytes or not 0 <= excess <= len(last):
        return None
    keep = len(last) - excess
    if excess:
        batch[-1] = last[:keep]
    if carry:
        batch.insert(0, carry)
    try:
        chunk = b"".join(batch)  # type: ignore[arg-type]
    except TypeError:  # a str among them: counted in characters, not bytes
        if carry:
            del batch[0]
        batch[-1] = last
        return None
    rest = last[keep:] if excess else b""
    if len(chunk) != chunk_size:  # a memoryview of wider items: len() is not bytes
        return split_exact(chunk + rest, chunk_size)
    return [chunk], rest
