"""The soak's clients: HTTP/1.1 on a raw socket, counting what they got.

A client reads the body as a browser would (``full``), slowly (``slow``), goes
away mid-body (``abort``) or stops reading for a while first (``stall``). It
counts the body bytes it received (after chunked framing, before any
decoding: what the server's metrics count) and whether the body ended
cleanly (the last chunk, or every byte of a Content-Length).
"""

from __future__ import annotations

import random
import socket
import struct
import time
from dataclasses import dataclass, field

CONNECT_TIMEOUT, READ_TIMEOUT = 3.0, 15.0


@dataclass
class Result:
    path: str
    behaviour: str
    started: float = field(default_factory=time.monotonic)
    ended: float = 0.0
    head_at: float = 0.0  # when the status line arrived
    worker: int = 0  # the X-Worker-Pid that served it
    name: str = ""
    status: int | None = None
    body_bytes: int = 0
    clean: bool = False
    encoded: bool = False
    error: str | None = None
    body: bytes = b""


class Body:
    """Counts body bytes as they arrive, through chunked framing if any."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.chunked = "chunked" in headers.get("transfer-encoding", "")
        length = headers.get("content-length")
        self.length = int(length) if length is not None and not self.chunked else None
        self.count = 0
        self.done = self.length == 0
        self._buffer = b""
        self._left = 0  # bytes of the current chunk's data still to come
        self._crlf = 0  # bytes of the CRLF after it still to come

    def feed(self, data: bytes, keep: bytearray | None) -> None:
        if not self.chunked:
            self.count += len(data)
            if keep is not None:
                keep += data
            self.done = self.length is not None and self.count >= self.length
            return
        self._buffer += data
        while self._buffer and not self.done:
            if self._left:
                take = self._buffer[: self._left]
                self._buffer = self._buffer[len(take) :]
                self._left -= len(take)
                self.count += len(take)
                if keep is not None:
                    keep += take
                self._crlf = 0 if self._left else 2
            elif self._crlf:
                dropped = min(self._crlf, len(self._buffer))
                self._buffer = self._buffer[dropped:]
                self._crlf -= dropped
            else:
                line, sep, rest = self._buffer.partition(b"\r\n")
                if not sep:
                    return
                size = int(line.split(b";")[0], 16)
                self._buffer = rest
                self.done = size == 0  # the last chunk (no trailers are sent here)
                self._left = size


def fetch(
    port: int,
    path: str,
    *,
    behaviour: str = "full",
    headers: dict[str, str] | None = None,
    rng: random.Random | None = None,
    abort_after: int | None = None,
    keep_body: bool = False,
) -> Result:
    rng = rng or random.Random()
    result = Result(path=path, behaviour=behaviour)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
    try:
        sock = socket.create_connection(("127.0.0.1", port), CONNECT_TIMEOUT)
    except OSError:
        result.error = "connect"
        return result
    keep = bytearray() if keep_body else None
    body = Body({"content-length": "0"})
    try:
        sock.settimeout(READ_TIMEOUT)
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data:
                result.error = "closed before the head"
                return result
            head += data
        result.head_at = time.monotonic()
        head, _, rest = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        result.status = int(lines[0].split()[1])
        fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        result.encoded = "content-encoding" in fields
        result.worker = int(fields.get("x-worker-pid", "0") or 0)
        body = Body(fields)
        body.feed(rest, keep)
        budget = abort_after if abort_after is not None else rng.randint(1, 200_000)
        started = time.monotonic()
        while not body.done:
            if behaviour == "abort" and body.count >= budget:
                result.error = "aborted by the client"
                if rng.random() < 0.5:  # half of them reset rather than close
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                break
            if behaviour == "stall" and body.count > 0:
                time.sleep(2)
                result.error = "aborted by the client"
                break
            if behaviour == "slow":  # about 800 KB/s
                time.sleep(0.02)
                if time.monotonic() - started > 30:
                    result.error = "aborted by the client"
                    break
            data = sock.recv(16384 if behaviour == "slow" else 65536)
            if not data:
                break
            body.feed(data, keep)
        result.body_bytes, result.clean = body.count, body.done
        if not body.done and result.error is None:
            result.error = "cut"
    except (OSError, ValueError, IndexError) as exc:
        result.error = type(exc).__name__
        result.body_bytes = body.count
    finally:
        sock.close()
        result.ended = time.monotonic()
    if keep is not None:
        result.body = bytes(keep)
    return result


class Holder:
    """A request whose head has been read and whose body is left waiting."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), CONNECT_TIMEOUT)
        self.sock.settimeout(READ_TIMEOUT)
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.sock.recv(1)
            if not data:
                break
            head += data
        self.status = int(head.split()[1]) if head.startswith(b"HTTP/") else None
        self.headers = {
            k.strip().lower(): v.strip()
            for k, _, v in (x.partition(":") for x in head.decode("latin-1").split("\r\n")[1:])
        }

    def read_rest(self, result: Result) -> Result:
        """Read the body to its end, into ``result``."""
        body = Body(self.headers)
        try:
            while not body.done:
                data = self.sock.recv(65536)
                if not data:
                    break
                body.feed(data, None)
        except OSError:
            pass
        result.status, result.body_bytes, result.clean = self.status, body.count, body.done
        result.error = None if body.done else "cut"
        result.ended = time.monotonic()
        return result

    def close(self) -> None:
        self.sock.close()


def hold_open(port: int, path: str) -> Holder:
    return Holder(port, path)
