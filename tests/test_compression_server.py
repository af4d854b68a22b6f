"""Compressed streams over real servers: gunicorn gthread and asgi workers, and uvicorn.

Bodies are read on raw sockets (so chunk framing and timing are the wire's)
and decoded by Python's gzip, brotli and zstandard decoders and by ``curl
--compressed``. The views are in ``tests/compression_views.py``.
"""

from __future__ import annotations

import gzip
import itertools
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .compression_views import DATA, NOISE
from .conftest import Server, start_gunicorn, start_uvicorn, stop_gunicorn
from .decoders import Decoder, decode

CODINGS = ("zstd", "br", "gzip")
KINDS = ("sync", "async")


def _start(kind: str, tmp: Path, env: dict[str, str] | None = None) -> Server:
    return start_uvicorn(tmp, env=env) if kind == "uvicorn" else start_gunicorn(tmp, kind, env=env)


@pytest.fixture(scope="module", params=["gthread", "asgi", "uvicorn"])
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    server = _start(request.param, tmp_path_factory.mktemp(request.param))
    yield server
    stop_gunicorn(server)


@pytest.fixture(scope="module")
def on_by_default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """gthread with ``STREAMER_COMPRESSION = True``: ``compress=None`` compresses."""
    env = {"STREAMER_TEST_COMPRESSION": "1"}
    server = _start("gthread", tmp_path_factory.mktemp("on"), env)
    yield server
    stop_gunicorn(server)


# -- a raw HTTP/1.1 client ---------------------------------------------------


class Dechunker:
    """Incremental chunked transfer decoding; ``ended`` once the last chunk came."""

    def __init__(self) -> None:
        self.buf = b""
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        self.buf += data
        out = []
        while not self.ended:
            line_end = self.buf.find(b"\r\n")
            if line_end < 0:
                break
            size = int(self.buf[:line_end].split(b";")[0], 16)
            if len(self.buf) < line_end + 2 + size + 2:
                break
            out.append(self.buf[line_end + 2 : line_end + 2 + size])
            self.buf = self.buf[line_end + 2 + size + 2 :]
            self.ended = size == 0
        return b"".join(out)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes  # without the framing
    ended: bool  # the framing completed: the last chunk, or all of Content-Length
    reads: list[tuple[float, bytes]]  # (seconds since the headers, body bytes) per recv


def fetch(
    server: Server,
    target: str,
    *,
    encoding: str | None = None,
    method: str = "GET",
    timeout: float = 20,
) -> Reply:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if encoding is not None:
        lines.append(f"Accept-Encoding: {encoding}")
    with socket.create_connection((server.host, server.port), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        raw = b""
        while b"\r\n\r\n" not in raw:
            data = sock.recv(65536)
            assert data, f"no headers: {raw!r}"
            raw += data
        head, rest = raw.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in header_lines:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
        status = int(status_line.split()[1])
        chunked = headers.get("transfer-encoding") == "chunked"
        dechunk = Dechunker()
        t0 = time.monotonic()
        reads: list[tuple[float, bytes]] = []
        body = b""
        data = rest
        while True:
            piece = dechunk.feed(data) if chunked else data
            if piece:
                reads.append((time.monotonic() - t0, piece))
                body += piece
            if method == "HEAD" or (chunked and dechunk.ended):
                break
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
    length = headers.get("content-length")
    ended = dechunk.ended if chunked else length is not None and len(body) == int(length)
    return Reply(status, headers, body, ended or method == "HEAD", reads)


def varies(reply: Reply) -> bool:
    return "accept-encoding" in reply.headers.get("vary", "").lower()


# -- each codec, each server, decoded as the source ----------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("coding", CODINGS)
def test_each_codec_decodes_to_the_source(srv, coding, kind):
    reply = fetch(srv, f"/z/data?compress=1&kind={kind}", encoding=f"{coding}, identity;q=0.5")
    assert reply.status == 200
    assert reply.headers["content-encoding"] == coding
    assert varies(reply)
    # The body's length is never sent; the wire's may be, when it fit one chunk.
    assert int(reply.headers.get("content-length", len(reply.body))) == len(reply.body)
    assert reply.ended
    assert len(reply.body) < len(DATA) / 3
    assert decode(coding, reply.body) == DATA


@pytest.mark.parametrize("coding", CODINGS)
def test_curl_decodes_each_codec(srv, coding):
    url = f"http://127.0.0.1:{srv.port}/z/data?compress=1"
    out = subprocess.run(
        ["curl", "-sS", "--fail", "--compressed", "-H", f"Accept-Encoding: {coding}", url],
        capture_output=True,
        timeout=30,
        check=True,
    )
    assert out.stdout == DATA


def test_curl_takes_zstd_when_it_offers_everything(srv):
    url = f"http://127.0.0.1:{srv.port}/z/data?compress=1"
    out = subprocess.run(
        ["curl", "-sS", "--fail", "--compressed", "-D", "-", "-o", "/dev/null", url],
        capture_output=True,
        timeout=30,
        check=True,
        text=True,
    )
    assert "content-encoding: zstd" in out.stdout.lower()


@pytest.mark.parametrize("coding", CODINGS)
def test_a_small_body_gets_its_compressed_length(srv, coding):
    reply = fetch(srv, "/z/small?compress=1", encoding=coding)
    assert reply.headers["content-encoding"] == coding
    assert int(reply.headers["content-length"]) == len(reply.body)
    assert decode(coding, reply.body) == DATA[:5000]


# -- a ticker: decodable tick by tick, as it comes ---------------------------------


def decoded_ticks(reply: Reply, coding: str) -> list[tuple[float, str]]:
    """(arrival, text decoded from that read) for each read that decoded to something."""
    decoder = Decoder(coding)
    out = []
    for at, piece in reply.reads:
        text = decoder.feed(piece).decode()
        if text:
            out.append((at, text))
    assert decoder.complete
    return out


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("coding", CODINGS)
def test_a_ticker_is_decodable_tick_by_tick(srv, coding, kind):
    gap = 0.3
    reply = fetch(srv, f"/z/ticker?compress=1&kind={kind}&n=5&gap={gap}", encoding=coding)
    assert reply.headers["content-encoding"] == coding
    ticks = decoded_ticks(reply, coding)
    # Each tick decoded on its own, a gap after the one before it.
    assert [text for _, text in ticks] == [f"tick {i}\n" for i in range(5)]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(ticks)]
    assert min(gaps) > gap * 0.5


def test_gzip_middleware_leaves_our_ticker_alone(srv):
    reply = fetch(srv, "/z/gzipmw/ticker?compress=1&kind=async&n=4&gap=0.3", encoding="gzip")
    assert reply.headers["content-encoding"] == "gzip"
    ticks = decoded_ticks(reply, "gzip")
    assert len(ticks) == 4  # GZipMiddleware's own gzip would hold them to the end


# -- failures, and what is never compressed ---------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("coding", CODINGS)
def test_a_failed_source_is_not_a_complete_compressed_stream(srv, coding, kind):
    reply = fetch(srv, f"/z/fail?compress=1&kind={kind}", encoding=coding)
    assert reply.status == 200
    assert reply.headers["content-encoding"] == coding
    decoder = Decoder(coding)
    got = decoder.feed(reply.body)
    assert NOISE.startswith(got)
    assert len(got) >= 64 * 1024  # it did stream before failing
    assert not decoder.complete
    assert not reply.ended


def test_head_is_not_compressed_but_varies(srv):
    reply = fetch(srv, "/z/data?compress=1", encoding="gzip", method="HEAD")
    assert reply.status == 200
    assert "content-encoding" not in reply.headers
    assert varies(reply)
    assert reply.body == b""


def test_a_206_is_never_compressed(srv):
    reply = fetch(srv, "/z/partial?compress=1", encoding="gzip, br, zstd")
    assert reply.status == 206
    assert "content-encoding" not in reply.headers
    assert not varies(reply)
    assert reply.body == DATA[:1000]


def test_a_range_request_on_a_stream_gets_the_whole_body_compressed(srv):
    # Streams do not serve ranges: the Range header is ignored, the 200 compressed.
    with socket.create_connection((srv.host, srv.port), timeout=20) as sock:
        sock.sendall(
            b"GET /z/data?compress=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Range: bytes=0-99\r\nAccept-Encoding: gzip\r\n\r\n"
        )
        raw = b""
        while data := sock.recv(65536):
            raw += data
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200")
    assert b"content-range" not in head.lower()
    assert decode("gzip", Dechunker().feed(body)) == DATA


def test_an_encoded_body_is_compressed_once(srv):
    reply = fetch(srv, "/z/encoded?compress=1", encoding="zstd, br, gzip")
    assert reply.headers["content-encoding"] == "gzip"
    assert not varies(reply)
    assert gzip.decompress(reply.body) == DATA


@pytest.mark.parametrize("coding", CODINGS)
def test_behind_gzip_middleware_the_body_is_compressed_once(srv, coding):
    reply = fetch(srv, "/z/gzipmw/data?compress=1", encoding=f"{coding}, gzip;q=0.5")
    assert reply.headers["content-encoding"] == coding
    assert decode(coding, reply.body) == DATA


def test_uncompressed_streams_are_left_to_gzip_middleware(srv):
    reply = fetch(srv, "/z/gzipmw/data?compress=0", encoding="gzip")
    assert reply.headers["content-encoding"] == "gzip"
    assert not varies(reply) or reply.headers["vary"].lower().count("accept-encoding") == 1
    assert gzip.decompress(reply.body) == DATA


@pytest.mark.parametrize("encoding", [None, "identity", "gzip;q=0", "compress"])
def test_vary_is_sent_whenever_it_could_have_been_compressed(srv, encoding):
    reply = fetch(srv, "/z/data?compress=1", encoding=encoding)
    assert "content-encoding" not in reply.headers
    assert varies(reply)
    assert reply.body == DATA


def test_compress_false_sends_identity_without_vary(srv):
    reply = fetch(srv, "/z/data?compress=0", encoding="gzip")
    assert "content-encoding" not in reply.headers
    assert not varies(reply)
    assert reply.body == DATA


# -- files and SSE ---------------------------------------------------------------


@pytest.mark.parametrize("coding", CODINGS)
def test_a_text_file_is_read_through_the_compressor(on_by_default, coding):
    reply = fetch(on_by_default, "/z/file/rows.csv", encoding=coding)
    assert reply.headers["content-encoding"] == coding
    assert int(reply.headers.get("content-length", len(reply.body))) == len(reply.body)
    assert decode(coding, reply.body) == DATA


def test_a_compressed_file_type_keeps_sendfile_and_its_length(on_by_default):
    reply = fetch(on_by_default, "/z/file/noise.png", encoding="zstd, br, gzip")
    assert "content-encoding" not in reply.headers
    assert reply.headers["content-type"] == "image/png"
    assert int(reply.headers["content-length"]) == len(reply.body) == 100_000


def test_the_setting_compresses_streams_that_leave_compress_unset(on_by_default):
    reply = fetch(on_by_default, "/z/data", encoding="br")
    assert reply.headers["content-encoding"] == "br"
    assert decode("br", reply.body) == DATA


@pytest.mark.parametrize("coding", CODINGS)
def test_sse_is_compressed_event_by_event(srv, coding):
    reply = fetch(srv, "/z/events?compress=1&n=4&gap=0.3", encoding=coding)
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers["content-encoding"] == coding
    events = decoded_ticks(reply, coding)
    texts = [text for _, text in events]
    assert "".join(texts).count("data: event") == 4
    assert len(events) >= 4  # one read per event, not one at the end


def test_sse_uncompressed_has_no_content_encoding(srv):
    # RFC 9110 8.4.1: "identity" is for Accept-Encoding only.
    reply = fetch(srv, "/z/events?compress=0&n=2&gap=0", encoding="gzip")
    assert "content-encoding" not in reply.headers
    assert reply.body.count(b"data: event") == 2
