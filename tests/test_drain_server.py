"""The drain under real servers: refusals on a kept-alive connection, recycling, outcomes."""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from django_streamer.testing import WireResponse, fetch

from .conftest import Server, start_gunicorn, stop_gunicorn

pytestmark = pytest.mark.server


def tag() -> str:
    return "d" + uuid.uuid4().hex[:10]


def ask(sock: socket.socket, path: str) -> tuple[int, dict[str, str], bytes]:
    """One request on a kept-alive connection; a response with a Content-Length or chunked."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, data
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if "content-length" in headers:
        while len(body) < int(headers["content-length"]):
            more = sock.recv(65536)
            assert more, body
            body += more
    else:
        assert headers.get("transfer-encoding") == "chunked", headers
        while not body.endswith(b"0\r\n\r\n"):
            more = sock.recv(65536)
            assert more, body
            body += more
    return int(lines[0].split()[1]), headers, body


def serve_in_background(srv: Server, path: str, results: list[WireResponse]) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(fetch(srv.host, srv.port, path)))
    thread.start()
    return thread


@pytest.mark.parametrize("worker", ["gthread", "asgi"])
def test_a_new_request_on_a_kept_alive_connection_is_refused_while_draining(
    tmp_path: Path, worker: str
):
    extra = ["-c", "python:django_streamer.gunicorn_config", "--graceful-timeout", "8"]
    srv = start_gunicorn(tmp_path, worker, extra=extra, env={"STREAMER_TEST_DRAIN_TIMEOUT": "3"})
    t, results = tag(), list[WireResponse]()
    try:
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        status, _, body = ask(sock, f"/limited/abort/?items=1&tag={t}a")
        assert (status, body) == (200, b"x" * 32 + b"\n")
        # A long stream keeps the worker draining rather than gone.
        long = serve_in_background(srv, f"/stream/?items=20&delay=0.1&flush=0&tag={t}l", results)
        srv.wait_for_event("serving", f"{t}l")
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)  # the drain starts in a thread the signal handler starts
        status, headers, body = ask(sock, f"/limited/abort/?items=1&tag={t}b")
        sock.close()
        long.join(15)
    finally:
        stop_gunicorn(srv)
    assert status == 503, (status, body)
    assert headers["retry-after"] == "5" and b"restarting" in body
    assert not any(ev[1:3] == ["serving", f"{t}b"] for ev in srv.events())  # the view never ran
    # The stream that was running finishes, and is not counted as drained.
    assert results[0].complete and len(results[0].body) == 20 * 33
    assert srv.wait_for_event("finish", f"{t}l")[3] == "completed"


# gthread counts a request when it starts, asgi when it was served: the SSE
# stream counts for the first, not for the second.
@pytest.mark.parametrize(("worker", "requests"), [("gthread", 2), ("asgi", 3)])
def test_a_worker_recycled_by_max_requests_drains(tmp_path: Path, worker: str, requests: int):
    extra = ["-c", "python:django_streamer.gunicorn_config", "--graceful-timeout", "8"]
    extra += ["--max-requests", "3", "--max-requests-jitter", "0"]
    srv = start_gunicorn(tmp_path, worker, extra=extra, env={"STREAMER_TEST_DRAIN_TIMEOUT": "1"})
    t, results = tag(), list[WireResponse]()
    try:
        (first,) = srv.worker_pids()
        sse = serve_in_background(srv, f"/sse/ticks/?interval=0.1&tag={t}s", results)
        srv.wait_for_event("serving", f"{t}s")
        time.sleep(0.3)
        # The last of these trips max_requests, and is still served.
        statuses = [
            fetch(srv.host, srv.port, f"/limited/abort/?items=1&tag={t}{i}").status
            for i in range(requests)
        ]
        tripped = time.monotonic()
        sse.join(10)
        ended = time.monotonic() - tripped
        deadline = time.monotonic() + 15
        while first in srv.worker_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        replaced = first not in srv.worker_pids()
    finally:
        stop_gunicorn(srv)
    assert statuses == [200] * requests
    wire = results[0]
    assert wire.complete and wire.body.endswith(b": draining\nretry: 1000\n\n"), wire.error
    assert ended < 2, ended  # within STREAMER_DRAIN_SPREAD (1 s), not graceful_timeout (8 s)
    assert srv.wait_for_event("finish", f"{t}s")[3] == "drained"
    assert replaced


def test_a_sync_worker_recycled_during_an_sse_request_ends_it_at_once(tmp_path: Path):
    # The sync worker decides to recycle before it runs the request that
    # trips max_requests: that SSE stream starts draining and ends at once.
    extra = ["-c", "python:django_streamer.gunicorn_config", "--graceful-timeout", "8"]
    extra += ["--max-requests", "2", "--max-requests-jitter", "0"]
    srv = start_gunicorn(tmp_path, "sync", extra=extra)
    t = tag()
    try:
        assert fetch(srv.host, srv.port, f"/limited/abort/?items=1&tag={t}a").status == 200
        started = time.monotonic()
        wire = fetch(srv.host, srv.port, f"/sse/ticks/?interval=0.1&tag={t}s", timeout=10)
        took = time.monotonic() - started
        finish = srv.wait_for_event("finish", f"{t}s")
    finally:
        stop_gunicorn(srv)
    assert wire.complete and wire.body.endswith(b": draining\nretry: 1000\n\n"), wire.error
    assert took < 1.5 and finish[3] == "drained"


def test_an_sse_stream_carries_the_view_name_and_path_on_a_real_server(tmp_path: Path):
    srv = start_gunicorn(tmp_path, "gthread")
    try:
        wire = fetch(srv.host, srv.port, "/sse/unnamed/?x=1")
        seen = srv.wait_for_event("recorded", "tests.sse_views.unnamed")
    finally:
        stop_gunicorn(srv)
    assert wire.complete and wire.status == 200
    assert seen[3] == "/sse/unnamed/"
