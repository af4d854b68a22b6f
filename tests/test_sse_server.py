"""SSE and the drain under real gunicorn workers, read off the raw socket."""

from __future__ import annotations

import itertools
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_streamer.testing import WireResponse, fetch

from .conftest import Server, start_gunicorn, stop_gunicorn
from .conftest import start_uvicorn as conftest_start_uvicorn

pytestmark = pytest.mark.server
ROW = b"x" * 32 + b"\n"
FRAMED = (
    ":\n\n"
    "event: multi\nid: 1\ndata: line one\ndata: line two\n\n"
    "data: plain\n\n"
    'data: {"k":[1,2]}\n\n'
    "id: 2\nretry: 500\ndata: x\n\n"
)


def tag() -> str:
    return "s" + uuid.uuid4().hex[:10]


def start_uvicorn(
    tmp_path: Path, *, graceful: float = 8, env: dict[str, str] | None = None
) -> Server:
    """uvicorn serving ``tests.asgi_uvicorn`` (it drains on SIGTERM)."""
    return conftest_start_uvicorn(
        tmp_path,
        env=env,
        app="tests.asgi_uvicorn:application",
        extra=["--timeout-graceful-shutdown", str(graceful)],
    )


def start(
    tmp_path: Path, kind: str, *, graceful: int = 8, env: dict[str, str] | None = None
) -> Server:
    if kind == "uvicorn":
        return start_uvicorn(tmp_path, graceful=graceful, env=env)
    extra = [
        *("-c", "python:django_streamer.gunicorn_config", "--threads", "8"),
        *("--graceful-timeout", str(graceful)),
    ]
    return start_gunicorn(tmp_path, kind, extra=extra, env=env)


@pytest.fixture(params=["gthread", "asgi", "uvicorn"])
def sse_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    srv = start(tmp_path, request.param)
    yield srv
    stop_gunicorn(srv)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_framing_and_headers_on_the_wire(sse_server: Server, kind: str):
    wire = fetch(sse_server.host, sse_server.port, f"/sse/frames/?kind={kind}")
    assert wire.status == 200 and wire.complete, wire.error
    assert wire.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert wire.headers["cache-control"] == "no-cache"
    assert wire.headers["x-accel-buffering"] == "no"
    assert wire.body.decode() == FRAMED


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_pings_at_the_interval_while_the_source_is_idle(sse_server: Server, kind: str):
    path = f"/sse/idle/?kind={kind}&ping=0.3&max_duration=1"
    wire = fetch(sse_server.host, sse_server.port, path)
    assert wire.complete, wire.error
    assert wire.body.decode() == ":\n\n" * 4 + ": max_duration\nretry: 1000\n\n"
    times = _arrival_of_each_block(wire)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(0.25 < gap < 0.45 for gap in gaps[:3]), gaps
    assert 0.95 < times[-1] - times[0] < 1.3, times


def _arrival_of_each_block(wire: WireResponse) -> list[float]:
    # One arrival per block: each went out in its own write.
    out = []
    for chunk, at in zip(wire.chunks, wire.arrivals, strict=True):
        out += [at] * chunk.count(b"\n\n")
    return out


def open_stream(port: int, path: str) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(b"\n\n\r\n"):
        more = sock.recv(65536)
        assert more, data
        data += more
    return sock, data


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_vanished_client_is_noticed_within_ping_plus_one_second(sse_server: Server, kind: str):
    t, ping = tag(), 0.5
    sock, head = open_stream(sse_server.port, f"/sse/idle/?kind={kind}&ping={ping}&tag={t}")
    assert b"200 OK" in head
    time.sleep(0.2)
    sock.close()
    gone = time.monotonic()
    finish = sse_server.wait_for_event("finish", t, timeout=ping + 1)
    assert finish[3] == "aborted"
    left = max(0.1, gone + ping + 1 - time.monotonic())
    sse_server.wait_for_event("source-closed", t, timeout=left)
    assert time.monotonic() - gone < ping + 1


def wait_until_served(srv: Server, tags: list[str]) -> None:
    """Until every request is in a view: one still in the listen queue would be reset."""
    for name in tags:
        srv.wait_for_event("serving", name, timeout=15)
    time.sleep(0.5)  # a few events on the wire before the signal


@pytest.mark.parametrize("worker", ["gthread", "asgi", "uvicorn"])
def test_sigterm_finite_streams_complete_and_sse_streams_end_cleanly(tmp_path: Path, worker: str):
    graceful = 8
    srv = start(tmp_path, worker, graceful=graceful, env={"STREAMER_TEST_DRAIN_TIMEOUT": "1"})
    results: dict[str, WireResponse] = {}
    ended: dict[str, float] = {}

    def get(name: str, path: str) -> None:
        results[name] = fetch(srv.host, srv.port, path, timeout=graceful + 5)
        ended[name] = time.monotonic()

    t = tag()
    plan = {f"finite{i}": f"/stream/?items=30&delay=0.1&flush=0&tag={t}f{i}" for i in range(4)}
    for i, kind in enumerate(["sync", "async"]):
        plan[f"sse{i}"] = f"/sse/ticks/?kind={kind}&interval=0.1&tag={t}s{i}"
    threads = [threading.Thread(target=get, args=item) for item in plan.items()]
    try:
        for thread in threads:
            thread.start()
        wait_until_served(srv, [f"{t}f{i}" for i in range(4)] + [f"{t}s0", f"{t}s1"])
        srv.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        for thread in threads:
            thread.join(graceful + 6)
        srv.proc.wait(graceful + 2)
    finally:
        stop_gunicorn(srv)
    for i in range(4):
        wire = results[f"finite{i}"]
        assert wire.complete and wire.body == ROW * 30, (wire.error, len(wire.body))
    for i in range(2):
        wire = results[f"sse{i}"]
        assert wire.complete, wire.error
        text = wire.body.decode()
        assert text.endswith(": draining\nretry: 1000\n\n"), text[-200:]
        ids = [int(line[4:]) for line in text.splitlines() if line.startswith("id: ")]
        assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 2, ids
        # The drain spreads endings over STREAMER_DRAIN_SPREAD (1 s here).
        assert ended[f"sse{i}"] - signalled < 1.5, ended[f"sse{i}"] - signalled
    # Counted apart: the SSE streams as drained, the finite ones as completed.
    outcomes = {ev[2]: ev[3] for ev in srv.events() if ev[1] == "finish"}
    assert [outcomes.get(f"{t}s{i}") for i in range(2)] == ["drained"] * 2, outcomes
    assert [outcomes.get(f"{t}f{i}") for i in range(4)] == ["completed"] * 4, outcomes


def test_sigterm_drains_a_sync_worker(tmp_path: Path):
    # A sync worker serves one request at a time: one worker streams events,
    # the other a finite body; both must end cleanly.
    extra = ["-c", "python:django_streamer.gunicorn_config", "--graceful-timeout", "8"]
    env = {"STREAMER_TEST_DRAIN_TIMEOUT": "0.5"}
    srv = start_gunicorn(tmp_path, "sync", workers=2, extra=extra, env=env)
    results: dict[str, WireResponse] = {}

    def get(name: str, path: str) -> None:
        results[name] = fetch(srv.host, srv.port, path, timeout=15)

    t = tag()
    threads = [
        threading.Thread(target=get, args=("sse", f"/sse/ticks/?interval=0.1&tag={t}s")),
        threading.Thread(target=get, args=("finite", f"/stream/?items=20&delay=0.1&tag={t}f")),
    ]
    try:
        for thread in threads:
            thread.start()
        wait_until_served(srv, [f"{t}s", f"{t}f"])
        srv.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        srv.proc.wait(10)
        stopped = time.monotonic() - signalled
        for thread in threads:
            thread.join(5)
    finally:
        stop_gunicorn(srv)
    assert results["finite"].complete and results["finite"].body == ROW * 20
    sse = results["sse"]
    assert sse.complete and sse.body.endswith(b": draining\nretry: 1000\n\n"), sse.error
    assert stopped < 3, stopped


def test_a_stream_cut_when_graceful_timeout_runs_out_looks_incomplete(tmp_path: Path):
    # A finite stream of 10 s is left to run by the drain; graceful_timeout
    # (1 s) runs out, the worker is killed, and the client sees a cut.
    extra = ["-c", "python:django_streamer.gunicorn_config", "--graceful-timeout", "1"]
    srv = start_gunicorn(tmp_path, "gthread", extra=extra)
    result: list[WireResponse] = []
    path = "/stream/?items=100&delay=0.1&flush=0"
    thread = threading.Thread(target=lambda: result.append(fetch(srv.host, srv.port, path)))
    try:
        thread.start()
        time.sleep(0.8)
        srv.proc.send_signal(signal.SIGTERM)
        thread.join(10)
    finally:
        stop_gunicorn(srv)
    wire = result[0]
    assert not wire.complete and wire.error == "connection closed before the final chunk"
    assert 0 < len(wire.body) < 100 * len(ROW)
