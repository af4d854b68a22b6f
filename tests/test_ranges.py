"""Ranges in-process: how a server may send a file (file_wrapper reads, sendfile slices)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote
from wsgiref.util import FileWrapper, setup_testing_defaults

import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.test import Client, override_settings

from django_streamer.core.stream import Stream


def call_wsgi(path: str, **headers: str) -> tuple[str, dict[str, str], bytes]:
    """Django's WSGIHandler with wsgiref's ``wsgi.file_wrapper``, which read()s the file."""
    environ: dict[str, Any] = {"wsgi.file_wrapper": FileWrapper}
    path, environ["QUERY_STRING"] = path.split("?", 1)
    environ["PATH_INFO"] = path
    environ.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    setup_testing_defaults(environ)
    got: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"], got["headers"] = status, {k.lower(): v for k, v in headers}
        return lambda data: None

    body = WSGIHandler()(environ, start_response)
    try:
        assert isinstance(body, FileWrapper)  # the file went to the server's wrapper
        data = b"".join(body)
    finally:
        body.close()
    return got["status"], got["headers"], data


def test_a_file_wrapper_that_reads_stops_at_the_range_end(tmp_path: Path) -> None:
    file = tmp_path / "f.bin"
    data = bytes(range(256)) * 1000
    file.write_bytes(data)
    status, headers, body = call_wsgi(f"/r/file/?p={quote(str(file))}", range="bytes=1000-2999")
    assert status.startswith("206")
    assert headers["content-range"] == f"bytes 1000-2999/{len(data)}"
    assert body == data[1000:3000]


def test_sendfile_slices_start_at_the_offset(tmp_path: Path) -> None:
    file = tmp_path / "f.bin"
    data = bytes(range(256)) * 4000
    file.write_bytes(data)
    stream = Stream(file, name="slices", chunk_size=65536, flush_interval=0.1)
    stream.window(100_001, 700_000)
    sender = stream.sendfile()
    assert sender is not None
    left, right = socket.socketpair()
    received = bytearray()

    def read() -> None:
        while chunk := right.recv(65536):
            received.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert list(sender.send_slices(left, 700_000, slice_size=64 * 1024)) == [b""]
    finally:
        left.close()
        reader.join()
        right.close()
        stream.close()
    assert bytes(received) == data[100_001:800_001]
    assert stream.sent_bytes == 700_000
    assert str(stream.outcome) == "completed"


def test_ranges_setting_and_argument(tmp_path: Path) -> None:
    file = tmp_path / "f.bin"
    file.write_bytes(b"0123456789")
    client = Client()
    url = f"/r/file/?p={quote(str(file))}"
    response = client.get(url, headers={"Range": "bytes=2-3"})
    assert response.status_code == 206 and response.getvalue() == b"23"
    with override_settings(STREAMER_RANGES=False):
        response = client.get(url, headers={"Range": "bytes=2-3"})
        assert response.status_code == 200 and "Accept-Ranges" not in response
        assert response.getvalue() == b"0123456789"
        etag = response["ETag"]
        assert client.get(url, headers={"If-None-Match": etag}).status_code == 304


def test_a_bad_ranges_argument_names_it(tmp_path: Path) -> None:
    from django_streamer import stream_response

    with pytest.raises(ValueError, match="ranges"):
        stream_response(tmp_path, name="bad", ranges="yes")  # type: ignore[arg-type]


@pytest.mark.parametrize(("read", "outcome"), [(4, "completed"), (3, "aborted")])
def test_a_file_handed_over_whole_is_completed_when_closed_early(
    tmp_path: Path, read: int, outcome: str
) -> None:
    # curl closes once it has Content-Length bytes, before the server asks for the end.
    file = tmp_path / "f.bin"
    file.write_bytes(b"x" * 4000)
    stream = Stream(file, name="early", chunk_size=1000, flush_interval=0.1)
    chunks = stream.sync_chunks()
    assert sum(len(next(chunks)) for _ in range(read)) == read * 1000
    stream.close()
    assert str(stream.outcome) == outcome


def test_a_part_read_file_object_has_its_own_tag(tmp_path: Path) -> None:
    file = tmp_path / "f.bin"
    file.write_bytes(b"0123456789")
    client = Client()
    url = f"/r/file/?p={quote(str(file))}"
    whole = client.get(url)
    part = client.get(url + "&skip=4", headers={"If-None-Match": whole["ETag"]})
    assert part.status_code == 200 and part.getvalue() == b"456789"
    assert part["ETag"] != whole["ETag"]
