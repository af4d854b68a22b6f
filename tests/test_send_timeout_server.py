"""A client that never reads holds a gthread thread for STREAMER_SEND_TIMEOUT, not twice it."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path

import pytest

from django_streamer.testing import fetch

from .conftest import start_gunicorn, stop_gunicorn

pytestmark = pytest.mark.server
TIMEOUT = 3.0


def test_a_client_that_never_reads_holds_its_thread_for_the_timeout_once(tmp_path: Path):
    # One thread: the normal request waits for the stalled one to be dropped.
    server = start_gunicorn(
        tmp_path,
        "gthread",
        extra=["--threads", "1"],
        env={"STREAMER_TEST_SEND_TIMEOUT": str(TIMEOUT)},
    )
    t = "t" + uuid.uuid4().hex[:10]
    stalled = socket.socket()
    try:
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((server.host, server.port))
        path = f"/stream/?kind=sync&items=100000&size=65536&flush=0&tag={t}"
        stalled.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        server.wait_for_event("serving", t)
        began = time.monotonic()
        wire = fetch(server.host, server.port, "/stream/?kind=sync&items=10", timeout=30)
        took = time.monotonic() - began
        print(f"served {took:.2f} s after the stalled client's stream started")
        assert wire.complete and wire.body == (b"x" * 32 + b"\n") * 10
        # The timeout once, with a margin for a loaded machine; twice it is 6 s.
        assert took < TIMEOUT + 1.8, took
        assert server.wait_for_event("finish", t)[3] == "aborted"
    finally:
        stalled.close()
        stop_gunicorn(server)


def test_twelve_stalled_clients_on_eight_threads_hold_them_for_the_timeout_once(tmp_path: Path):
    # The report's case: a normal request was answered after 13 s with a 3 s timeout.
    server = start_gunicorn(
        tmp_path,
        "gthread",
        extra=["--threads", "8"],
        env={"STREAMER_TEST_SEND_TIMEOUT": str(TIMEOUT)},
    )
    t = "t" + uuid.uuid4().hex[:10]
    clients: list[socket.socket] = []
    try:
        fetch(server.host, server.port, "/stream/?kind=sync&items=1")  # a warm worker
        for _ in range(12):
            sock = socket.socket()
            clients.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect((server.host, server.port))
            path = f"/stream/?kind=sync&items=100000&size=65536&flush=0&tag={t}"
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        began = time.monotonic()
        wire = fetch(server.host, server.port, "/stream/?kind=sync&items=10", timeout=60)
        took = time.monotonic() - began
        print(f"served after {took:.2f} s")
        assert wire.complete
        # Eight stalled threads freed once, after the timeout; twice it is 6 s.
        assert took < TIMEOUT + 1.8, took
    finally:
        for sock in clients:
            sock.close()
        stop_gunicorn(server)
