"""The stream path's bugs from issue 8, under every server model, read off the raw socket."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings

from django_streamer import StreamingResponse, stream_response
from django_streamer.context import serving
from django_streamer.core.recorder import Outcome, StreamRecorder
from django_streamer.core.stream import Stream
from django_streamer.extensions import extensions
from django_streamer.testing import fetch

from .conftest import (
    Server,
    asgi_scope,
    call_asgi,
    start_gunicorn,
    start_uvicorn,
    stop_gunicorn,
    wsgi_iter,
)

ROOT = Path(__file__).resolve().parent.parent


def tag() -> str:
    return "t" + uuid.uuid4().hex[:10]


# -- 1. an empty source -----------------------------------------------------


@pytest.mark.server
@pytest.mark.parametrize("kind", ["list", "iter", "sync", "async"])
@pytest.mark.parametrize("flush", ["0", "0.1"])
def test_an_empty_source_is_a_clean_empty_200(any_server: Server, kind, flush):
    t = tag()
    path = f"/stream/?kind={kind}&items=0&flush={flush}&tag={t}"
    wire = fetch(any_server.host, any_server.port, path)
    assert wire.status == 200, wire
    assert wire.complete and wire.body == b""
    assert wire.headers.get("content-length") == "0", wire.headers
    assert "transfer-encoding" not in wire.headers
    assert any_server.wait_for_event("finish", t)[3:] == ["completed", "0"]


# -- 2. chunks never exceed chunk_size ---------------------------------------


@pytest.mark.server
def test_a_slow_multibyte_str_source_never_sends_a_chunk_over_chunk_size(any_server: Server):
    # 8 euro signs = 24 bytes per item, counted as 8 characters: the flush path
    # used to send them whole, 24-byte chunks with chunk_size=16.
    path = "/stream/?kind=multibyte&items=6&size=24&delay=0.05&flush=0.01&chunk=16"
    wire = fetch(any_server.host, any_server.port, path)
    assert wire.complete
    assert wire.body == ("\u20ac" * 8 * 6).encode()
    assert max(len(c) for c in wire.chunks) <= 16, [len(c) for c in wire.chunks]


# -- 4. a bad source before the first byte -------------------------------------


@pytest.mark.server
@pytest.mark.parametrize("kind", ["int", "none"])
def test_a_bad_first_item_gets_djangos_500_on_every_server(any_server: Server, kind):
    t = tag()
    wire = fetch(any_server.host, any_server.port, f"/stream/?kind={kind}&tag={t}")
    assert wire.status == 500 and wire.complete
    assert b"<h1>Server Error (500)</h1>" in wire.body  # Django's page, not the server's
    assert any_server.wait_for_event("finish", t)[3] == "failed"
    log = any_server.log()
    assert f"Stream '{t}' failed before any byte was sent" in log
    assert "left incomplete" not in log


def _handlers(path: str) -> list[tuple[int, bytes]]:
    status, _, body = wsgi_iter(path)
    wsgi = (int(status.split()[0]), b"".join(body))
    body.close()
    result = asyncio.run(call_asgi(path))
    return [wsgi, (result.status, result.body)]


@pytest.mark.parametrize("kind", ["int", "none"])
def test_a_bad_first_item_takes_djangos_500_path_in_process(kind, caplog):
    with caplog.at_level(logging.ERROR), override_settings(DEBUG=True):
        for status, body in _handlers(f"/stream/?kind={kind}"):
            assert status == 500
            assert b"StreamSourceError" in body  # the debug page
    logged = [r for r in caplog.records if r.name == "django.request"]
    assert len(logged) == 2, caplog.records


def test_a_bad_first_item_reaches_handler500(settings):
    settings.ROOT_URLCONF = "tests.urls_handler500"
    for status, body in _handlers("/stream/?kind=int"):
        assert (status, body) == (500, b"handler500 ran")


def test_a_failure_after_bytes_says_the_response_is_left_incomplete(caplog):
    _, _, body = wsgi_iter("/stream/?kind=sync&items=100&fail_after=50&flush=0&tag=late")
    with pytest.raises(RuntimeError):
        list(body)
    body.close()
    assert "Stream 'late' failed after 1650 bytes; the response is left incomplete" in caplog.text


async def _asgi_times(path: str) -> tuple[float, float]:
    """When (since the call) http.response.start and the first body bytes were sent."""
    from django.core.handlers.asgi import ASGIHandler

    began = time.monotonic()
    times: dict[str, float] = {}
    scope = asgi_scope(path)
    never = asyncio.Event()

    async def receive() -> dict[str, object]:
        if "request" not in times:
            times["request"] = 0
            return {"type": "http.request", "body": b"", "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    async def send(message: Mapping[str, Any]) -> None:
        now = time.monotonic() - began
        if message["type"] == "http.response.start":
            times["start"] = now
        elif message.get("body") and "body" not in times:
            times["body"] = now

    await ASGIHandler()(scope, receive, send)
    return times["start"], times["body"]


def test_the_first_chunk_wait_does_not_delay_a_slow_sources_first_byte():
    # Under ASGI the headers wait up to flush_interval for the first chunk;
    # an async source slower than that starts the response without it, and its
    # first body byte goes out when it is made (0.3 s), as without the wait.
    start, body = asyncio.run(_asgi_times("/stream/?kind=async&items=2&delay=0.3&flush=0.05"))
    assert 0.04 <= start < 0.2, start
    assert 0.3 <= body < 0.45, body


def test_a_slow_sync_source_under_asgi_sends_headers_with_its_first_chunk():
    # The sync source runs on Django's one thread-sensitive thread, which the
    # sync middleware after the view need too: the headers go with the first
    # chunk (as under WSGI), and that chunk is no later than without the wait.
    start, body = asyncio.run(_asgi_times("/stream/?kind=sync&items=2&delay=0.3&flush=0.05"))
    assert start <= body
    assert 0.3 <= body < 0.45, body


# -- 4/7.5: a recorder factory that raises after a Path was opened --------------


def test_a_raising_recorder_factory_does_not_leak_the_opened_file(monkeypatch, tmp_path):

    opened: list[object] = []

    def spy(*args, **kwargs):
        file = open(*args, **kwargs)  # noqa: SIM115
        opened.append(file)
        return file

    def factory(stream):
        raise RuntimeError("recorder factory failed")

    monkeypatch.setattr("django_streamer.core.sources.open", spy, raising=False)
    monkeypatch.setattr(extensions, "stream_recorder_factories", (factory,))
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 100)
    with pytest.raises(RuntimeError, match="recorder factory failed"):
        stream_response(path)
    assert len(opened) == 1 and opened[0].closed  # type: ignore[attr-defined]


# -- 3. file downloads: time to first byte and progress -------------------------


class Timeline(StreamRecorder):
    def __init__(self) -> None:
        self.chunks: list[tuple[float, int]] = []
        self.outcome: Outcome | None = None

    def chunk(self, nbytes: int) -> None:
        self.chunks.append((time.monotonic(), nbytes))

    def finish(self, outcome: Outcome) -> None:
        self.outcome = outcome


def test_sendfile_reports_its_first_byte_when_sending_starts(tmp_path):
    # A slow reader drains 4 MiB over a real socket pair through socket.sendfile(),
    # as gunicorn does: the first byte is recorded when sending starts, not at the end.
    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * (4 << 20))
    stream = Stream(path, name="file", chunk_size=65536, flush_interval=0.1)
    timeline = Timeline()
    stream.add_recorder(timeline)
    sender = stream.sendfile()
    assert sender is not None
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)

    def read_slowly() -> None:
        while b.recv(65536):
            time.sleep(0.005)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    started = time.monotonic()
    a.sendfile(sender, offset=0, count=stream.length)
    ended = time.monotonic()
    a.close()
    reader.join()
    b.close()
    sender.close()
    assert ended - started > 0.2
    assert timeline.chunks[0][0] - started < 0.05  # first byte: at the start
    assert sum(n for _, n in timeline.chunks) == 4 << 20
    assert timeline.outcome is Outcome.COMPLETED and stream.sent_bytes == 4 << 20


def test_the_read_path_reports_progress_block_by_block(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"x" * 1000)
    stream = Stream(path, name="file", chunk_size=100, flush_interval=0.1)
    timeline = Timeline()
    stream.add_recorder(timeline)
    sender = stream.sendfile()
    assert sender is not None
    while sender.read(100):
        pass
    sender.close()
    assert [n for _, n in timeline.chunks] == [0] + [100] * 10
    assert timeline.outcome is Outcome.COMPLETED


# -- 7. stream names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("/export/", "tests.views.export_view"),
        ("/export-cbv/", "tests.views.ExportView"),
        ("/stream/?kind=list&items=1", "list"),  # an explicit name wins
    ],
)
def test_a_stream_is_named_after_the_resolved_view(url, name):
    response = Client().get(url)
    assert isinstance(response, StreamingResponse)
    assert response.stream.name == name
    assert response.stream.path == url.split("?")[0]
    response.close()


@override_settings(
    MIDDLEWARE=["django_streamer.context.CurrentRequestMiddleware"],
)
def test_the_middleware_names_streams_after_the_resolved_view():
    response = Client().get("/export/")
    assert isinstance(response, StreamingResponse)
    assert response.stream.name == "tests.views.export_view"
    response.close()


def test_outside_a_request_a_stream_is_unnamed_unless_given_a_name():
    response = stream_response([b"x"])
    assert response.stream.name == "unnamed"
    response.close()


# -- 8. the public hooks ---------------------------------------------------------


def test_on_done_runs_once_with_the_outcome():
    seen: list[Outcome] = []
    response = stream_response([b"a", b"b"], name="hooks")
    response.on_done(seen.append)
    assert b"".join(response) == b"ab"
    response.close()
    assert seen == [Outcome.COMPLETED]


def test_a_recorder_added_after_the_end_hears_the_outcome_at_once():
    response = stream_response([b"a"], name="late")
    response.close()
    timeline = Timeline()
    response.add_recorder(timeline)
    assert timeline.outcome is Outcome.ABORTED


# -- 6. Content-Disposition --------------------------------------------------------


def test_a_long_filename_is_capped_keeping_its_extension():
    from django_streamer.core.headers import MAX_FILENAME_BYTES, cap_filename

    response = stream_response([b"x"], filename="\u00e9" * 3900 + ".csv")
    value = response["Content-Disposition"]
    response.close()
    assert len(value) < 1200  # was 7.8 KB for this name
    assert value.endswith(".csv")
    assert '.csv"' in value  # the ASCII fallback keeps it too
    capped = cap_filename("\u00e9" * 3900 + ".csv")
    assert capped.endswith(".csv") and len(capped.encode()) <= MAX_FILENAME_BYTES
    assert cap_filename("a" * 300).startswith("a") and len(cap_filename("a" * 300)) == 255
    assert cap_filename("short.txt") == "short.txt"


@pytest.mark.parametrize("name", ["", "   ", "\u202e", "\u2066\u2069 "])
def test_a_blank_filename_is_a_clear_value_error(name):
    with pytest.raises(ValueError, match="filename is blank"):
        stream_response([b"x"], filename=name)


def test_bidi_controls_are_stripped_from_the_filename():
    response = stream_response([b"x"], filename="invoice\u202etxt.exe\u2066\u2069")
    value = response["Content-Disposition"]
    response.close()
    assert "%E2%80%AE" not in value and "%E2%81" not in value
    assert "filename*=UTF-8''invoicetxt.exe" in value


# -- 5. the send timeout -------------------------------------------------------------


def _stalled_clients(server: Server, count: int, kind: str, t: str) -> list[socket.socket]:
    """``count`` clients that ask for a huge stream and never read a byte of it."""
    clients = []
    for _ in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((server.host, server.port))
        path = f"/stream/?kind={kind}&items=100000&size=65536&flush=0&tag={t}"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        clients.append(sock)
    deadline = time.monotonic() + 20
    while sum(ev[1:3] == ["serving", t] for ev in server.events()) < count:
        assert time.monotonic() < deadline, "the stalled streams did not all start"
        time.sleep(0.05)
    return clients


def _aborted(server: Server, t: str) -> int:
    return sum(ev[1:4] == ["finish", t, "aborted"] for ev in server.events())


@pytest.mark.server
def test_64_stalled_clients_do_not_lock_out_the_shipped_gthread_config(tmp_path):
    # django_streamer.gunicorn_config: gthread, 4 workers x 16 threads = 64
    # threads, every one of them blocked in sendall() to a client that reads
    # nothing. With a 5 s send timeout a normal request is served within ~6 s.
    server = start_gunicorn(
        tmp_path,
        "gthread",
        workers=4,
        extra=["-c", "python:django_streamer.gunicorn_config", "--threads", "16"],
        env={"STREAMER_TEST_SEND_TIMEOUT": "5"},
    )
    t = tag()
    clients: list[socket.socket] = []
    try:
        clients = _stalled_clients(server, 64, "sync", t)
        time.sleep(0.5)  # their socket buffers fill; all 64 threads now wait on them
        began = time.monotonic()
        wire = fetch(server.host, server.port, "/stream/?kind=sync&items=10", timeout=15)
        took = time.monotonic() - began
        assert wire.complete and wire.body == (b"x" * 32 + b"\n") * 10
        assert took < 6.5, took
        deadline = time.monotonic() + 10
        while _aborted(server, t) < 64 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _aborted(server, t) == 64  # each dropped stream is counted as aborted
    finally:
        for sock in clients:
            sock.close()
        stop_gunicorn(server)


@pytest.mark.server
@pytest.mark.parametrize("model", ["asgi", "uvicorn"])
def test_stalled_clients_are_dropped_under_asgi(tmp_path, model):
    env = {"STREAMER_TEST_SEND_TIMEOUT": "2"}
    if model == "uvicorn":
        server = start_uvicorn(tmp_path, env=env)
    else:
        server = start_gunicorn(tmp_path, "asgi", env=env)
    t = tag()
    clients: list[socket.socket] = []
    try:
        clients = _stalled_clients(server, 16, "async", t)
        began = time.monotonic()
        while _aborted(server, t) < 16 and time.monotonic() - began < 10:
            time.sleep(0.1)
        took = time.monotonic() - began
        assert _aborted(server, t) == 16
        assert took < 4, took  # 2 s from each stream's last progress, plus a margin
        assert "accepted no bytes for 2.0 s (STREAMER_SEND_TIMEOUT)" in server.log()
        wire = fetch(server.host, server.port, "/stream/?kind=async&items=10", timeout=10)
        assert wire.complete
    finally:
        for sock in clients:
            sock.close()
        stop_gunicorn(server)


# -- 1. the lifecycle ------------------------------------------------------------------


def test_the_lifecycle_allows_only_its_moves():
    from django_streamer.core.lifecycle import MOVES, Lifecycle, State

    assert MOVES[State.CLOSED] == frozenset()
    life = Lifecycle("s")
    assert life.try_move(State.SENDFILE) and life.try_move(State.NEW)  # sendfile cancelled
    life.move(State.PREPARED)
    life.move(State.STREAMING)
    with pytest.raises(RuntimeError, match="stream 's' can be consumed only once"):
        life.move(State.STREAMING)
    assert not life.try_move(State.SENDFILE)
    life.move(State.CLOSED)
    assert not life.try_move(State.CLOSED)


@pytest.mark.parametrize("source", [[], iter([]), (x for x in b"")])
def test_an_empty_prepared_source_is_served_once_with_length_zero(source):
    stream = Stream(source, name="empty", chunk_size=8, flush_interval=0.1)
    timeline = Timeline()
    stream.add_recorder(timeline)
    assert stream.prepare() == 0
    assert list(stream.sync_chunks()) == []
    with pytest.raises(RuntimeError, match="consumed only once"):
        stream.sync_chunks()
    stream.close()
    assert timeline.outcome is Outcome.COMPLETED


def test_an_empty_source_under_asgi_with_flush_zero_has_length_zero():
    async def main() -> tuple[int | None, list[bytes]]:
        stream = Stream(iter([]), name="e", chunk_size=8, flush_interval=0)
        length = await stream.aprepare(0.02)
        return length, [c async for c in stream.async_chunks()]

    assert asyncio.run(main()) == (0, [])


def test_a_bad_send_timeout_names_the_setting():
    with (
        override_settings(STREAMER_SEND_TIMEOUT="5s"),
        pytest.raises(ImproperlyConfigured, match="setting STREAMER_SEND_TIMEOUT"),
    ):
        stream_response([b"x"])


def test_the_send_timeout_is_set_on_gunicorns_socket():
    from django.test import RequestFactory

    a, b = socket.socketpair()
    try:
        request = RequestFactory().get("/")
        request.META["gunicorn.socket"] = a
        with override_settings(STREAMER_SEND_TIMEOUT=7), serving(request):
            stream_response([b"x"], name="t").close()
        assert a.gettimeout() == 7
        with override_settings(STREAMER_SEND_TIMEOUT=None), serving(request):
            a.settimeout(None)
            stream_response([b"x"], name="t").close()
        assert a.gettimeout() is None
        del request
    finally:
        a.close()
        b.close()


@pytest.mark.server
def test_a_sendfile_downloads_time_to_first_byte_is_not_its_duration(tmp_path):
    # gthread uses sendfile() for a Path. A client reading 64 KiB every 5 ms
    # makes the 8 MB download (twice the socket buffers) last about a second;
    # its first byte left at once.
    server = start_gunicorn(tmp_path, "gthread")
    t = tag()
    try:
        with socket.create_connection((server.host, server.port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            path = f"/stream/?kind=path&items=250000&tag={t}"
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            while sock.recv(65536):
                time.sleep(0.005)
        server.wait_for_event("finish", t)
        wire = fetch(server.host, server.port, "/streaming/metrics/")
        text = wire.body.decode()

        def figure(metric: str) -> float:
            prefix = f'django_streamer_{metric}{{stream="{t}"}} '
            return float(
                next(line for line in text.splitlines() if line.startswith(prefix)).split()[-1]
            )

        duration = figure("stream_duration_seconds_sum")
        ttfb = figure("time_to_first_byte_seconds_sum")
        assert duration > 0.2, duration
        assert ttfb < 0.1 and ttfb < duration / 4, (ttfb, duration)
        assert figure("bytes_total") == 250000 * 33
    finally:
        stop_gunicorn(server)


def test_closing_from_a_thread_while_the_first_chunk_is_pending_aborts_the_source():
    # Django's ASGI handler calls close() in a worker thread; the first chunk
    # is still being made on the loop.
    closed: list[bool] = []

    async def slow_source() -> Any:
        try:
            await asyncio.sleep(5)
            yield b"late"
        finally:
            closed.append(True)

    async def main() -> Outcome | None:
        stream = Stream(slow_source(), name="pending", chunk_size=8, flush_interval=0.05)
        timeline = Timeline()
        stream.add_recorder(timeline)
        assert await stream.aprepare(0.05) is None
        await asyncio.to_thread(stream.close)
        for _ in range(50):
            if closed:
                break
            await asyncio.sleep(0.01)
        return timeline.outcome

    began = time.monotonic()
    assert asyncio.run(main()) is Outcome.ABORTED
    assert closed == [True] and time.monotonic() - began < 1
