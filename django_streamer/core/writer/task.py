"""Writer-style producers as a task on the reading loop: the async side of the hand-off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable
from typing import Any

from ..chunking import Piece
from .handoff import HandOff, StreamClosed, check_piece
from .thread import JOIN_TIMEOUT


class AsyncOut:
    """The ``out`` an async producer awaits: ``write()``, ``writelines()``, ``drain()``."""

    def __init__(self, pipe: AsyncPipe, *, text: bool | None) -> None:
        self._pipe = pipe
        self._text = text

    async def write(self, data: Any) -> int:
        check_piece(data, text=self._text, name=self._pipe.hand.name)
        await self._pipe.put(data)
        return len(data)

    async def writelines(self, lines: Iterable[Any]) -> None:
        for line in lines:
            await self.write(line)

    async def drain(self) -> None:
        """Send what is buffered now, and wait while the buffer is full."""
        await self._pipe.flush()

    flush = drain

    @property
    def closed(self) -> bool:
        return self._pipe.hand.closed


class AsyncPipe:
    """A :class:`HandOff` shared by a producer task and the reading coroutine."""

    def __init__(self, hand: HandOff) -> None:
        self.hand = hand
        self.reader: asyncio.Future[None] | None = None
        self.room: asyncio.Future[None] | None = None

    def wake_reader(self) -> None:
        if self.reader is not None and not self.reader.done():
            self.reader.set_result(None)

    def wake_producer(self) -> None:
        if self.room is not None and not self.room.done():
            self.room.set_result(None)

    async def put(self, data: Piece) -> None:
        hand = self.hand
        if hand.add(data):
            self.wake_reader()
        while hand.full():
            self.wake_reader()
            self.room = asyncio.get_running_loop().create_future()
            await self.room
        if hand.closed:
            raise StreamClosed(f"stream {hand.name!r}: the client went away")

    async def flush(self) -> None:
        if self.hand.closed:
            raise StreamClosed(f"stream {self.hand.name!r}: the client went away")
        self.hand.flush_wanted = True
        self.wake_reader()
        await asyncio.sleep(0)  # let the reader take it

    def close(self) -> None:
        self.hand.closed = True
        self.hand.drop()
        self.wake_producer()

    async def take(self) -> list[bytes] | None:
        hand = self.hand
        loop = asyncio.get_running_loop()
        while True:
            timeout = hand.wait_for()
            if timeout == 0.0:
                chunks = hand.take()
                self.wake_producer()
                if chunks or chunks is None:
                    return chunks
                continue
            self.reader = loop.create_future()
            handle = None if timeout is None else loop.call_later(timeout, self.wake_reader)
            try:
                await self.reader
            finally:
                self.reader = None
                if handle is not None:
                    handle.cancel()


async def async_writer_chunks(
    produce: Callable[[AsyncOut], Awaitable[object]], hand: HandOff, *, text: bool | None = False
) -> AsyncGenerator[bytes, None]:
    """An async iterator of chunks whose producer runs as a task on this loop."""
    pipe = AsyncPipe(hand)

    async def run() -> None:
        error: BaseException | None = None
        try:
            await produce(AsyncOut(pipe, text=text))
        except StreamClosed:
            pass
        except Exception as exc:
            error = exc
        finally:
            hand.done = True
            hand.error = error
            pipe.wake_reader()

    task = asyncio.get_running_loop().create_task(run())
    try:
        while True:
            chunks = await pipe.take()
            if chunks is None:
                return
            for chunk in chunks:
                yield chunk
    finally:
        pipe.close()
        if not task.done():
            try:
                await asyncio.wait_for(asyncio.shield(task), JOIN_TIMEOUT)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                task.cancel()
        await asyncio.gather(task, return_exceptions=True)
