"""Ranges and conditional requests on the wire: gunicorn (sync, gthread, asgi) and uvicorn.

One server per worker model serves every case, read on the raw socket
(``django_streamer.testing.fetch``), so the framing the client sees is checked,
not what Django's test client reassembles.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from django_streamer.testing import WireResponse, fetch

from .conftest import Server, start_gunicorn, start_uvicorn, stop_gunicorn
from .decoders import byteranges

pytestmark = pytest.mark.server

MIB = 1024 * 1024
# Over two of gunicorn's 8 MiB sendfile slices, and not a multiple of anything.
SIZE = 20 * MIB + 12345
VIEW_HEADERS = {"access-control-allow-origin": "*", "cache-control": "max-age=60"}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    data = os.urandom(SIZE)
    path = tmp_path_factory.mktemp("ranges") / "movie.bin"
    path.write_bytes(data)
    # An hour old: a date modified within the last second is weak, and If-Range ignores it.
    hour_ago = time.time() - 3600
    os.utime(path, (hour_ago, hour_ago))
    return path, data


@pytest.fixture(scope="module", params=["sync", "gthread", "asgi", "uvicorn"])
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"server-{request.param}")
    if request.param == "uvicorn":
        server = start_uvicorn(tmp)
    else:
        server = start_gunicorn(tmp, request.param)
    yield server
    stop_gunicorn(server)


def get(
    srv: Server,
    file: Path,
    method: str = "GET",
    view: str = "file",
    query: str = "",
    **headers: str,
) -> WireResponse:
    named = {key.replace("_", "-").title(): value for key, value in headers.items()}
    path = f"/r/{view}/?p={quote(str(file))}{query}"
    response = fetch(srv.host, srv.port, path, method=method, headers=named, timeout=60)
    assert response.error is None or method == "HEAD", response.error
    return response


def assert_view_headers(response: WireResponse) -> None:
    for name, value in VIEW_HEADERS.items():
        assert response.headers.get(name) == value, (response.status, response.headers)


def test_whole_file_has_validators(srv: Server, data_file: tuple[Path, bytes]) -> None:
    file, data = data_file
    response = get(srv, file)
    assert response.status == 200
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["etag"].startswith('"')
    assert response.headers["last-modified"].endswith(" GMT")
    assert response.headers["content-length"] == str(SIZE)
    assert response.complete and response.body == data


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=0-0", 0, 1),
        ("bytes=-1", SIZE - 1, SIZE),
        ("bytes=-500", SIZE - 500, SIZE),
        ("bytes=5000000-", 5_000_000, SIZE),  # open-ended, across sendfile slices
        ("bytes=9000000-17999999", 9_000_000, 18_000_000),
        (f"bytes={SIZE - 10}-{SIZE * 2}", SIZE - 10, SIZE),  # clamped
    ],
)
def test_single_range(
    srv: Server, data_file: tuple[Path, bytes], header: str, start: int, stop: int
) -> None:
    file, data = data_file
    tag = "r" + uuid.uuid4().hex[:10]
    response = get(srv, file, query=f"&name={tag}", range=header)
    assert response.status == 206, response.headers
    assert response.headers["content-range"] == f"bytes {start}-{stop - 1}/{SIZE}"
    assert response.headers["content-length"] == str(stop - start)
    assert "transfer-encoding" not in response.headers
    assert response.complete and response.body == data[start:stop]
    assert_view_headers(response)
    # The metrics hear the range's bytes, and a range read to its end is completed.
    event = srv.wait_for_event("finish", tag)
    assert event[3:] == ["completed", str(stop - start)], event


def test_multiple_ranges(srv: Server, data_file: tuple[Path, bytes]) -> None:
    file, data = data_file
    response = get(srv, file, range="bytes=10-19, 0-4, 15-29, 9000000-9000009, -3")
    assert response.status == 206
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/byteranges; boundary=")
    assert response.headers["content-length"] == str(len(response.body))
    assert response.complete
    spans = [(0, 5), (10, 30), (9_000_000, 9_000_010), (SIZE - 3, SIZE)]
    assert byteranges(content_type, response.body) == [
        ("application/octet-stream", f"bytes {a}-{b - 1}/{SIZE}", data[a:b]) for a, b in spans
    ]


@pytest.mark.parametrize("header", ["bytes=0-1,x", "bytes=5-1", "lines=0-5", "bytes"])
def test_malformed_range_gets_the_whole_file(
    srv: Server, data_file: tuple[Path, bytes], header: str
) -> None:
    file, data = data_file
    response = get(srv, file, range=header)
    assert response.status == 200
    assert response.complete and response.body == data


def test_unsatisfiable_range(srv: Server, data_file: tuple[Path, bytes]) -> None:
    file, _ = data_file
    response = get(srv, file, range=f"bytes={SIZE}-")
    assert response.status == 416
    assert response.headers["content-range"] == f"bytes */{SIZE}"
    assert response.headers["content-length"] == "0"
    assert response.complete and response.body == b""
    assert_view_headers(response)


def test_conditional_requests(srv: Server, data_file: tuple[Path, bytes]) -> None:
    file, data = data_file
    first = get(srv, file, method="HEAD")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert first.status == 200 and first.body == b""
    assert first.headers["content-length"] == str(SIZE)

    for headers in ({"if_none_match": etag}, {"if_modified_since": modified}):
        response = get(srv, file, range="bytes=0-9", **headers)  # 304 before a range
        assert response.status == 304, headers
        assert response.body == b"" and "content-length" not in response.headers
        assert response.headers["etag"] == etag
        assert_view_headers(response)

    for headers in (
        {"if_match": '"other"'},
        {"if_unmodified_since": "Sun, 06 Nov 1994 08:49:37 GMT"},
    ):
        response = get(srv, file, **headers)
        assert response.status == 412, headers
        assert response.body == b""
        assert_view_headers(response)

    assert get(srv, file, method="HEAD", if_none_match=etag).status == 304
    fresh = get(srv, file, range="bytes=0-9", if_range=etag, if_match=etag)
    assert fresh.status == 206 and fresh.body == data[:10]
    by_date = get(srv, file, range="bytes=0-9", if_range=modified)
    assert by_date.status == 206 and by_date.body == data[:10]
    stale = get(srv, file, range="bytes=0-9", if_range='"stale"')
    assert stale.status == 200 and stale.body == data  # the whole file, never a piece


def test_view_validators_and_opting_out(srv: Server, data_file: tuple[Path, bytes]) -> None:
    file, data = data_file
    own = get(srv, file, view="etag", if_none_match='"v7"')
    assert own.status == 304 and own.headers["etag"] == '"v7"'
    assert get(srv, file, view="etag", range="bytes=0-0", if_range='"v7"').body == data[:1]
    whole = get(srv, file, view="whole", range="bytes=0-9")
    assert whole.status == 200 and whole.body == data
    assert "accept-ranges" not in whole.headers


def test_a_file_object_counts_from_where_it_was(srv: Server, data_file: tuple[Path, bytes]) -> None:
    file, data = data_file
    response = get(srv, file, query="&skip=1000", range="bytes=10-19")
    assert response.status == 206
    assert response.headers["content-range"] == f"bytes 10-19/{SIZE - 1000}"
    assert response.body == data[1010:1020]
    parts = get(srv, file, query="&skip=1000", range="bytes=0-1,-2")
    assert [p[2] for p in byteranges(parts.headers["content-type"], parts.body)] == [
        data[1000:1002],
        data[-2:],
    ]


def test_a_range_is_never_compressed(srv: Server, tmp_path: Path) -> None:
    text = b"".join(b"%d,row\n" % i for i in range(50_000))
    file = tmp_path / "rows.csv"
    file.write_bytes(text)
    compressed = get(srv, file, query="&compress=1", accept_encoding="gzip")
    assert compressed.headers.get("content-encoding") == "gzip"
    assert compressed.headers["etag"].startswith('W/"')
    assert "accept-ranges" not in compressed.headers
    ranged = get(srv, file, query="&compress=1", accept_encoding="gzip", range="bytes=100-199")
    assert ranged.status == 206 and "content-encoding" not in ranged.headers
    assert ranged.body == text[100:200]
    # The compressed copy's weak tag still validates for a 304.
    etag = compressed.headers["etag"]
    again = get(srv, file, query="&compress=1", accept_encoding="gzip", if_none_match=etag)
    assert again.status == 304


def read_response(stream: Any) -> tuple[int, dict[str, str], bytes]:
    """One response off a kept-alive connection, framed by its Content-Length (or none)."""
    status = int(stream.readline().split()[1])
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    assert "transfer-encoding" not in headers, headers
    body = stream.read(int(headers.get("content-length", 0)))
    return status, headers, body


def test_keep_alive_framing_is_exact(srv: Server, data_file: tuple[Path, bytes]) -> None:
    """Several answers on one connection: a byte too many or too few would shift the next."""
    if srv.worker == "sync":
        pytest.skip("gunicorn's sync worker closes every connection")
    file, data = data_file
    path = f"/r/file/?p={quote(str(file))}"
    etag = get(srv, file, method="HEAD").headers["etag"]
    asks = [
        ("Range: bytes=-3", 206, data[-3:]),
        (f"If-None-Match: {etag}", 304, b""),
        ("Range: bytes=0-1,100-101", 206, None),
        (f"Range: bytes={SIZE}-", 416, b""),
        ('If-Match: "no"', 412, b""),
        ("Range: bytes=9000000-9000003", 206, data[9_000_000:9_000_004]),
    ]
    with socket.create_connection((srv.host, srv.port), timeout=30) as sock:
        reader = sock.makefile("rb")
        for header, status, body in asks:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n".encode())
            got_status, headers, got_body = read_response(reader)
            assert got_status == status, (header, headers)
            if body is None:
                parts = byteranges(headers["content-type"], got_body)
                assert [p[2] for p in parts] == [data[0:2], data[100:102]]
            else:
                assert got_body == body, header
            assert headers.get("connection", "keep-alive").lower() != "close", headers
