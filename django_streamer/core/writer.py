"""Writer-style producers: a bounded hand-off between a producer and the server.

Plain Python, no Django. A producer is called with a file-like ``out`` and
writes the body into it; the server reads chunks out of the other end. A sync
producer runs in a helper thread started on the server's first ``next()``;
an async one runs as a task on the loop that reads the stream. Either way:

* ``write()`` blocks (or awaits) while ``limit`` bytes are waiting, so memory
  per stream stays bounded whatever the producer does (back-pressure);
* after the reader goes away (``close()``) the next ``write()`` raises
  :class:`StreamClosed`, and the reader waits for the producer to end;
* an exception in the producer is raised by the reader, and what was buffered
  but not yet read is dropped: a failure before the first byte can still turn
  into an error response, and a later one leaves the body incomplete.

Chunks come out already sized: ``chunk_size`` bytes, or fewer when the
producer calls ``flush()``, ends, or the oldest buffered byte has waited
``flush_interval`` (which holds even while the producer is silent).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator
from typing import Any

from .chunking import Piece, join_pieces, split_exact

logger = logging.getLogger("django_streamer")

# How long the reader waits, once closed, for a producer that does not write
# again (stuck in a query, say) before it lets the server move on.
JOIN_TIMEOUT = 5.0


class StreamClosed(BrokenPipeError):
    """The client went away; whatever is written now would go nowhere."""


class HandOff:
    """What is buffered between one producer and one reader, and the rules.

    Only state and decisions; the sync and async twins below add the waiting.
    Sizes are in ``len()`` units: bytes, or characters for text producers
    (encoded once per chunk, not per write).
    """

    __slots__ = (
        "chunk_size",
        "closed",
        "done",
        "encoding",
        "error",
        "flush_interval",
        "flush_wanted",
        "limit",
        "name",
        "oldest",
        "pieces",
        "ready",
        "size",
    )

    def __init__(
        self, *, chunk_size: int, flush_interval: float, limit: int, encoding: str, name: str
    ) -> None:
        self.chunk_size = chunk_size
        self.flush_interval = flush_interval
        self.limit = max(limit, 1)
        self.encoding = encoding
        self.name = name
        self.pieces: list[Piece] = []
        self.ready: deque[bytes] = deque()  # full chunks split off, still counted in size
        self.size = 0
        self.oldest = 0.0  # when the oldest buffered piece arrived (if any)
        self.flush_wanted = False
        self.done = False
        self.closed = False
        self.error: BaseException | None = None

    def add(self, data: Piece) -> bool:
        """Buffer ``data``; True when the reader should be woken."""
        if self.closed:
            raise StreamClosed(f"stream {self.name!r}: the client went away")
        size = len(data)
        if not size:
            return False
        self.pieces.append(data)
        was_empty = not self.size
        self.size += size
        if was_empty:
            self.oldest = time.monotonic()
            return True
        return self.size >= self.chunk_size

    def drop(self) -> None:
        """Forget what is buffered (the reader is gone)."""
        self.pieces.clear()
        self.ready.clear()
        self.size = 0

    def full(self) -> bool:
        return self.size >= self.limit and not self.closed

    def wait_for(self) -> float | None:
        """Seconds the reader may sleep before something is due (None: until woken)."""
        if self.error is not None or self.done or self.flush_wanted or self.ready:
            return 0.0
        if self.size >= self.chunk_size:
            return 0.0
        if not self.size:
            return None
        return max(0.0, self.oldest + self.flush_interval - time.monotonic())

    def take(self) -> list[bytes] | None:
        """The chunk due now (a list of one), ``[]`` if none, ``None`` at the end.

        One chunk at a time, so that what the reader holds is never more than
        a chunk: the producer is blocked at ``limit`` bytes buffered here.
        Raises the producer's error, dropping what was not read yet.
        """
        if self.error is not None:
            self.pieces.clear()
            self.ready.clear()
            error, self.error = self.error, None
            self.done = True
            raise error
        if not self.ready:
            if not self.size:
                self.flush_wanted = False
                return None if self.done else []
            self._split()
            if not self.ready:
                return []
        chunk = self.ready.popleft()
        self.size -= len(chunk)
        return [chunk]

    def _split(self) -> None:
        whole = (
            self.done or self.flush_wanted or time.monotonic() - self.oldest >= self.flush_interval
        )
        self.flush_wanted = False
        data = join_pieces(self.pieces, self.encoding, self.name)
        self.pieces.clear()
        chunks, rest = split_exact(data, self.chunk_size)
        if rest and whole:
            chunks.append(rest)
            rest = b""
        if rest:
            self.pieces.append(rest)  # ``oldest`` stays: a lower bound for these bytes
        self.ready.extend(chunks)
        self.size = len(data)


class Out:
    """The ``out`` a sync producer writes into (a binary or text file-like)."""

    def __init__(self, pipe: SyncPipe, *, text: bool) -> None:
        self._pipe = pipe
        self._text = text

    def write(self, data: Any) -> int:
        check_piece(data, text=self._text, name=self._pipe.hand.name)
        self._pipe.put(data)
        return len(data)

    def writelines(self, lines: Iterable[Any]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Send what is buffered now, whatever its size."""
        self._pipe.flush()

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._pipe.hand.closed


class AsyncOut:
    """The ``out`` an async producer awaits: ``write()``, ``writelines()``, ``drain()``."""

    def __init__(self, pipe: AsyncPipe, *, text: bool) -> None:
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


def check_piece(data: object, *, text: bool, name: str) -> None:
    if text:
        if type(data) is not str and not isinstance(data, str):
            raise TypeError(
                f"stream {name!r}: a text writer takes str, not {type(data).__name__}"
                " (use text=False to write bytes)"
            )
    elif not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"stream {name!r}: write() takes bytes, not {type(data).__name__}"
            " (use text=True to write str)"
        )


class SyncPipe:
    """A :class:`HandOff` shared by a producer thread and the server's thread."""

    def __init__(self, hand: HandOff) -> None:
        self.hand = hand
        self.cond = threading.Condition(threading.Lock())
        self.reader_waiting = False

    def put(self, data: Piece) -> None:
        hand = self.hand
        with self.cond:
            if hand.add(data) and self.reader_waiting:
                self.cond.notify_all()
            if hand.full():
                self.cond.notify_all()
                while hand.full():
                    self.cond.wait()
                if hand.closed:
                    raise StreamClosed(f"stream {hand.name!r}: the client went away")

    def flush(self) -> None:
        with self.cond:
            if self.hand.closed:
                raise StreamClosed(f"stream {self.hand.name!r}: the client went away")
            self.hand.flush_wanted = True
            self.cond.notify_all()

    def end(self, error: BaseException | None) -> None:
        with self.cond:
            self.hand.done = True
            self.hand.error = error
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.hand.closed = True
            self.hand.drop()
            self.cond.notify_all()

    def take(self) -> list[bytes] | None:
        """Block until chunks are due; ``None`` at the end."""
        hand = self.hand
        with self.cond:
            while True:
                timeout = hand.wait_for()
                if timeout == 0.0:
                    chunks = hand.take()
                    self.cond.notify_all()  # there is room again
                    if chunks or chunks is None:
                        return chunks
                    continue
                self.reader_waiting = True
                try:
                    self.cond.wait(timeout)
                finally:
                    self.reader_waiting = False


class ThreadWriter:
    """A sync iterable of chunks whose producer runs in a helper thread.

    The thread starts on the first ``next()``; ``close()`` (the client left, or
    the stream ended) makes the producer's next write raise
    :class:`StreamClosed` and waits for the thread to end. ``on_exit`` runs in
    the thread after the producer returns or raises (Django closes the
    thread's database connections there).
    """

    def __init__(
        self,
        produce: Callable[[Out], object],
        hand: HandOff,
        *,
        text: bool = False,
        on_exit: Callable[[], object] | None = None,
    ) -> None:
        self.produce = produce
        self.pipe = SyncPipe(hand)
        self.text = text
        self.on_exit = on_exit
        self.thread: threading.Thread | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks()

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            self.produce(Out(self.pipe, text=self.text))
        except StreamClosed:
            pass  # the client left; the reader already knows
        except BaseException as exc:
            error = exc
        finally:
            try:
                if self.on_exit is not None:
                    self.on_exit()
            finally:
                self.pipe.end(error)

    def _chunks(self) -> Iterator[bytes]:
        self.thread = threading.Thread(
            target=self._run, name=f"streamer-writer {self.pipe.hand.name}", daemon=True
        )
        self.thread.start()
        try:
            while True:
                chunks = self.pipe.take()
                if chunks is None:
                    return
                yield from chunks
        finally:
            self.close()

    def close(self) -> None:
        self.pipe.close()
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT)
            if thread.is_alive():
                logger.warning(
                    "Stream %r: the producer thread has not ended %.0f s after the stream "
                    "closed; it ends at its next write",
                    self.pipe.hand.name,
                    JOIN_TIMEOUT,
                )


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
    produce: Callable[[AsyncOut], Awaitable[object]], hand: HandOff, *, text: bool = False
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
