"""stream_writer and the formats on the wire: gunicorn gthread, gunicorn asgi and uvicorn."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Server, free_port, make_database, start_gunicorn, stop_gunicorn

pytestmark = pytest.mark.server

ENV = {"DJANGO_SETTINGS_MODULE": "tests.writer_settings"}


def start_uvicorn(tmp_path: Path, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    log = tmp_path / f"uvicorn-{port}.log"
    full_env = {
        **os.environ,
        "STREAMER_TEST_LIMITER_DIR": str(tmp_path / f"pools-{port}"),
        "STREAMER_TEST_METRICS_DIR": str(tmp_path / f"metrics-{port}"),
        "PYTHONPATH": str(ROOT),
        **ENV,
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "uvicorn", "tests.asgi:application", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--log-level", "warning"]
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log_file, stderr=log_file)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"uvicorn did not listen:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    return Server(port, "uvicorn", tmp_path / "none", proc, log, tmp_path / f"pools-{port}")


def start(kind: str, tmp_path: Path, env: dict[str, str] | None = None) -> Server:
    if kind == "uvicorn":
        return start_uvicorn(tmp_path, env)
    return start_gunicorn(tmp_path, kind, env={**ENV, **(env or {})})


@pytest.fixture(params=["gthread", "asgi", "uvicorn"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    srv = start(request.param, tmp_path)
    yield srv
    stop_gunicorn(srv)  # SIGTERM, then SIGKILL: right for uvicorn too


def connect(server: Server, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
    return sock


def fetch(server: Server, path: str) -> tuple[int, dict[str, str], bytes, bool]:
    """Status, headers, body and whether the body was complete (framing intact)."""
    with connect(server, path) as sock:
        raw = bytearray()
        while data := sock.recv(1 << 16):
            raw += data
    if not raw:
        return 0, {}, b"", False  # the server closed the connection without a reply
    head, _, rest = bytes(raw).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        body, complete = dechunk(rest)
    else:
        length = int(headers.get("content-length", len(rest)))
        body, complete = rest, len(rest) == length
    return status, headers, body, complete


def dechunk(data: bytes) -> tuple[bytes, bool]:
    out = bytearray()
    while True:
        line, sep, data = data.partition(b"\r\n")
        if not sep:
            return bytes(out), False
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return bytes(out), data.startswith(b"\r\n")
        if len(data) < size + 2:
            return bytes(out + data[:size]), False
        out += data[:size]
        data = data[size + 2 :]


def state(server: Server) -> dict[str, Any]:
    status, _, body, _ = fetch(server, "/state")
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def settle(server: Server, baseline: int, timeout: float = 15.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        now = state(server)
        if (now["writers"] == 0 and now["threads"] <= baseline) or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def test_body_is_complete_and_what_the_producer_wrote(server):
    status, _, body, complete = fetch(server, "/fast?n=2000000")
    assert (status, complete) == (200, True)
    assert body == b"x" * (-(-2_000_000 // 4096) * 4096)
    status, _, body, complete = fetch(server, "/async-fast?n=300000")
    assert (status, complete, body) == (200, True, b"a" * 303104)


def test_formats_on_the_wire(server):
    import csv
    import io
    import zipfile

    _, headers, body, complete = fetch(server, "/rows-csv?rows=5000")
    assert complete and len(list(csv.reader(io.StringIO(body.decode())))) == 5001
    _, _, body, complete = fetch(server, "/json-array?n=3000")
    assert complete and len(json.loads(body)) == 3000
    _, headers, body, complete = fetch(server, "/zip-files?stored=1&size=200000")
    assert complete and int(headers["content-length"]) == len(body)
    assert zipfile.ZipFile(io.BytesIO(body)).testzip() is None


def test_a_failure_midway_leaves_the_body_incomplete(server):
    status, _, body, complete = fetch(server, "/fail?after=3")
    assert status == 200
    assert body == b"0\n1\n2\n"
    assert not complete
    status, _, body, complete = fetch(server, "/json-array?n=50000&fail=40000")
    assert status == 200 and not complete
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)


def test_a_failure_before_the_first_byte_is_djangos_500(server):
    # StreamerMiddleware makes the first chunk inside Django's error handling.
    status, _, body, complete = fetch(server, "/fail")
    assert (status, complete) == (500, True), (status, body)
    assert b"<h1>Server Error (500)</h1>" in body  # Django's page, not the server's


def test_a_slow_reader_keeps_the_workers_memory_bounded(server):
    buffer = 256 * 1024
    before = state(server)
    with connect(server, "/fast?n=268435456&piece=65536") as sock:  # 256 MiB on offer
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        got = 0
        start = time.monotonic()
        while time.monotonic() - start < 3:  # about 100 KB/s for three seconds
            got += len(sock.recv(10_000))
            time.sleep(0.1)
        during = state(server)
    grown = (int(during["rss_kib"]) - int(before["rss_kib"])) * 1024
    assert got > 100_000
    assert grown < buffer + 8 * 1024 * 1024, f"RSS grew {grown / 2**20:.1f} MiB"
    settle(server, int(before["threads"]))


def test_200_aborted_streams_leave_the_thread_count_at_its_baseline(server):
    fetch(server, "/fast?n=1000")  # warm the worker's own threads up
    baseline = int(state(server)["threads"])
    for _ in range(200):
        with connect(server, "/endless") as sock:
            sock.recv(1000)
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
    after = settle(server, baseline)
    assert after["writers"] == 0
    assert after["threads"] == baseline


def test_the_producer_threads_sqlite_connection_is_closed(tmp_path):
    db = make_database(tmp_path)
    srv = start_gunicorn(tmp_path, "gthread", env={**ENV, "STREAMER_TEST_DB": str(db)})
    try:
        status, _, body, complete = fetch(srv, "/db")
        assert (status, body, complete) == (200, b"1\n", True)
        deadline = time.monotonic() + 5
        while state(srv)["db_closed"] is not True and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state(srv)["db_closed"] is True
    finally:
        stop_gunicorn(srv)


def postgres_or_skip() -> None:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return
    except OSError:
        if os.environ.get("CI") == "true":
            raise AssertionError("PostgreSQL at 127.0.0.1:5432 is unreachable under CI") from None
        pytest.skip("no PostgreSQL at 127.0.0.1:5432 (set CI=true to make this a failure)")


def test_the_producer_threads_postgresql_connection_is_closed(tmp_path):
    import psycopg

    postgres_or_skip()
    srv = start_gunicorn(tmp_path, "gthread", env={**ENV, "STREAMER_TEST_PG": "1"})
    try:
        status, _, body, complete = fetch(srv, "/db")
        assert status == 200 and complete, body
        pid = int(body.split(b"pid ")[1])
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres") as watcher:
            deadline = time.monotonic() + 5
            while True:
                alive = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]
                ).fetchone()
                if alive == (0,) or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        assert alive == (0,), f"backend {pid} is still connected after the stream ended"
    finally:
        stop_gunicorn(srv)


def test_sigterm_is_enough_to_stop_a_server_with_a_producer_running(tmp_path):
    srv = start("gthread", tmp_path)
    sock = connect(srv, "/endless")
    sock.recv(1000)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=15) is not None
    sock.close()
