"""Writer-style producers in a helper thread: the sync side of the hand-off.

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

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..chunking import Piece
from .handoff import HandOff, StreamClosed, check_piece

__all__ = ["JOIN_TIMEOUT", "HandOff", "Out", "StreamClosed", "ThreadWriter"]

logger = logging.getLogger("django_streamer")


# How long the reader waits, once closed, for a producer that does not write
# again (stuck in a query, say) before it lets the server move on.
JOIN_TIMEOUT = 5.0


class Out:
    """The ``out`` a sync producer writes into (a binary or text file-like)."""

    def __init__(self, pipe: SyncPipe, *, text: bool) -> None:
        self._pipe = pipe
        self._text = text
        self._kind = str if text else bytes

    def write(self, data: Any) -> int:
        # csv.writer calls this once per row: the common type skips the check.
        if type(data) is not self._kind:
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


class SyncPipe:
    """A :class:`HandOff` shared by a producer thread and the server's thread."""

    def __init__(self, hand: HandOff) -> None:
        self.hand = hand
        # Entering the bare lock is C code; entering the Condition is a Python
        # call per write. Both hold the same lock.
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.reader_waiting = False

    def put(self, data: Piece) -> None:
        hand = self.hand
        with self.lock:
            if hand.add(data) and self.reader_waiting:
                self.cond.notify_all()
            if hand.size >= hand.limit:
                self._wait_for_room()

    def _wait_for_room(self) -> None:
        hand = self.hand
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
