"""The Django layer of SSE: headers, GZipMiddleware, Last-Event-ID, arguments, checks."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import django
import pytest
from django.core.checks import run_checks
from django.http import HttpRequest
from django.middleware.gzip import GZipMiddleware
from django.test import RequestFactory, override_settings
from django_http_compression.middleware import HttpCompressionMiddleware

import django_streamer.sse
from django_streamer import Event, last_event_id, sse_response
from django_streamer.checks import check_drain
from django_streamer.conf import conf
from django_streamer.context import serving
from django_streamer.core.sse.threads import ThreadBudget
from django_streamer.middleware import StreamerMiddleware
from django_streamer.response import StreamingResponse

from .conftest import resolved


def slow_events(release: threading.Event) -> Iterator[Event]:
    yield Event("first", id=1)
    release.wait(5)
    yield Event("second", id=2)


def gzip_request() -> HttpRequest:
    return RequestFactory().get("/", HTTP_ACCEPT_ENCODING="gzip, deflate")


def through(middleware: type, view: Callable[[HttpRequest], StreamingResponse]) -> Any:
    # As in a project: StreamerMiddleware last, so it is inside the compressing one.
    response = middleware(StreamerMiddleware(view))(gzip_request())
    assert isinstance(response, StreamingResponse)
    return response


def read_decoded(response: StreamingResponse, release: threading.Event) -> list[bytes]:
    """Each wire chunk decoded as it arrives: what a client can read at that moment."""
    decoder = zlib.decompressobj(wbits=31)  # gzip
    chunks = iter(response)
    started = time.monotonic()
    seen = [decoder.decompress(next(chunks)), decoder.decompress(next(chunks))]
    assert time.monotonic() - started < 1  # not held until "second" or the end
    release.set()
    seen.append(b"".join(decoder.decompress(chunk) for chunk in chunks))
    response.close()
    return seen


def test_no_content_encoding_unless_compressed():
    # RFC 9110 8.4.1: "identity" belongs in Accept-Encoding, never in Content-Encoding.
    response = sse_response(iter(["a"]))
    assert not response.has_header("Content-Encoding")
    response.close()


@pytest.mark.parametrize("middleware", [GZipMiddleware, HttpCompressionMiddleware])
def test_a_compressed_stream_passes_either_middleware_event_by_event(middleware: type):
    # With compress=True the stream sets its real Content-Encoding, each event
    # flushed; both middlewares leave a response with a Content-Encoding alone.
    release = threading.Event()

    def view(request: HttpRequest) -> StreamingResponse:
        return sse_response(slow_events(release), ping=None, compress=True)

    response = through(middleware, view)
    assert response["Content-Encoding"] == "gzip"
    assert read_decoded(response, release) == [
        b":\n\n",
        b"id: 1\ndata: first\n\n",
        b"id: 2\ndata: second\n\n",
    ]


def test_django_http_compression_flushes_an_uncompressed_stream_event_by_event():
    # It compresses text/event-stream itself, and flushes every chunk.
    release = threading.Event()

    def view(request: HttpRequest) -> StreamingResponse:
        return sse_response(slow_events(release), ping=None)

    response = through(HttpCompressionMiddleware, view)
    assert response["Content-Encoding"] == "gzip"
    assert b"".join(read_decoded(response, release)) == (
        b":\n\nid: 1\ndata: first\n\nid: 2\ndata: second\n\n"
    )


def test_gzip_middleware_holds_an_uncompressed_stream():
    # Why the README says to keep GZipMiddleware off SSE: it never flushes, so
    # the client reads nothing until gzip's buffer fills or the stream ends.
    release = threading.Event()
    release.set()

    def view(request: HttpRequest) -> StreamingResponse:
        return sse_response(slow_events(release), ping=None)

    response = through(GZipMiddleware, view)
    assert response["Content-Encoding"] == "gzip"
    decoder = zlib.decompressobj(wbits=31)
    decoded = [decoder.decompress(chunk) for chunk in response]
    response.close()
    if django.VERSION >= (6, 1):  # Django 6.1's GZipMiddleware flushes each chunk
        assert decoded[1] == b":\n\n"  # the opening comment is readable at once
    else:
        assert decoded[:-1] == [b""] * (len(decoded) - 1)  # nothing readable before the end


def test_headers():
    response = sse_response(iter(["a"]), headers={"X-Extra": "1"})
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    assert response["X-Extra"] == "1"
    assert b"".join(response) == b":\n\ndata: a\n\n"


def wsgi_header(value: str) -> str:
    # What a WSGI server (and Django's ASGI handler) makes of the UTF-8 bytes sent.
    return value.encode().decode("latin-1")


def test_last_event_id():
    factory = RequestFactory()
    assert last_event_id(factory.get("/", HTTP_LAST_EVENT_ID="41")) == "41"
    assert last_event_id(factory.get("/?lastEventId=7")) == "7"
    assert last_event_id(factory.get("/", HTTP_LAST_EVENT_ID="")) is None
    assert last_event_id(factory.get("/")) is None
    assert last_event_id(factory.get("/", HTTP_LAST_EVENT_ID=wsgi_header("café"))) == "café"
    assert last_event_id(factory.get("/?lastEventId=caf%C3%A9")) == "café"


def test_last_event_id_ignores_what_is_not_an_id():
    factory = RequestFactory()
    assert last_event_id(factory.get("/", HTTP_LAST_EVENT_ID="7" * 1024)) == "7" * 1024
    assert last_event_id(factory.get("/", HTTP_LAST_EVENT_ID="7" * 1025)) is None
    assert last_event_id(factory.get(f"/?lastEventId={'7' * 1025}")) is None
    assert last_event_id(factory.get("/", HTTP_LAST_EVENT_ID="\xff\xfe")) is None  # not UTF-8
    # A header there but unusable is not replaced by the query parameter.
    assert last_event_id(factory.get("/?lastEventId=3", HTTP_LAST_EVENT_ID="7" * 2000)) is None


def test_last_event_id_converted():
    factory = RequestFactory()
    assert last_event_id(factory.get("/", HTTP_LAST_EVENT_ID="41"), type=int, default=0) == 41
    for junk in ["junk", "4.5", "9" * 2000, ""]:
        request = factory.get("/", HTTP_LAST_EVENT_ID=junk)
        assert last_event_id(request, type=int, default=0) == 0
        assert last_event_id(request, type=int) is None
    assert last_event_id(factory.get("/"), default="start") == "start"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ping": 0}, "sse_response: ping must be a number of seconds > 0"),
        ({"retry": 1.5}, r"sse_response: retry \(milliseconds\) must be an int >= 0"),
        ({"max_duration": -1}, "sse_response: max_duration must be"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sse_response(iter([]), **kwargs)


@pytest.mark.parametrize("events", ["text", b"bytes", {"a": 1}, 3])
def test_events_must_be_an_iterable_of_events(events):
    with pytest.raises(TypeError, match="events must be a sync or async iterable"):
        sse_response(events)


def test_w008_the_old_name_of_the_drain_spread_still_works_with_a_warning(settings):
    del settings.STREAMER_DRAIN_SPREAD
    settings.STREAMER_DRAIN_TIMEOUT = 2
    assert conf.STREAMER_DRAIN_SPREAD == 2
    messages = check_drain()
    assert [m.id for m in messages] == ["django_streamer.W008"]
    assert "Rename it to STREAMER_DRAIN_SPREAD" in str(messages[0].hint)
    assert "django_streamer.W008" in [m.id for m in run_checks()]


def test_w008_the_new_name_wins_over_the_old_one(settings):
    settings.STREAMER_DRAIN_SPREAD = 1
    settings.STREAMER_DRAIN_TIMEOUT = 2
    assert conf.STREAMER_DRAIN_SPREAD == 1
    assert "STREAMER_DRAIN_TIMEOUT is ignored" in str(check_drain()[0].msg)


@override_settings(STREAMER_DRAIN_SPREAD="soon")
def test_e017_drain_spread_must_be_seconds():
    assert check_drain() == []  # the value check reports it, once
    assert "django_streamer.E017" in [m.id for m in run_checks()]


@override_settings(STREAMER_SSE_MAX_THREADS=0)
def test_e030_sse_max_threads_must_be_a_positive_int():
    assert "django_streamer.E030" in [m.id for m in run_checks()]


@pytest.fixture
def budget(monkeypatch: pytest.MonkeyPatch) -> ThreadBudget:
    # A budget of its own: other tests' source threads end when they end.
    fresh = ThreadBudget()
    monkeypatch.setattr(django_streamer.sse, "SOURCE_THREADS", fresh)
    return fresh


@override_settings(STREAMER_SSE_MAX_THREADS=1)
def test_a_sync_source_past_the_thread_budget_is_a_503(budget, caplog):
    release = threading.Event()
    held = sse_response(slow_events(release), ping=None)
    assert held.status_code == 200 and next(iter(held)) == b":\n\n"  # its thread runs
    refused = sse_response(iter(["a"]))
    assert refused.status_code == 503 and refused["Retry-After"] == "5"
    assert b"".join(refused) == b"Too many live event streams on this server; try again later.\n"
    assert "STREAMER_SSE_MAX_THREADS" in caplog.text
    # An async source needs no thread.
    assert sse_response(aiter_of(["a"])).status_code == 200
    held.close()
    assert budget.held == 1  # until the source yields
    release.set()  # it yields, sees the close, its thread ends
    deadline = time.monotonic() + 5
    while budget.held and time.monotonic() < deadline:
        time.sleep(0.02)
    served = sse_response(iter(["a"]))
    assert served.status_code == 200
    assert b"".join(served) == b":\n\ndata: a\n\n"


@override_settings(STREAMER_SSE_MAX_THREADS=1)
def test_an_unstarted_stream_gives_its_thread_back_at_close(budget):
    for _ in range(3):
        response = sse_response(iter(["a"]))
        assert response.status_code == 200
        response.close()
    assert budget.held == 0
    with pytest.raises(ValueError, match="hop-by-hop"):
        sse_response(iter(["a"]), headers={"Connection": "close"})
    assert budget.held == 0


async def aiter_of(items: list[str]) -> AsyncIterator[str]:
    for item in items:
        yield item


def test_e017_names_the_old_setting_when_that_is_the_one_set(settings):
    del settings.STREAMER_DRAIN_SPREAD
    settings.STREAMER_DRAIN_TIMEOUT = "soon"
    assert "setting STREAMER_DRAIN_TIMEOUT" in str(conf.problem("STREAMER_DRAIN_SPREAD"))


def test_the_default_drain_spread_gives_no_warning():
    assert check_drain() == []


def feed(request: HttpRequest) -> StreamingResponse:
    return sse_response(iter(["a"]))


def test_the_stream_is_named_after_the_current_requests_view_with_its_path():
    with serving(resolved(RequestFactory().get("/live/feed/"), feed)) as request:
        response = feed(request)
    assert response.stream.name == "tests.test_sse.feed"
    assert response.stream.path == "/live/feed/"
    response.close()


def _executor_threads() -> set[int]:
    return {
        t.ident or 0
        for t in threading.enumerate()
        if t.name.startswith("ThreadPoolExecutor") and t.is_alive()
    }


def test_idle_async_stream_holds_no_request_thread() -> None:
    # Django's ASGI handler starts a thread per request for sync code (the
    # sync view and request_started receivers run there) and keeps it until
    # the response closes. An idle SSE stream lets it go once the body starts.
    import asyncio

    from tests.conftest import call_asgi

    before = _executor_threads()
    during: list[set[int]] = []

    def on_body(body: bytes) -> None:
        if body.startswith(b":") and len(during) < 3:
            during.append(_executor_threads() - before)

    result = asyncio.run(
        call_asgi("/sse/idle/?kind=async&ping=0.3&tag=thread", disconnect_after=3, on_body=on_body)
    )
    assert result.status == 200
    if django.VERSION >= (5, 0):
        assert result.error is None
    else:  # Django 4.2's ASGIHandler does not listen for disconnects: the harness ends it
        assert isinstance(result.error, asyncio.TimeoutError)
    # The opening comment goes out while the thread is ending; by the pings it is gone.
    assert during[1:] == [set(), set()], during
