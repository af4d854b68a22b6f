"""What SSE clients get on the wire: Last-Event-ID, relayed bad items, the thread budget."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_streamer.testing import WireResponse, fetch

from .conftest import Server, stop_gunicorn
from .test_sse_server import open_stream, start, tag

pytestmark = pytest.mark.server


@pytest.fixture(params=["gthread", "asgi", "uvicorn"])
def sse_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    srv = start(tmp_path, request.param)
    yield srv
    stop_gunicorn(srv)


def get(srv: Server, path: str, last_event_id: str | None = None) -> WireResponse:
    # The header goes out as the UTF-8 bytes a browser sends (fetch writes latin-1).
    headers = {}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id.encode().decode("latin-1")
    wire = fetch(srv.host, srv.port, path, headers=headers)
    assert wire.status == 200 and wire.complete, (wire.status, wire.error, wire.body[:300])
    return wire


def test_last_event_id_is_read_as_utf8_and_bounded(sse_server: Server):
    def read(value: str | None) -> str:
        body = get(sse_server, "/sse/resume/", value).body.decode()
        assert body.startswith(":\n\ndata: ") and body.endswith("\n\n"), body[:200]
        return body[len(":\n\ndata: ") : -2]

    assert read("café-☃") == repr("café-☃")
    assert read("7" * 1024) == repr("7" * 1024)
    assert read("7" * 1025) == "None"
    assert read("é" * 600) == "None"  # 1200 bytes
    assert read("x" * 4000) == "None"
    assert read(None) == "None"


def test_the_documented_resume_pattern_survives_junk(sse_server: Server):
    def first_id(value: str) -> int:
        wire = get(sse_server, "/sse/ticks/?interval=0.05&max_duration=0.4&ping=5", value)
        ids = [line for line in wire.body.decode().splitlines() if line.startswith("id: ")]
        return int(ids[0][4:])

    assert first_id("41") == 42
    assert first_id("junk") == 1
    assert first_id("9" * 2000) == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_bad_relayed_item_does_not_take_the_feed_down(sse_server: Server, kind: str):
    wire = get(sse_server, f"/sse/relay/?kind={kind}")
    text = wire.body.decode("utf-8")  # strict: valid UTF-8
    assert text == (
        ':\n\ndata: ok 1\n\ndata: bad \ufffd text\n\ndata: {"n":null,"m":[null]}\n\ndata: ok 2\n\n'
    )
    json.loads(text.split("\n\n")[3][6:], parse_constant=pytest.fail)


@pytest.mark.parametrize("worker", ["gthread", "uvicorn"])
def test_sources_stuck_in_c_are_bounded_per_process(tmp_path: Path, worker: str):
    # Two streams whose source is blocked in C without a timeout; their clients
    # go away. The streams end, the threads stay: the next sync stream is a 503.
    srv = start(tmp_path, worker, env={"STREAMER_TEST_SSE_MAX_THREADS": "2"})
    try:
        tags = [tag(), tag()]
        for t in tags:
            sock, head = open_stream(srv.port, f"/sse/stuck/?ping=0.3&tag={t}")
            while b"data: started" not in head:
                head += sock.recv(65536)
            sock.close()
        for t in tags:
            assert srv.wait_for_event("finish", t, timeout=10)[3] == "aborted"
        time.sleep(0.3)
        refused = fetch(srv.host, srv.port, "/sse/frames/?kind=sync")
        assert refused.status == 503 and refused.complete, refused.error
        assert refused.headers["retry-after"] == "5"
        assert b"Too many live event streams" in refused.body
        assert "STREAMER_SSE_MAX_THREADS" in srv.log()
        # An async source needs no thread: still served.
        assert get(srv, "/sse/frames/?kind=async").body.startswith(b":\n\nevent: multi")
    finally:
        stop_gunicorn(srv)
