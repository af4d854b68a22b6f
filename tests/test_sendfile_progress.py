"""A file sent with sendfile shows its progress while it is sent, not only at its end."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from django_streamer.core.recorder import Outcome, StreamRecorder
from django_streamer.core.stream import Stream
from django_streamer.testing import fetch

from .conftest import start_gunicorn, stop_gunicorn

MIB = 1 << 20


class Timeline(StreamRecorder):
    def __init__(self) -> None:
        self.chunks: list[tuple[float, int]] = []
        self.outcome: Outcome | None = None

    def chunk(self, nbytes: int) -> None:
        self.chunks.append((time.monotonic(), nbytes))

    def finish(self, outcome: Outcome) -> None:
        self.outcome = outcome


def test_each_slice_is_counted_as_it_is_handed_over(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * (4 * MIB))
    stream = Stream(path, name="file", chunk_size=65536, flush_interval=0.1)
    timeline = Timeline()
    stream.add_recorder(timeline)
    sender = stream.sendfile()
    assert sender is not None and stream.length == 4 * MIB
    a, b = socket.socketpair()
    received = bytearray()

    def read_slowly() -> None:
        while data := b.recv(65536):
            received.extend(data)
            time.sleep(0.002)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    chunks = list(sender.send_slices(a, stream.length, slice_size=MIB))
    a.close()
    reader.join()
    b.close()
    stream.close()
    assert chunks == [b""]  # the server's write that sends the headers
    assert [n for _, n in timeline.chunks] == [0, MIB, MIB, MIB, MIB]
    assert timeline.chunks[1][0] < timeline.chunks[-1][0]  # counted along the way
    assert bytes(received) == path.read_bytes()
    assert timeline.outcome is Outcome.COMPLETED and stream.sent_bytes == 4 * MIB


def test_a_file_that_shrank_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "shrinks.bin"
    path.write_bytes(b"x" * 1000)
    stream = Stream(path, name="file", chunk_size=100, flush_interval=0.1)
    sender = stream.sendfile()
    assert sender is not None
    path.write_bytes(b"x" * 400)  # truncated in place, after the length was taken
    a, b = socket.socketpair()
    try:
        with pytest.raises(OSError, match=r"shrinks\.bin ended 600 bytes short of its length"):
            list(sender.send_slices(a, 1000, slice_size=300))
    finally:
        a.close()
        b.close()
        stream.close()
    assert stream.outcome is Outcome.ABORTED


def _bytes_total(server, t: str) -> float:
    text = fetch(server.host, server.port, "/streaming/metrics/").body.decode()
    prefix = f'django_streamer_bytes_total{{stream="{t}"}} '
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return float(lines[0].split()[-1]) if lines else 0.0


@pytest.mark.server
def test_a_download_under_gthread_shows_progress_while_it_runs(tmp_path: Path) -> None:
    # 33 MB, read in 4 MiB steps; halfway through, the client asks the metrics.
    server = start_gunicorn(tmp_path, "gthread")
    t = "t" + uuid.uuid4().hex[:10]
    size = 1_000_000 * 33
    try:
        with socket.create_connection((server.host, server.port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            path = f"/stream/?kind=path&items=1000000&tag={t}"
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            got = 0
            midway: list[float] = []
            while data := sock.recv(65536):
                if got // (4 * MIB) != (got + len(data)) // (4 * MIB):
                    # Slower than the recorder's 0.1 s publishing interval.
                    time.sleep(0.15)
                got += len(data)
                if not midway and got > size // 2:
                    midway.append(_bytes_total(server, t))
        assert got > size  # the body and the headers
        server.wait_for_event("finish", t)
        print(f"midway the metrics showed {midway[0] / MIB:.1f} MiB of {size / MIB:.1f}")
        assert 8 * MIB <= midway[0] < size, midway  # a slice or more, while it ran
        assert _bytes_total(server, t) == size
    finally:
        stop_gunicorn(server)


@pytest.mark.server
@pytest.mark.parametrize("worker", ["sync", "gthread"])
def test_a_head_request_for_a_file_gets_no_body(tmp_path: Path, worker: str) -> None:
    server = start_gunicorn(tmp_path, worker)
    try:
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            path = "/stream/?kind=path&items=1000"
            sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while more := sock.recv(65536):
                data += more
        assert data.startswith(b"HTTP/1.1 200") and b"Content-Length: 33000" in data
        assert data.endswith(b"\r\n\r\n")  # no body bytes
        wire = fetch(server.host, server.port, path)
        assert wire.complete and wire.body == (b"x" * 32 + b"\n") * 1000
    finally:
        stop_gunicorn(server)


@pytest.mark.server
def test_the_connection_stays_usable_after_a_sliced_download(tmp_path: Path) -> None:
    server = start_gunicorn(tmp_path, "gthread")
    body = (b"x" * 32 + b"\n") * 1000
    try:
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            get = b"GET /stream/?kind=path&items=1000 HTTP/1.1\r\nHost: x\r\n\r\n"
            sock.sendall(get + get)
            data = b""
            while data.count(body) < 2:
                more = sock.recv(65536)
                assert more, data[:300]
                data += more
        assert data.count(b"HTTP/1.1 200") == 2 and data.endswith(body)
    finally:
        stop_gunicorn(server)
