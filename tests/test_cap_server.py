"""The stream caps on real gunicorn workers, read on the raw socket (issue 24)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_streamer.testing import fetch

from .conftest import Server, start_gunicorn, stop_gunicorn


def open_stream(server: Server, path: str, *, timeout: float = 15.0) -> tuple[socket.socket, str]:
    """Send ``GET path`` and read the response's head; the socket stays open."""
    sock = socket.create_connection((server.host, server.port), timeout=timeout)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head = b""
    try:
        while b"\r\n\r\n" not in head:
            data = sock.recv(4096)
            if not data:
                break
            head += data
    except TimeoutError:
        pass  # no answer in time: the head stays empty
    return sock, head.decode("latin-1")


def status_of(head: str) -> int:
    return int(head.split()[1]) if head.startswith("HTTP/") else 0


@pytest.fixture(params=["gthread", "asgi"])
def capped(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """Two workers sharing a host-wide cap of two streams."""
    env = {"STREAMER_TEST_MAX_STREAMS": "2", "STREAMER_TEST_MAX_STREAMS_SCOPE": "host"}
    server = start_gunicorn(tmp_path, request.param, workers=2, env=env)
    yield server
    stop_gunicorn(server)


def test_the_cap_refuses_a_third_stream_before_its_source_starts(capped: Server) -> None:
    held = [open_stream(capped, f"/cap/held/?tag=held{i}") for i in range(2)]
    assert [status_of(head) for _, head in held] == [200, 200]
    capped.wait_for_event("started", "held1")

    refused = fetch(capped.host, capped.port, "/cap/held/?tag=refused", timeout=15)
    assert refused.status == 503 and refused.complete
    assert refused.headers["retry-after"] == "5"
    assert refused.body == b"Too many streams on this server; try again later.\n"
    page = fetch(capped.host, capped.port, "/cap/page/", timeout=15)
    assert (page.status, page.body) == (200, b"page\n")  # not a stream: untouched

    metrics = fetch(capped.host, capped.port, "/streaming/metrics/", timeout=15).body.decode()
    rejected = [
        line
        for line in metrics.splitlines()
        if line.startswith("django_streamer_limiter_rejected_total") and 'limiter="streams"' in line
    ]
    assert rejected and rejected[0].endswith(" 1.0"), [
        line for line in metrics.splitlines() if "streams" in line
    ]
    time.sleep(0.3)
    assert ["started", "refused"] not in [ev[1:3] for ev in capped.events()]

    for sock, _ in held:
        sock.close()
    deadline = time.monotonic() + 15  # the held streams notice at their next write
    while True:
        again = fetch(capped.host, capped.port, "/cap/held/?tag=again", abort_after=1, timeout=15)
        if again.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert again.status == 200


def test_idle_feeds_leave_gthread_threads_for_a_normal_request(tmp_path: Path) -> None:
    # 8 threads and the default feed cap (4): without it, 8 idle feeds take every
    # thread and the page waits behind them.
    server = start_gunicorn(tmp_path, "gthread", extra=["--threads", "8"])
    socks: list[socket.socket] = []
    try:
        heads = []
        for i in range(12):
            sock, head = open_stream(server, f"/sse/idle/?tag=feed{i}", timeout=5)
            heads.append(head)
            if status_of(head) == 200:
                socks.append(sock)  # an open feed
            else:
                # As a client does after a whole response: gunicorn 27 keeps the
                # thread ~2 s for a client that does not close (lingering close).
                sock.close()
        statuses = [status_of(head) for head in heads]
        assert statuses.count(200) == 4, str(statuses)
        assert statuses.count(503) == 8, str(statuses)
        assert all("Retry-After: 5" in h for h in heads if status_of(h) == 503)
        started = time.monotonic()
        page = fetch(server.host, server.port, "/cap/page/", timeout=10)
        assert (page.status, page.body) == (200, b"page\n")
        assert time.monotonic() - started < 5  # at once, on a free thread
        assert "django_streamer.W011" in server.log()
    finally:
        for sock in socks:
            sock.close()
        stop_gunicorn(server)


def test_the_worker_logs_caps_that_do_not_fit_its_threads(tmp_path: Path) -> None:
    server = start_gunicorn(
        tmp_path,
        "gthread",
        extra=["-c", "python:django_streamer.gunicorn_config"],
        env={"STREAMER_TEST_MAX_STREAMS": "100"},
    )
    try:
        deadline = time.monotonic() + 15
        while "W012" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        log = server.log()
        assert "django_streamer.W010: STREAMER_MAX_STREAMS (100, host scope)" in log
        assert "serves at once (4)" in log  # 1 worker x 4 threads
        assert "django_streamer.W012: STREAMER_WSGI_MAX_FEEDS (4)" in log
    finally:
        stop_gunicorn(server)
