"""The bounded hand-off between a writer-style producer and the server.

Plain Python, no Django: only state and decisions. The sync twin
(:mod:`.thread`, a producer thread) and the async twin (:mod:`.task`, a
producer task) add the waiting. Chunks come out already sized:
``chunk_size`` bytes, or fewer when the producer flushes, ends, or the oldest
buffered byte has waited ``flush_interval``.
"""

from __future__ import annotations

import time
from collections import deque

from ..chunking import Piece, join_pieces, split_exact


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

    def extend(self, pieces: list[Piece], size: int, since: float) -> None:
        """Buffer a batch of ``size`` (written since ``since``); the sync twin's path."""
        if self.closed:
            raise StreamClosed(f"stream {self.name!r}: the client went away")
        if not size:
            return
        self.pieces.extend(pieces)
        if not self.size or since < self.oldest:
            self.oldest = since
        self.size += size

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


def check_piece(data: object, *, text: bool | None, name: str) -> None:
    """``text``: True takes str, False bytes, None either (str encoded with the hand-off's)."""
    if text is None:
        if not isinstance(data, (str, bytes, bytearray, memoryview)):
            raise TypeError(
                f"stream {name!r}: write() takes bytes or str, not {type(data).__name__}"
            )
    elif text:
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
