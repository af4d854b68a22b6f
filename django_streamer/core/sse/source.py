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
import queue
import threading
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable
from typing import Any

from ..drain import Drain
from ..recorder import Outcome
from .events import IDLE, comment, encode
from .schedule import Schedule
from .threads import ThreadBudget

__all__ = ["AsyncEvents", "SyncEvents"]

# Events already queued are written together, up to this many per write.
_BATCH = 32

_END = object()


class SyncEvents:
    """Iterator of SSE text over a blocking source, read by a helper thread.

    The thread lets pings go out while the source blocks (a WSGI server thread
    can do nothing else meanwhile). :meth:`close` asks the thread to stop; it
    stops, and closes the source from its own thread, the next time the
    source yields (an event or :data:`~.events.IDLE`). Nothing is raised
    inside a call the source is making, so a lock or queue it shares with
    other streams is never left half-updated; a source blocked in a call keeps
    its (daemon) thread until the call returns. ``on_thread_end`` runs last in
    the thread (the Django layer closes the thread's database connections
    there). ``budget``, when given, is a thread already counted in it: given
    back when the thread ends, or at :meth:`close` if it never started.
    """

    def __init__(
        self,
        source: Iterable[Any],
        *,
        schedule: Schedule,
        drain: Drain,
        on_thread_end: Callable[[], None] | None = None,
        budget: ThreadBudget | None = None,
    ) -> None:
        self.schedule = schedule
        self._source = source
        self._drain = drain
        self._on_thread_end = on_thread_end
        self._budget = budget
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=_BATCH)
        self._stop = threading.Event()
        self._stash: tuple[str, Any] | None = None
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
        """``first`` and the items queued behind it, encoded.

        An item that cannot be encoded does not take the ones before it down:
        they go out, and its error is raised on the next call.
        """
        try:
            blocks = [encode(first)]
        except Exception:
            self._end()
            raise
        while len(blocks) < _BATCH:
            try:
                message = self._queue.get_nowait()
            except queue.Empty:
                break
            if message[0] == "item":
                try:
                    blocks.append(encode(message[1]))
                    continue
                except Exception as exc:
                    message = ("error", exc)
            self._stash = message
            break
        return "".join(blocks)

    def _pump(self) -> None:
        iterator: Any = None
        try:
            try:
                iterator = iter(self._source)
                while (item := next(iterator, _END)) is not _END:
                    if item is not IDLE and not self._put(("item", item)):
                        return
                    if self._stop.is_set():
                        return
                self._put(("end", None))
            except Exception as exc:
                self._put(("error", exc))
        finally:
            self._cleanup(iterator)

    def _cleanup(self, iterator: Any) -> None:
        # Closing here, in the source's own thread, raises GeneratorExit at
        # the yield it is suspended at: its ``finally`` blocks run here too.
        try:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        finally:
            try:
                if self._on_thread_end is not None:
                    self._on_thread_end()
            finally:
                if self._budget is not None:
                    self._budget.give_back()

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
        """Ask the helper thread to stop; it closes the source at its next yield.

        Returns at once: a source blocked in a call finishes the call first.
        """
        first_close = not self._done
        self._end()
        if first_close and self.thread is None and self._budget is not None:
            self._budget.give_back()  # the thread never started


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
                if item is IDLE:
                    continue
                schedule.sent(schedule.clock())
                return encode(item)
            now = schedule.clock()
            if schedule.ping_due(now):
                schedule.sent(now)
                return comment()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
