"""Turn a source of events into SSE text with keep-alive pings. Plain Python, no Django.

:class:`SyncEvents` and :class:`AsyncEvents` are the sources a
:class:`~django_streamer.core.stream.Stream` serves (with ``flush_interval=0``,
so each block they yield is written at once). Both send a comment every
``ping`` seconds while the source is silent, end after ``max_duration`` and
end when the process drains; :class:`~.schedule.Schedule` holds those
rules for both.
A ping that cannot be written is how a vanished client is noticed: the
server's write fails and it closes the stream, which closes this source.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from typing import Any

from ..drain import Drain
from ..recorder import Outcome
from .events import comment, encode
from .schedule import Schedule

__all__ = ["AsyncEvents", "SourceClosed", "SyncEvents"]

# Events already queued are written together, up to this many per write.
_BATCH = 32


class SourceClosed(BaseException):
    """Raised inside a sync source whose stream was closed (the client went away).

    A ``BaseException``, like ``GeneratorExit``, so that a source's
    ``except Exception`` does not swallow it; its ``finally`` blocks run.
    """


_END = object()


class SyncEvents:
    """Iterator of SSE text over a blocking source, read by a helper thread.

    The thread lets pings go out while the source blocks (a WSGI server thread
    can do nothing else meanwhile). :meth:`close` stops it as soon as the
    source's ``next()`` returns: a source that waits on a queue or a
    notification should wake every few seconds, or the thread lingers until
    its next item. ``on_thread_end`` runs last in the thread (the Django layer
    closes the thread's database connections there).
    """

    def __init__(
        self,
        source: Iterable[Any],
        *,
        schedule: Schedule,
        drain: Drain,
        on_thread_end: Callable[[], None] | None = None,
    ) -> None:
        self.schedule = schedule
        self._source = source
        self._drain = drain
        self._on_thread_end = on_thread_end
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=_BATCH)
        self._stop = threading.Event()
        self._stash: tuple[str, Any] | None = None
        self._guard = threading.Lock()
        self._in_source = False
        self._interrupted = False
        self._done = False
        self._unregister: Callable[[], None] | None = None
        self.thread: threading.Thread | None = None

    @property
    def outcome(self) -> Outcome | None:
        """``drained`` when a drain ended the stream (for the stream's recorders)."""
        return self.schedule.outcome

    def __iter__(self) -> SyncEvents:
        return self

    def __next__(self) -> str:
        if self._done:
            raise StopIteration
        if self.thread is None:
            self._begin()
            return self.schedule.opening()
        return self._next_block()

    def _begin(self) -> None:
        self.thread = threading.Thread(target=self._pump, name="django-streamer-sse", daemon=True)
        self.thread.start()
        if self._drain.draining():
            self.schedule.drain(spread=False)
        self._unregister = self._drain.on_drain(self._on_drain)

    def _on_drain(self) -> None:
        self.schedule.drain()
        # A full queue means items are waiting: the reader wakes up anyway.
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(("wake", None))

    def _next_block(self) -> str:
        schedule = self.schedule
        while True:
            now = schedule.clock()
            ending = schedule.ending(now)
            if ending is not None:
                self._end()
                return ending
            try:
                kind, value = self._take(schedule.timeout(now))
            except queue.Empty:
                now = schedule.clock()
                if schedule.ping_due(now):
                    schedule.sent(now)
                    return comment()
                continue
            if kind == "item":
                schedule.sent(schedule.clock())
                return self._batch(value)
            if kind == "end":
                self._end()
                raise StopIteration
            if kind == "error":
                self._end()
                raise value

    def _take(self, timeout: float | None) -> tuple[str, Any]:
        if self._stash is not None:
            message, self._stash = self._stash, None
            return message
        return self._queue.get(timeout=timeout)

    def _batch(self, first: Any) -> str:
        blocks = [encode(first)]
        while len(blocks) < _BATCH:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                break
            if message[0] != "item":
                self._stash = message
                break
            blocks.append(encode(message[1]))
        return "".join(blocks)

    def _pump(self) -> None:
        iterator: Any = None
        try:
            try:
                iterator = iter(self._source)
                while (item := self._read(iterator)) is not _END:
                    if not self._put(("item", item)):
                        return
                self._put(("end", None))
            except SourceClosed:
                return
            except Exception as exc:
                self._put(("error", exc))
        finally:
            self._cleanup(iterator)

    def _read(self, iterator: Any) -> Any:
        # ``_in_source`` tells close() whether this thread is inside the
        # source, where SourceClosed may be raised (see close()).
        with self._guard:
            if self._stop.is_set():
                raise SourceClosed
            self._in_source = True
        try:
            return next(iterator, _END)
        finally:
            with self._guard:
                self._in_source = False

    def _cleanup(self, iterator: Any) -> None:
        try:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        finally:
            if self._on_thread_end is not None:
                self._on_thread_end()

    def _put(self, message: tuple[str, Any]) -> bool:
        # A slow client fills the queue; poll so that close() is seen.
        while not self._stop.is_set():
            try:
                self._queue.put(message, timeout=0.25)
                return True
            except queue.Full:
                continue
        return False

    def _end(self) -> None:
        self._done = True
        self._stop.set()
        if self._unregister is not None:
            self._unregister()
            self._unregister = None

    def close(self) -> None:
        """Stop the source and its helper thread.

        A thread inside the source gets :class:`SourceClosed` raised there, at
        its next Python instruction: at once for a source that waits in
        short steps (``queue.get(timeout=1)``, ``Event.wait(1)``), at its next
        item for one blocked in C without a timeout.
        """
        self._end()
        with self._guard:
            thread = self.thread
            if self._in_source and not self._interrupted and thread is not None:
                self._interrupted = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(thread.ident or 0), ctypes.py_object(SourceClosed)
                )


class AsyncEvents:
    """Async iterator of SSE text over an async source; pings while it is silent."""

    def __init__(
        self,
        source: AsyncIterable[Any],
        *,
        schedule: Schedule,
        drain: Drain,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        self.schedule = schedule
        self._source = source
        self._drain = drain
        # Runs once, on the event loop, when the opening block has been taken
        # (Django has run its response middleware by then).
        self._on_start = on_start
        self._pending: asyncio.Future[Any] | None = None
        self._gen = self._run()

    @property
    def outcome(self) -> Outcome | None:
        """``drained`` when a drain ended the stream (for the stream's recorders)."""
        return self.schedule.outcome

    def __aiter__(self) -> AsyncEvents:
        return self

    def __anext__(self) -> Any:
        return self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()

    async def _run(self) -> AsyncGenerator[str, None]:
        loop = asyncio.get_running_loop()
        drained: asyncio.Future[None] = loop.create_future()

        def on_drain() -> None:  # any thread
            self.schedule.drain()
            # A closed loop raises RuntimeError: the stream is over anyway.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, drained)

        if self._drain.draining():
            self.schedule.drain(spread=False)
        unregister = self._drain.on_drain(on_drain)
        iterator = aiter(self._source)
        try:
            yield self.schedule.opening()
            if self._on_start is not None:
                self._on_start()
            while True:
                block = await self._step(iterator, drained)
                if block is None:
                    return
                yield block
                if self.schedule.outcome is not None:
                    return  # that was the closing block
        finally:
            unregister()
            pending, self._pending = self._pending, None
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _step(self, iterator: Any, drained: asyncio.Future[None]) -> str | None:
        """The next block to send; None at the end of the source.

        A read still in flight when a ping is due stays in ``_pending``, so a
        cancellation (the client went away) finds and cancels it.
        """
        schedule = self.schedule
        while True:
            now = schedule.clock()
            ending = schedule.ending(now)
            if ending is not None:
                return ending
            if self._pending is None:
                self._pending = asyncio.ensure_future(iterator.__anext__())
            pending = self._pending
            waits = {pending} if drained.done() else {pending, drained}
            await asyncio.wait(waits, timeout=schedule.timeout(now), return_when="FIRST_COMPLETED")
            if pending.done():
                self._pending = None
                try:
                    item = pending.result()
                except StopAsyncIteration:
                    return None
                schedule.sent(schedule.clock())
                return encode(item)
            now = schedule.clock()
            if schedule.ping_due(now):
                schedule.sent(now)
                return comment()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
