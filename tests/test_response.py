"""stream_response() through Django's real WSGI and ASGI handlers, in-process."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import django
import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import RequestFactory, override_settings

from django_streamer import StreamingResponse, stream_response
from django_streamer.checks import check_settings
from django_streamer.context import serving
from django_streamer.core.chunking import StreamSourceError
from django_streamer.core.recorder import Outcome, StreamRecorder
from django_streamer.extensions import extensions

from .conftest import call_asgi, resolved, wsgi_iter

KINDS = ["sync", "async", "strs", "bytesio", "textio", "path"]
ROW = b"x" * 32 + b"\n"


@pytest.mark.parametrize("kind", KINDS)
def test_every_source_kind_under_wsgi_gives_exact_chunks(kind):
    status, headers, body = wsgi_iter(f"/stream/?kind={kind}&items=5000&chunk=4096")
    chunks = list(body)
    body.close()
    assert status.startswith("200")
    assert b"".join(chunks) == ROW * 5000
    assert {len(c) for c in chunks[:-1]} == {4096}
    if kind == "path":
        assert headers["content-length"] == str(5000 * 33)


@pytest.mark.parametrize("kind", KINDS)
def test_every_source_kind_under_asgi_gives_exact_chunks(kind):
    result = asyncio.run(call_asgi(f"/stream/?kind={kind}&items=5000&chunk=4096"))
    assert result.error is None
    assert result.status == 200 and result.ended
    assert result.body == ROW * 5000
    assert {len(c) for c in result.bodies[:-1]} == {4096}


def test_djangos_buffering_fallback_is_never_taken():
    # Plain Django warns "must consume ... iterators" when it buffers a whole
    # body; pytest turns warnings into errors, and we check explicitly too.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(call_asgi("/stream/?kind=sync&items=100"))
        _, _, body = wsgi_iter("/stream/?kind=async&items=100")
        list(body)
        body.close()
    assert [str(w.message) for w in caught if "must consume" in str(w.message)] == []


def test_plain_django_does_buffer_a_sync_source_under_asgi():
    # The contrast that makes the bridge worth having.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(call_asgi("/plain/?items=10"))
    assert any("must consume synchronous iterators" in str(w.message) for w in caught)


class Gate:
    """A source that stops after the first chunk until the test lets it go."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.closed = threading.Event()

    def sync(self) -> Iterator[bytes]:
        try:
            yield b"a" * 10
            assert self.go.wait(10)
            yield b"b" * 10
        finally:
            self.closed.set()

    async def asynchronous(self) -> AsyncIterator[bytes]:
        try:
            yield b"a" * 10
            while not self.go.is_set():
                await asyncio.sleep(0.01)
            yield b"b" * 10
        finally:
            self.closed.set()


def test_sync_source_under_asgi_streams_chunk_by_chunk(monkeypatch):
    gate = Gate()
    response = stream_response(gate.sync(), chunk_size=10, name="gate")

    async def main() -> list[bytes]:
        got = []
        async for chunk in response:
            got.append(chunk)
            # The first chunk is here while the source is still blocked.
            assert gate.go.is_set() or got == [b"a" * 10]
            gate.go.set()
        return got

    assert asyncio.run(main()) == [b"a" * 10, b"b" * 10]
    assert gate.closed.is_set()


def test_async_source_under_wsgi_streams_chunk_by_chunk():
    gate = Gate()
    response = stream_response(gate.asynchronous(), chunk_size=10, name="gate")
    it = iter(response)
    assert next(it) == b"a" * 10  # before the source was let go
    gate.go.set()
    assert list(it) == [b"b" * 10]
    assert gate.closed.is_set()


class Recorded(StreamRecorder):
    def __init__(self) -> None:
        self.events: list[object] = []

    def start(self) -> None:
        self.events.append("start")

    def chunk(self, nbytes: int) -> None:
        self.events.append(nbytes)

    def finish(self, outcome: Outcome) -> None:
        self.events.append(outcome)


@pytest.fixture
def recorded(monkeypatch):

    recorders: list[Recorded] = []

    def factory(stream):
        rec = Recorded()
        recorders.append(rec)
        return rec

    monkeypatch.setattr(extensions, "stream_recorder_factories", (factory,))
    return recorders


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.skipif(
    django.VERSION < (5, 0), reason="Django 4.2's ASGIHandler does not listen for disconnects"
)
def test_disconnect_under_asgi_closes_the_source_and_records_aborted(kind, recorded):
    result = asyncio.run(
        call_asgi(f"/stream/?kind={kind}&items=100000&delay=0.001&chunk=64", disconnect_after=2)
    )
    assert not result.ended
    (rec,) = recorded
    assert rec.events[0] == "start"
    assert rec.events[-1] is Outcome.ABORTED
    assert rec.events.count(Outcome.ABORTED) == 1


@pytest.mark.parametrize("kind", ["sync", "async", "path", "textio"])
def test_disconnect_under_wsgi_closes_the_source_and_records_aborted(kind, recorded, tmp_path):
    _, _, body = wsgi_iter(f"/stream/?kind={kind}&items=10000&chunk=64")
    it = iter(body)
    next(it)
    body.close()  # what a WSGI server does when the client is gone
    (rec,) = recorded
    assert rec.events[-1] is Outcome.ABORTED
    assert sum(e for e in rec.events if isinstance(e, int)) == 64


def test_close_without_iterating_finishes_once(recorded):
    response = stream_response(iter([b"x"]), name="never")
    response.close()
    response.close()
    assert recorded[0].events == ["start", Outcome.ABORTED]


class Rows:
    """An endless source that is an iterator object, not a generator: it has no
    finaliser of its own, so only the stream's close() can close it."""

    def __init__(self) -> None:
        self.closes = 0

    def __iter__(self) -> Rows:
        return self

    def __next__(self) -> bytes:
        return b"x"

    def close(self) -> None:
        self.closes += 1


def test_a_dropped_response_ends_its_stream_when_collected(recorded):
    # Django's ASGI handler drops the response unsent when the client went
    # away while the view ran. No driver generator exists yet whose finaliser
    # could end the stream: only StreamingResponse.__del__ does.
    import gc

    rows = Rows()
    response = stream_response(rows, name="dropped")
    del response
    gc.collect()
    assert rows.closes == 1
    assert recorded[0].events == ["start", Outcome.ABORTED]


def test_a_dropped_started_response_ends_its_stream_when_collected(recorded):
    # Started, then neither finished nor closed: the driver generator's own
    # finaliser ends the stream (closing the chunker, which closes the source).
    import gc

    rows = Rows()
    response = stream_response(rows, name="dropped", flush_interval=0)
    next(iter(response))
    del response
    gc.collect()
    assert rows.closes == 1
    assert recorded[0].events[-1] is Outcome.ABORTED
    assert recorded[0].events.count(Outcome.ABORTED) == 1


def test_a_closed_response_is_not_closed_again_when_collected(recorded):
    import gc

    response = stream_response(iter([b"x"]), name="closed")
    assert b"".join(response) == b"x"
    response.close()
    del response
    gc.collect()
    assert recorded[0].events == ["start", 1, Outcome.COMPLETED]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_completed_stream_records_every_chunk(kind, recorded):
    _, _, body = wsgi_iter(f"/stream/?kind={kind}&items=100&chunk=1000")
    assert b"".join(body) == ROW * 100
    body.close()
    assert recorded[0].events == ["start", 1000, 1000, 1000, 300, Outcome.COMPLETED]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_recorder_added_once_sending_started_hears_the_later_chunks(kind):
    # The sync driver once picked its per-chunk callback when it started: a
    # recorder added later (no other recorder listening) heard no chunk.
    _, _, body = wsgi_iter(f"/stream/?kind={kind}&items=100&chunk=1000")
    chunks = iter(body)
    first = next(chunks)  # the driver runs
    late = Recorded()
    body.add_recorder(late)
    assert first + b"".join(chunks) == ROW * 100
    body.close()
    assert late.events == [1000, 1000, 300, Outcome.COMPLETED]


@pytest.mark.parametrize("server_model", ["wsgi", "asgi"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_failing_source_is_logged_raised_and_recorded(kind, server_model, recorded, caplog):
    caplog.set_level(logging.ERROR, logger="django_streamer")
    path = f"/stream/?kind={kind}&items=100&fail_after=50&chunk=100&tag=exports"
    if server_model == "wsgi":
        _, _, body = wsgi_iter(path)
        got = []
        with pytest.raises(RuntimeError, match="failing after 50"):
            for chunk in body:
                got.append(chunk)
        body.close()
    else:
        result = asyncio.run(call_asgi(path))
        assert isinstance(result.error, RuntimeError)  # the server must abort the connection
        assert not result.ended
        got = result.bodies
    assert len(b"".join(got)) <= 50 * 33
    assert recorded[0].events[-1] is Outcome.FAILED
    assert "Stream 'exports' failed" in caplog.text


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (42, "must be an iterable, an async iterable, a file-like object or a path"),
        (None, "must be an iterable"),
        (b"whole body", "single bytes"),
        ("text", "single str"),
    ],
)
def test_bad_sources_fail_at_once_naming_the_stream(source, message):
    with pytest.raises(StreamSourceError, match=rf"stream 'report'.*{message}"):
        stream_response(source, name="report")


@pytest.mark.parametrize("size", [0, -1, True, 1.5, "64"])
def test_bad_chunk_size_is_rejected(size):
    with pytest.raises(ValueError, match=r"stream 'report': chunk_size must be a positive int"):
        stream_response([b"x"], name="report", chunk_size=size)


@pytest.mark.parametrize("interval", [-0.1, float("nan"), "1"])
def test_bad_flush_interval_is_rejected(interval):
    with pytest.raises(ValueError, match="flush_interval must be a number of seconds"):
        stream_response([b"x"], name="report", flush_interval=interval)


def test_bad_items_fail_mid_stream_with_the_stream_name():
    response = stream_response(iter([b"ok", None]), name="rows")
    with pytest.raises(StreamSourceError, match=r"stream 'rows'.*NoneType"):
        list(response)


def export_view():
    return stream_response([b"x"])


class ExportView:
    def get(self):
        return stream_response([b"x"])


def test_the_name_defaults_to_the_current_requests_view_and_is_unnamed_without_one():
    # The request comes explicitly (StreamerMiddleware, or serving()): no frames are read.
    response = export_view()
    assert response.stream.name == "unnamed"
    response.close()
    with serving(resolved(RequestFactory().get("/export/"), export_view)):
        response = export_view()
    assert response.stream.name == "tests.test_response.export_view"
    assert response.stream.path == "/export/"
    response.close()
    with serving(resolved(RequestFactory().get("/"), ExportView().get)):
        response = ExportView().get()
    assert response.stream.name == "tests.test_response.ExportView.get"
    response.close()


def test_filename_is_rfc6266_and_cannot_inject_headers():
    response = stream_response([b"x"], filename='r\u00e9sum\u00e9 "final"\r\nSet-Cookie: a=b.csv')
    value = response["Content-Disposition"]
    assert "\r" not in value and "\n" not in value
    assert value.startswith("attachment; filename=\"resume 'final'__Set-Cookie: a=b.csv\"")
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22__Set-Cookie%3A%20a%3Db.csv" in value
    assert "Set-Cookie" not in response.headers
    response.close()


def test_default_headers_and_the_nginx_setting():
    response = stream_response([b"x"])
    assert response["X-Accel-Buffering"] == "no"
    response.close()
    with override_settings(STREAMER_X_ACCEL_BUFFERING=False):
        response = stream_response([b"x"])
        assert "X-Accel-Buffering" not in response
        response.close()


@pytest.mark.parametrize("header", ["Connection", "transfer-encoding", "Keep-Alive", "Upgrade"])
def test_hop_by_hop_headers_are_refused(header):
    with pytest.raises(ValueError, match="hop-by-hop"):
        stream_response([b"x"], headers={header: "x"}, name="h")


def test_a_path_gets_its_type_length_and_is_closed(tmp_path: Path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"a,b\n" * 1000)
    response = stream_response(path)
    assert response["Content-Type"] == "text/csv"
    assert response["Content-Length"] == "4000"
    assert response.file_to_stream is not None  # sendfile under WSGI
    assert b"".join(response) == b"a,b\n" * 1000
    assert response.stream.file.closed


def test_a_missing_path_raises_before_a_response_exists(tmp_path):
    with pytest.raises(FileNotFoundError):
        stream_response(tmp_path / "missing.bin")


def test_file_likes_are_closed_at_the_end():
    text = io.StringIO("hello\n" * 10)
    response = stream_response(text, chunk_size=16)
    assert b"".join(response) == b"hello\n" * 10
    response.close()
    assert text.closed


def test_settings_are_read_on_access():
    with override_settings(STREAMER_CHUNK_SIZE=5, STREAMER_FLUSH_INTERVAL=0):
        response = stream_response([b"abcdefgh"])
        assert list(response) == [b"abcde", b"fgh"]


def test_str_uses_the_response_charset():
    response = stream_response(["caf\u00e9"], content_type="text/plain; charset=latin-1")
    assert b"".join(response) == "caf\u00e9".encode("latin-1")


def test_a_stream_can_be_consumed_only_once():
    response = stream_response([b"x"], name="once")
    list(response)
    with pytest.raises(RuntimeError, match="stream 'once' can be consumed only once"):
        list(response)


def test_it_is_a_streaming_http_response():
    response = stream_response([b"x"])
    assert isinstance(response, StreamingResponse)
    assert response.streaming
    response.close()


# -- system checks ----------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_kw", "check_id"),
    [
        ({"STREAMER_CHUNK_SIZE": 0}, "django_streamer.E001"),
        ({"STREAMER_CHUNK_SIZE": "big"}, "django_streamer.E001"),
        ({"STREAMER_FLUSH_INTERVAL": -1}, "django_streamer.E002"),
        ({"STREAMER_X_ACCEL_BUFFERING": "no"}, "django_streamer.E003"),
        (
            {"STREAMER_CHUNK_SIZE": 1 << 20, "ASGI_APPLICATION": "tests.asgi.application"},
            "django_streamer.W001",
        ),
        ({"STREAMER_FLUSH_INTERVAL": 30}, "django_streamer.W002"),
    ],
)
def test_each_check(settings_kw, check_id):
    with override_settings(**settings_kw):
        messages = check_settings()
    assert [m.id for m in messages] == [check_id]
    assert messages[0].hint


def test_good_settings_pass_the_checks():
    assert check_settings() == []


def test_manage_py_check_fails_on_an_error():
    with override_settings(STREAMER_CHUNK_SIZE=-5), pytest.raises(SystemCheckError, match="E001"):
        call_command("check")


# -- a recorder that raises in finish() ----------------------------------------


class BrokenFinish(StreamRecorder):
    def finish(self, outcome: Outcome) -> None:
        raise OSError("metrics store gone")


@pytest.mark.parametrize("server_model", ["wsgi", "asgi"])
@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_recorder_raising_in_finish_leaves_a_completed_stream_completed(
    kind, server_model, monkeypatch, caplog
):
    caplog.set_level(logging.ERROR, logger="django_streamer")
    recorders: list[Recorded] = []

    def factory(stream):
        recorders.append(Recorded())
        return recorders[-1]

    # The broken one first: the recorder after it must still hear the end.
    monkeypatch.setattr(
        extensions, "stream_recorder_factories", (lambda stream: BrokenFinish(), factory)
    )
    monkeypatch.setattr("django_streamer.core.recorder._logged", set())
    for _ in range(2):
        path = f"/stream/?kind={kind}&items=100&chunk=1000"
        if server_model == "wsgi":
            status, _, body = wsgi_iter(path)
            assert status.startswith("200")
            assert b"".join(body) == ROW * 100  # no error raised while iterating
            body.close()
        else:
            result = asyncio.run(call_asgi(path))
            assert result.status == 200 and result.ended
            assert b"".join(result.bodies) == ROW * 100
    assert [r.events[-1] for r in recorders] == [Outcome.COMPLETED, Outcome.COMPLETED]
    logged = [r for r in caplog.records if "BrokenFinish" in r.getMessage()]
    assert len(logged) == 1  # once per cause, not once per stream
    assert logged[0].exc_info is not None and "metrics store gone" in str(logged[0].exc_info[1])
    assert not [r for r in caplog.records if "failed" in r.getMessage()]
