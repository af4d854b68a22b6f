"""The object a WSGI server's ``wsgi.file_wrapper`` gets for a binary file (sendfile)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

# Bytes per sendfile() call when we send the file ourselves: each slice is
# reported as it is handed over. bench/sendfile.py compares slice sizes with
# one call for the whole file.
SLICE = 8 * 1024 * 1024


class FileSender:
    """Wraps a binary file for ``wsgi.file_wrapper``; reports through callbacks.

    gunicorn calls ``fileno()`` right before it sends the headers and the file
    (``on_start``: the first byte is on its way), hands the descriptor to
    ``socket.sendfile()``, which reports how far it got by calling ``seek()``;
    servers without sendfile call ``read()``. Each advance is ``on_progress(n)``
    with the new bytes, so the outcome and the active-streams table are exact.
    CPython's ``socket.sendfile()`` seeks once, at its end; the ``read()`` path
    reports every block.
    """

    def __init__(
        self,
        file: Any,
        *,
        on_start: Callable[[], None],
        on_progress: Callable[[int], None],
        on_close: Callable[[], None],
        limit: int | None = None,
    ) -> None:
        self.file = file
        self.limit = limit  # bytes to send at most (a byte range), None: to the end
        self.start = file.tell() if hasattr(file, "tell") else 0
        self.furthest = 0
        self.eof = False
        self.started = False
        self._on_start = on_start
        self._on_progress = on_progress
        self._on_close = on_close

    def _begin(self) -> None:
        if not self.started:
            self.started = True
            self._on_start()

    def fileno(self) -> int:
        self._begin()
        result: int = self.file.fileno()
        return result

    def read(self, size: int = -1) -> bytes:
        self._begin()
        if self.limit is not None:
            # A server that reads the wrapper (no sendfile) stops at the range's end.
            left = self.limit - self.furthest
            size = left if size < 0 else min(size, left)
        data: bytes = self.file.read(size) if size else b""
        if data:
            self.furthest += len(data)
            self._on_progress(len(data))
        else:
            self.eof = True
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        position: int = self.file.seek(offset, whence)
        moved = position - self.start
        if moved > self.furthest:
            self._on_progress(moved - self.furthest)
            self.furthest = moved
        return position

    def send_slices(
        self, sock: socket.socket, count: int, *, slice_size: int = SLICE
    ) -> Iterator[bytes]:
        """Send ``count`` bytes of the file on ``sock`` with sendfile, a slice at a time.

        For a server that gives us its socket (gunicorn's ``environ["gunicorn.socket"]``):
        its own sendfile sends the whole file in one call, which reports nothing
        until it returns, so a 2 GiB download looks stuck. Yields one empty
        chunk first, on which the server sends the headers.
        """
        yield b""
        self._begin()
        offset = self.start + self.furthest
        end = self.start + count
        while offset < end:
            sent = sock.sendfile(self.file, offset=offset, count=min(slice_size, end - offset))
            if not sent:
                name = getattr(self.file, "name", "the file")
                raise OSError(f"{name} ended {end - offset} bytes short of its length")
            offset += sent
            self.furthest += sent
            self._on_progress(sent)

    def tell(self) -> int:
        result: int = self.file.tell()
        return result

    def done(self, length: int | None) -> bool:
        """Whether everything was sent (to the end of the file when ``length`` is None)."""
        return self.eof if length is None else self.furthest >= length

    def close(self) -> None:
        # Django patches this to ``response.close`` for the server; the stream
        # closes the file and settles the outcome either way.
        self._on_close()
