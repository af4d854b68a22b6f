"""One stream: its source, its chunking, its outcome. Plain Python, no Django."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from .bridge import aiter_sync, iter_async
from .compression.stage import Compressor
from .drivers import aprepended, cancel_then_close, drive_async, drive_sync, prepended
from .drivers import close_quietly as _close
from .lifecycle import Lifecycle, State
from .pipeline import check_chunk_size, check_flush_interval, rechunk_async, rechunk_sync
from .recorder import Outcome, Recorders, StreamRecorder
from .sendfile import FileSender
from .sources import classify, read_window

logger = logging.getLogger("django_streamer")

__all__ = ["FileSender", "State", "Stream"]


# The states a stream may be consumed from (module constants: not built per call).
_FROM_NEW = frozenset({State.NEW})
_FROM_NEW_OR_PREPARED = frozenset({State.NEW, State.PREPARED})


class Stream:
    """A source, how to chunk it, and the recorders that watch it.

    Sources: sync or async iterables of pieces (``bytes``, ``bytearray``,
    ``memoryview``, ``str``), binary or text file-like objects (read in
    ``chunk_size`` pieces and closed at the end) and ``os.PathLike`` paths
    (opened here, closed here, with a known length).

    Its consumption is one :class:`~.lifecycle.State`; its end is one
    :class:`Outcome`, told to the recorders exactly once.
    """

    def __init__(
        self,
        source: object,
        *,
        name: str,
        chunk_size: int,
        flush_interval: float,
        encoding: str = "utf-8",
        recorder: StreamRecorder | None = None,
    ) -> None:
        self.name = name
        self.chunk_size = check_chunk_size(chunk_size, name=name)
        self.flush_interval = check_flush_interval(flush_interval, name=name)
        self.encoding = encoding
        self.recorders = Recorders([recorder] if recorder is not None else [])
        classified = classify(source, name=name, chunk_size=self.chunk_size)
        self.length = classified.length
        self.file_start = classified.start  # where the file's bytes begin (see window())
        self.file = classified.file  # the file-like we read, if any
        self.binary_file = classified.binary_file
        self.is_async = classified.is_async
        self.sent_bytes = 0
        self.path = ""  # the request's path, when the caller knows it (for metrics)
        self.outcome: Outcome | None = None
        self.lifecycle = Lifecycle(name)
        self.items: Any = classified.items  # what the chunker reads (pipeline.py)
        self.compressor: Compressor | None = None  # the compressing stage, if any
        self._outcome_lock = threading.Lock()
        self._sender: FileSender | None = None
        self._sync: Iterator[bytes] | None = None  # the sync driver, once made
        self._first: bytes | None = None  # the chunk prepare() made, not yet taken
        self._pending: asyncio.Future[bytes] | None = None  # aprepare()'s first chunk
        self._async: AsyncIterator[bytes] | None = None  # the async driver, once made

    @property
    def state(self) -> State:
        return self.lifecycle.state

    # -- before the response starts -------------------------------------

    def compress(self, compressor: Compressor) -> None:
        """Put ``compressor`` between the chunker and the driver (before any chunk).

        A binary file is then read through it, never sent with sendfile.
        """
        if self.state is not State.NEW:
            raise RuntimeError(f"stream {self.name!r}: compress before it starts")
        self.compressor = compressor
        self.length = None  # the body's length is not the wire's

    def window(self, offset: int, count: int) -> None:
        """Send ``count`` bytes of the binary file from ``offset``, not all of it (a range).

        Still with sendfile where the server allows, from that offset.
        """
        if self.state is not State.NEW or not self.binary_file:
            raise RuntimeError(f"stream {self.name!r}: only a binary file, before it starts")
        self.file.seek(self.file_start + offset)
        self.file_start += offset
        self.length = count
        self.items = read_window(self.file, size=self.chunk_size, count=count)

    def replace_items(self, items: Iterable[bytes], *, length: int) -> None:
        """Send ``items``, ``length`` bytes in all, instead of the file (parts, or nothing).

        The file stays open for them and is closed with the stream.
        """
        if self.state is not State.NEW or not self.binary_file:
            raise RuntimeError(f"stream {self.name!r}: only a binary file, before it starts")
        self.items = items
        self.length = length
        self.binary_file = False  # read through the chunker: no sendfile

    def can_prepare(self) -> bool:
        """Whether the first chunk may be made before the response starts.

        Not for uncompressed binary files: their length is known, and the
        sendfile path must stay open.
        """
        return self.state is State.NEW and (not self.binary_file or self.compressor is not None)

    def prepare(self) -> int | None:
        """Make the first chunk now (blocking), before the headers go.

        A source that fails here raises here, while the caller can still
        answer with an error page. Returns the whole body's length when the
        source ended within the first chunk (``Content-Length`` then replaces
        chunked framing). Call it only where blocking is fine.
        """
        self.lifecycle.move(State.PREPARED, allowed=_FROM_NEW)
        ended: list[int] = []
        self._sync = self._sync_driver(ended.append)
        self._first = next(self._sync, None)
        return ended[0] if ended else None

    async def aprepare(self, wait: float) -> int | None:
        """``prepare()`` for an event loop: wait up to ``wait`` s for the first chunk.

        If it is not made by then, the response starts without it and the
        chunk is sent when it comes, so a slow source's first byte is never
        later than without this wait.
        """
        self.lifecycle.move(State.PREPARED, allowed=_FROM_NEW)
        ended: list[int] = []
        rest = self._async = self._async_driver(ended.append)
        first = self._pending = asyncio.ensure_future(anext(rest))
        try:
            await asyncio.wait({first}, timeout=wait)
        except asyncio.CancelledError:
            # The client went away during the wait (Django's ASGI handler
            # cancels the request's task): nobody will send or close this
            # response, so end the stream here, or its source, its slot and
            # its metrics stay open for good. The driver records the
            # outcome (aborted).
            await cancel_then_close(first, rest)
            self.close()
            raise
        if first.done() and not first.cancelled():
            error = first.exception()
            if error is not None and not isinstance(error, StopAsyncIteration):
                raise error
        return ended[0] if ended else None

    # -- the chunks -----------------------------------------------------

    def sync_chunks(self) -> Iterator[bytes]:
        """The chunks for a sync server (WSGI); an async source is bridged."""
        old = self.lifecycle.move(State.STREAMING, allowed=_FROM_NEW_OR_PREPARED)
        if old is State.NEW:
            self._sync = self._sync_driver(None)
            return self._sync
        if self._async is not None:
            assert self._pending is not None
            return iter_async(aprepended(self._pending, self._async))
        assert self._sync is not None
        return prepended(self._first, self._sync)

    def async_chunks(self) -> AsyncIterator[bytes]:
        """The chunks for an async server (ASGI); a sync source is bridged."""
        old = self.lifecycle.move(State.STREAMING, allowed=_FROM_NEW_OR_PREPARED)
        if old is State.NEW:
            return self._async_driver(None)
        if self._async is not None:
            assert self._pending is not None
            return aprepended(self._pending, self._async)
        assert self._sync is not None
        return aiter_sync(prepended(self._first, self._sync))

    def _sync_driver(self, on_end: Callable[[int], None] | None) -> Iterator[bytes]:
        """Chunks, counted and recorded, for sync code; an async source runs on a private loop."""
        if self.is_async:
            return drive_sync(self, iter_async(rechunk_async(self, on_end)))
        return drive_sync(self, rechunk_sync(self, on_end))

    def _async_driver(self, on_end: Callable[[int], None] | None) -> AsyncIterator[bytes]:
        """Chunks, counted and recorded, for an event loop; a sync source runs in a thread."""
        if self.is_async:
            return drive_async(self, rechunk_async(self, on_end))
        # Driven in the thread, so close() can close it.
        self._sync = drive_sync(self, rechunk_sync(self, on_end))
        return aiter_sync(self._sync)

    def sendfile(self) -> FileSender | None:
        """A file object for ``wsgi.file_wrapper`` (the sendfile path), if any."""
        if self.compressor is not None or not self.binary_file:
            return None
        if not self.lifecycle.try_move(State.SENDFILE):
            return None
        self._sender = FileSender(
            self.file,
            on_start=self._sendfile_started,
            on_progress=self._sent,
            on_close=self.close,
            limit=self.length,
        )
        return self._sender

    def cancel_sendfile(self) -> None:
        """The server iterates after all: forget the sendfile wrapper."""
        sender = self._sender
        if sender is not None and sender.furthest == 0 and self.lifecycle.try_move(State.NEW):
            self._sender = None

    def _sendfile_started(self) -> None:
        # The recorders learn of the first byte when sending starts (an empty
        # chunk), not when sendfile() returns with the whole file.
        self.recorders.chunk(0)

    def _sent(self, nbytes: int) -> None:
        self.sent_bytes += nbytes
        self.recorders.chunk(nbytes)

    # -- ending ---------------------------------------------------------

    def clean_end(self) -> Outcome:
        """The outcome of a source read to its end: ``drained`` if the source says so.

        A source that ends itself because the worker drains (the SSE sources,
        or any iterator object) sets ``outcome = Outcome.DRAINED`` before it
        stops; read once per stream, at its end.
        """
        said = getattr(self.items, "outcome", None)
        return Outcome.DRAINED if said is Outcome.DRAINED else Outcome.COMPLETED

    def add_recorder(self, recorder: StreamRecorder) -> None:
        """Tell ``recorder`` of every later chunk and of the outcome, exactly once.

        Added after the stream ended, it hears the outcome at once. Its
        ``start()`` is not called: the stream has started.
        """
        lock = self._outcome_lock
        lock.acquire()  # not ``with``: see "The hot path" in docs/architecture.md
        try:
            outcome = self.outcome
            if outcome is None:
                self.recorders.add(recorder)
        finally:
            lock.release()
        if outcome is not None:
            recorder.finish(outcome)

    def discard(self) -> None:
        """Close what the stream opened without telling any recorder (it never started)."""
        with self._outcome_lock:
            self.outcome = Outcome.ABORTED
        try:
            if self.lifecycle.try_move(State.CLOSED):
                _close(self.items)
        finally:
            if self.file is not None:
                self.file.close()

    def finish(self, outcome: Outcome) -> None:
        """Record the outcome; the first one wins, and recorders hear it once."""
        lock = self._outcome_lock
        lock.acquire()
        try:
            if self.outcome is not None:
                return
            self.outcome = outcome
        finally:
            lock.release()
        self.recorders.finish(outcome)

    def close(self) -> None:
        """Release everything. Safe to call more than once, from any path.

        A stream closed before it was consumed to the end is ``aborted``.
        """
        old = self.lifecycle.state
        if not self.lifecycle.try_move(State.CLOSED):
            return
        try:
            if self._sync is not None:
                # Runs the driver's ``finally``: the source is closed and the
                # outcome recorded (aborted, unless it had completed). A driver
                # running in a worker thread right now is closed by its bridge.
                self._first = None
                try:  # noqa: SIM105 (per stream: contextlib.suppress is three calls)
                    _close(self._sync)
                except ValueError:  # "generator already executing"
                    pass
            pending = self._pending
            if pending is not None and not pending.done():
                # Django's ASGI handler calls close() in a worker thread: cancel
                # on the loop, which then runs the driver's cleanup.
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    pending.get_loop().call_soon_threadsafe(pending.cancel)
            if self._sender is not None and self._sender.done(self.length):
                self.finish(Outcome.COMPLETED)
            if old is State.NEW:
                _close(self.items)
            if self.file is not None:
                self.file.close()
        finally:
            self.finish(Outcome.ABORTED)
