"""Test helpers: read a stream off a real socket, chunk boundaries and timing included.

Django's test client shows neither where chunks begin and end on the wire nor
when they arrive. :func:`fetch` speaks HTTP/1.1 over a plain socket to a real
server and records each chunk of a ``Transfer-Encoding: chunked`` body (or
each ``recv()`` of a ``Content-Length`` body) with its arrival time::

    from django_streamer.testing import fetch

    wire = fetch("127.0.0.1", 8000, "/export.csv")
    assert wire.complete
    assert all(len(c) == 65536 for c in wire.chunks[:-1])
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field


@dataclass
class WireResponse:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # seconds since the request was sent
    complete: bool = False  # the body ended as its framing says a body ends
    error: str | None = None
    started_at: float = 0.0  # time.monotonic() when the request was sent

    @property
    def finished_at(self) -> float | None:
        """time.monotonic() when the last chunk arrived."""
        return self.started_at + self.arrivals[-1] if self.arrivals else None

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def first_byte(self) -> float | None:
        return self.arrivals[0] if self.arrivals else None


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()
        self.eof = False

    def fill(self) -> bool:
        data = self.sock.recv(1 << 18)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def line(self) -> bytes | None:
        while True:
            idx = self.buf.find(b"\r\n")
            if idx >= 0:
                out = bytes(self.buf[:idx])
                del self.buf[: idx + 2]
                return out
            if not self.fill():
                return None

    def exactly(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self.fill():
                return None
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def fetch(
    host: str,
    port: int,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    abort_after: int | None = None,
    timeout: float = 30.0,
) -> WireResponse:
    """Request ``path`` and record the response as it arrives.

    ``abort_after`` closes the connection once that many body bytes arrived,
    the way a client that goes away does.
    """
    result = WireResponse()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        started = result.started_at = time.monotonic()
        sock.sendall(request)
        reader = _Reader(sock)
        status_line = reader.line()
        if not status_line:
            result.error = "no status line"
            return result
        result.status = int(status_line.split()[1])
        while True:
            line = reader.line()
            if line is None:
                result.error = "connection closed in the headers"
                return result
            if not line:
                break
            key, _, value = line.decode("latin-1").partition(":")
            result.headers[key.strip().lower()] = value.strip()
        received = 0

        def take(data: bytes) -> bool:
            nonlocal received
            result.chunks.append(data)
            result.arrivals.append(time.monotonic() - started)
            received += len(data)
            return abort_after is not None and received >= abort_after

        if result.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = reader.line()
                if size_line is None:
                    result.error = "connection closed before the final chunk"
                    return result
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    result.complete = reader.line() is not None
                    return result
                data = reader.exactly(size + 2)
                if data is None or data[-2:] != b"\r\n":
                    result.error = "connection closed inside a chunk"
                    if data:
                        take(data[:size])
                    return result
                if take(data[:-2]):
                    return result
        length = result.headers.get("content-length")
        if reader.buf:
            data = bytes(reader.buf)
            reader.buf.clear()
            if take(data):
                return result
        while reader.fill():
            data = bytes(reader.buf)
            reader.buf.clear()
            if take(data):
                return result
        if length is not None:
            result.complete = received == int(length)
            if not result.complete:
                result.error = f"got {received} of {length} bytes"
        else:
            result.complete = True  # nothing on the wire can tell; HTTP/1.0 style
        return result
    except OSError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        return result
    finally:
        sock.close()
