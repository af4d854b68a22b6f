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
import time
from collections import deque
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
    """The ``out`` a sync producer writes into (a binary or text file-like).

    ``text``: True takes str, False bytes, None either (a ZIP member's ``out``:
    str is encoded with the hand-off's encoding, a chunk at a time).

    ``write()`` appends to the pipe's stage with no lock and no wake-up; the
    stage is handed over whole once it holds a chunk (or on ``flush()``, at the
    end, or when the reader sits idle), so a ``csv.writer`` producer pays a
    lock and a notify per chunk rather than per row.
    """

    def __init__(self, pipe: SyncPipe, *, text: bool | None) -> None:
        self._pipe = pipe
        self._hand = pipe.hand
        self._text = text
        self._kind = str if text else bytes
        self._stage = pipe.stage.append
        self._staged = 0  # len() appended since this thread's last hand-over
        self._batch = pipe.batch

    def write(self, data: Any) -> int:
        # csv.writer calls this once per row: the common type skips the check,
        # and one flag (closed, or the reader idle) stands for the rare cases.
        if type(data) is not self._kind:
            check_piece(data, text=self._text, name=self._hand.name)
        size = len(data)
        pipe = self._pipe
        if not self._staged:
            if not size:
                if self._hand.closed:
                    raise StreamClosed(f"stream {self._hand.name!r}: the client went away")
                return 0
            pipe.since = time.monotonic()
        self._stage(data)
        self._staged += size
        if self._staged >= self._batch or pipe.attention:
            self._staged = 0
            pipe.hand_over()  # raises StreamClosed once the client has gone
        return size

    def writelines(self, lines: Iterable[Any]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Send what is buffered now, whatever its size."""
        self._staged = 0
        self._pipe.flush()

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._hand.closed


class SyncPipe:
    """A :class:`HandOff` shared by a producer thread and the server's thread.

    Between the two sits the *stage*, a deque only the producer appends to
    (lock-free) and that is moved into the hand-off under the lock: by the
    producer once it holds a batch (a chunk, or less when the buffer limit is
    smaller), on ``flush()`` and at the end; by the reader when the oldest
    staged byte has waited ``flush_interval``, so a producer that goes silent
    mid-chunk is still sent on time. ``since`` stamps the stage's oldest byte:
    by the producer when it starts a batch; reset to None by whoever empties
    the stage, and then stamped by the reader when it finds bytes there.

    The reader sets ``attention`` before it sleeps with nothing due, then looks
    at the stage again; the producer looks at ``attention`` after each append.
    So one of the two always sees the other's byte (deque appends and pops are
    atomic), and the producer hands over at once to an idle reader.
    ``close()`` sets it too, so that the next write raises.
    """

    def __init__(self, hand: HandOff) -> None:
        self.hand = hand
        self.lock = threading.Lock()
        self.readable = threading.Condition(self.lock)  # the reader waits on it
        self.room = threading.Condition(self.lock)  # the producer waits on it
        self.stage: deque[Piece] = deque()
        self.since: float | None = None
        self.batch = min(hand.chunk_size, hand.limit)
        self.attention = False  # the reader sleeps with nothing due, or closed
        self.reader_waiting = False
        self.producer_waiting = False

    def _move(self) -> None:
        """Everything staged into the hand-off (the producer's thread, lock held)."""
        stage, hand = self.stage, self.hand
        pieces = list(stage)
        stage.clear()
        since, self.since = self.since, None
        hand.extend(pieces, sum(map(len, pieces)), time.monotonic() if since is None else since)

    def hand_over(self) -> None:
        with self.lock:
            self._move()
            self.attention = False
            if self.reader_waiting:
                self.readable.notify()
            if self._full():
                self._wait_for_room()

    def _full(self) -> bool:
        # Room for one more batch within the limit; but never wait while the
        # reader has less than a chunk, which it would only send at its deadline.
        hand = self.hand
        return hand.size >= hand.chunk_size and hand.size + self.batch > hand.limit

    def _wait_for_room(self) -> None:
        hand = self.hand
        self.producer_waiting = True
        try:
            while self._full() and not hand.closed:
                self.room.wait()
        finally:
            self.producer_waiting = False
        if hand.closed:
            raise StreamClosed(f"stream {hand.name!r}: the client went away")

    def _steal(self) -> None:
        """What is staged into the hand-off (the reader's thread, lock held)."""
        stage, pieces, size = self.stage, [], 0
        since = self.since
        while stage:  # the producer may append meanwhile: pop what is there
            piece = stage.popleft()
            pieces.append(piece)
            size += len(piece)
        self.since = None
        self.hand.extend(pieces, size, time.monotonic() if since is None else since)

    def flush(self) -> None:
        with self.lock:
            if self.hand.closed:
                raise StreamClosed(f"stream {self.hand.name!r}: the client went away")
            self._move()
            self.hand.flush_wanted = True
            self.readable.notify()

    def end(self, error: BaseException | None) -> None:
        with self.lock:
            if not self.hand.closed:
                self._move()
            self.hand.done = True
            self.hand.error = error
            self.readable.notify()

    def close(self) -> None:
        with self.lock:
            self.hand.closed = True
            self.attention = True
            self.hand.drop()
            self.stage.clear()
            self.room.notify()

    def take(self) -> list[bytes] | None:
        """Block until chunks are due; ``None`` at the end."""
        hand, stage = self.hand, self.stage
        with self.lock:
            while True:
                timeout = hand.wait_for()
                if timeout != 0.0 and stage:
                    since = self.since
                    if since is None:
                        self.since = since = time.monotonic()
                    due = since + hand.flush_interval - time.monotonic()
                    if due <= 0.0:
                        self._steal()
                        continue
                    timeout = due if timeout is None else min(timeout, due)
                if timeout == 0.0:
                    chunks = hand.take()
                    if self.producer_waiting:
                        self.room.notify()  # there may be room again
                    if chunks or chunks is None:
                        return chunks
                    continue
                if timeout is None:
                    self.attention = True
                    if stage:  # appended before the producer could see the flag
                        self.attention = False
                        continue
                self.reader_waiting = True
                try:
                    self.readable.wait(timeout)
                finally:
                    self.reader_waiting = False
                    self.attention = self.hand.closed


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
        text: bool | None = False,
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
