"""One stream: its source, its chunking, its outcome. Plain Python, no Django."""

from __future__ import annotations

import io
import itertools
import logging
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .bridge import aiter_sync, iter_async
from .chunking import Piece, StreamSourceError, aiter_chunks, iter_chunks
from .recorder import Outcome, Recorders, StreamRecorder

logger = logging.getLogger("django_streamer")


def check_chunk_size(value: object, *, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"stream {name!r}: chunk_size must be a positive int, got {value!r}")
    return value


def check_flush_interval(value: object, *, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(
            f"stream {name!r}: flush_interval must be a number of seconds >= 0, got {value!r}"
        )
    return float(value)


class Stream:
    """A source, how to chunk it, and the recorders that watch it.

    Sources: sync or async iterables of pieces (``bytes``, ``bytearray``,
    ``memoryview``, ``str``), binary or text file-like objects (read in
    ``chunk_size`` pieces and closed at the end) and ``os.PathLike`` paths
    (opened here, closed here, with a known length).
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
        self.length: int | None = None
        self.file: Any = None  # the file-like we read, if any
        self.binary_file = False
        self.is_async = False  # an async iterable that is not also a sync one
        self._source: Any = None
        self._lock = threading.Lock()
        self._claimed = False
        self._finished = False
        self._sender: FileSender | None = None
        self.sent_bytes = 0
        self.path = ""  # the request's path, when the caller knows it (for metrics)
        self._driver: Iterator[bytes] | None = None  # the sync driver, once made
        self._first: bytes | None = None  # a chunk prefetch() made and nobody took yet
        self._classify(source)

    # -- classification -------------------------------------------------

    def _classify(self, source: object) -> None:
        if isinstance(source, (str, bytes, bytearray, memoryview)):
            raise StreamSourceError(
                f"stream {self.name!r}: the source is a single {type(source).__name__}; "
                "pass an iterable of pieces (e.g. [data]) or a file, or use HttpResponse"
            )
        if isinstance(source, os.PathLike):
            path = Path(os.fspath(source))
            file = open(path, "rb")  # noqa: SIM115 - closed by close()
            self.length = os.fstat(file.fileno()).st_size
            self._set_file(file, binary=True)
        elif hasattr(source, "read"):
            probe = source.read(0)
            if isinstance(probe, str):
                self._set_file(source, binary=False)
            elif isinstance(probe, (bytes, bytearray)):
                self._set_file(source, binary=True)
                self.length = _remaining_length(source)
            else:
                raise StreamSourceError(
                    f"stream {self.name!r}: read() of the file-like source returned "
                    f"{type(probe).__name__}, expected bytes or str"
                )
        elif hasattr(source, "__iter__"):
            self._source = source
        elif hasattr(source, "__aiter__"):
            self._source = source
            self.is_async = True
        else:
            raise StreamSourceError(
                f"stream {self.name!r}: the source must be an iterable, an async iterable, "
                f"a file-like object or a path, not {type(source).__name__}"
            )

    def _set_file(self, file: Any, *, binary: bool) -> None:
        self.file = file
        self.binary_file = binary
        self._source = _read_file(file, self.chunk_size)

    # -- consumption ----------------------------------------------------

    def _claim(self) -> None:
        with self._lock:
            if self._claimed:
                raise RuntimeError(f"stream {self.name!r} can be consumed only once")
            self._claimed = True

    def prefetch(self) -> int | None:
        """Produce the first chunk of a sync source now, before the headers go.

        Returns the whole body's length when that first chunk was all of it,
        so the caller can send ``Content-Length`` instead of chunked framing
        (one write less, and no terminator write). Never for async sources or
        files; call it only where blocking is fine (a WSGI server thread).
        """
        if self.is_async or self.file is not None or self._claimed:
            return None
        self._claim()
        ended: list[int] = []
        self._driver = self._drive_sync(self._rechunk_sync(on_end=ended.append))
        self._first = next(self._driver, None)
        return ended[0] if ended else None

    def sync_chunks(self) -> Iterator[bytes]:
        """The chunks for a sync server (WSGI); an async source is bridged."""
        if self._first is not None:
            first, self._first = self._first, None
            assert self._driver is not None
            return itertools.chain((first,), self._driver)
        self._claim()
        if self.is_async:
            self._driver = self._drive_sync(iter_async(self._rechunk_async()))
        else:
            self._driver = self._drive_sync(self._rechunk_sync())
        return self._driver

    def async_chunks(self) -> AsyncIterator[bytes]:
        """The chunks for an async server (ASGI); a sync source is bridged."""
        if self._driver is not None and not self.is_async:
            return aiter_sync(self.sync_chunks())  # after a prefetch()
        self._claim()
        if self.is_async:
            return self._drive_async(self._rechunk_async())
        self._driver = self._drive_sync(self._rechunk_sync())
        return aiter_sync(self._driver)

    def sendfile(self) -> FileSender | None:
        """A file object for ``wsgi.file_wrapper`` (the sendfile path), if any."""
        if not self.binary_file or self._claimed:
            return None
        if self._sender is None:
            self._sender = FileSender(self)
        return self._sender

    def cancel_sendfile(self) -> None:
        """The server iterates after all: forget the sendfile wrapper."""
        if self._sender is not None and self._sender.furthest == 0:
            self._sender = None
            self._claimed = False

    def _rechunk_sync(self, on_end: Callable[[int], None] | None = None) -> Iterator[bytes]:
        source: Iterable[Piece] = self._source
        return iter_chunks(
            source,
            chunk_size=self.chunk_size,
            flush_interval=self.flush_interval,
            encoding=self.encoding,
            name=self.name,
            on_end=on_end,
        )

    def _rechunk_async(self) -> AsyncIterator[bytes]:
        source: AsyncIterable[Piece] = self._source
        return aiter_chunks(
            source,
            chunk_size=self.chunk_size,
            flush_interval=self.flush_interval,
            encoding=self.encoding,
            name=self.name,
        )

    def _drive_sync(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        on_chunk = self.recorders.chunk_callback()
        outcome = Outcome.ABORTED
        try:
            if on_chunk is None:
                for chunk in chunks:
                    self.sent_bytes += len(chunk)
                    yield chunk
            else:
                for chunk in chunks:
                    self.sent_bytes += len(chunk)
                    on_chunk(len(chunk))
                    yield chunk
            outcome = Outcome.COMPLETED
        except Exception:
            outcome = Outcome.FAILED
            self._log_failure()
            raise
        finally:
            try:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            finally:
                self._finish(outcome)

    async def _drive_async(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        on_chunk = self.recorders.chunk
        outcome = Outcome.ABORTED
        try:
            async for chunk in chunks:
                self.sent_bytes += len(chunk)
                on_chunk(len(chunk))
                yield chunk
            outcome = Outcome.COMPLETED
        except Exception:
            outcome = Outcome.FAILED
            self._log_failure()
            raise
        finally:
            try:
                aclose = getattr(chunks, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                self._finish(outcome)

    def _log_failure(self) -> None:
        logger.exception(
            "Stream %r failed after %d bytes; the response is left incomplete",
            self.name,
            self.sent_bytes,
        )

    # -- ending ---------------------------------------------------------

    def _finish(self, outcome: Outcome) -> None:
        with self._lock:
            if self._finished:
                return
            self._finished = True
        self.recorders.finish(outcome)

    def close(self) -> None:
        """Release everything. Safe to call more than once, from any path.

        A stream closed before it was consumed to the end is ``aborted``.
        """
        try:
            if self._driver is not None:
                # Runs the driver's ``finally``: the source is closed and the
                # outcome recorded (aborted, unless it had completed).
                self._first = None
                self._driver.close()  # type: ignore[attr-defined]
            if self._sender is not None:
                self._sender.settle()
            elif not self._claimed:
                self._claimed = True
                source_close = getattr(self._source, "close", None)
                if source_close is not None:
                    source_close()
            if self.file is not None:
                self.file.close()
        finally:
            self._finish(Outcome.ABORTED)


def _read_file(file: Any, size: int) -> Iterator[Any]:
    try:
        while True:
            data = file.read(size)
            if not data:
                return
            yield data
    finally:
        file.close()


def _remaining_length(file: Any) -> int | None:
    try:
        fileno = file.fileno()
        remaining: int = os.fstat(fileno).st_size - file.tell()
        return remaining
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        return None


class FileSender:
    """What a WSGI server's ``wsgi.file_wrapper`` gets for a binary file.

    gunicorn hands ``fileno()`` to ``socket.sendfile()``, which reports how far
    it got by calling ``seek()``; servers without sendfile call ``read()``.
    Either way we learn how many bytes left, so the outcome is exact.
    """

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.file = stream.file
        self.start = self.file.tell() if hasattr(self.file, "tell") else 0
        self.furthest = 0
        self.eof = False
        stream._claimed = True

    def fileno(self) -> int:
        result: int = self.file.fileno()
        return result

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.file.read(size)
        if data:
            self.furthest += len(data)
            self.stream.sent_bytes = self.furthest
            self.stream.recorders.chunk(len(data))
        else:
            self.eof = True
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        position: int = self.file.seek(offset, whence)
        moved = position - self.start
        if moved > self.furthest:
            # sendfile() reporting progress: one chunk for what it sent.
            self.stream.recorders.chunk(moved - self.furthest)
            self.furthest = moved
            self.stream.sent_bytes = moved
        return position

    def tell(self) -> int:
        result: int = self.file.tell()
        return result

    def settle(self) -> None:
        length = self.stream.length
        done = self.eof if length is None else self.furthest >= length
        if done:
            self.stream._finish(Outcome.COMPLETED)

    def close(self) -> None:
        self.stream.close()
