"""The Django layer of SSE: headers, GZipMiddleware, Last-Event-ID, arguments, checks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import django
import pytest
from django.core.checks import run_checks
from django.http import HttpRequest
from django.middleware.gzip import GZipMiddleware
from django.test import RequestFactory, override_settings

from django_streamer import Event, last_event_id, sse_response, stream_response
from django_streamer.checks import check_drain
from django_streamer.conf import conf
from django_streamer.response import StreamingResponse


def slow_events(release: threading.Event) -> Iterator[Event]:
    yield Event("first", id=1)
    release.wait(5)
    yield Event("second", id=2)


def gzip_request() -> HttpRequest:
    return RequestFactory().get("/", HTTP_ACCEPT_ENCODING="gzip, deflate")


def through_gzip(response: StreamingResponse) -> StreamingResponse:
    result = GZipMiddleware(lambda request: response)(gzip_request())
    assert isinstance(result, StreamingResponse)
    return result


def test_gzip_middleware_leaves_events_unbuffered():
    release = threading.Event()
    response = through_gzip(sse_response(slow_events(release), ping=None))
    assert response["Content-Encoding"] == "identity"
    chunks = iter(response)
    started = time.monotonic()
    assert next(chunks) == b":\n\n"
    assert next(chunks) == b"id: 1\ndata: first\n\n"
    assert time.monotonic() - started < 1  # not held until "second" or the end
    release.set()
    assert next(chunks) == b"id: 2\ndata: second\n\n"
    response.close()


def test_gzip_middleware_would_compress_a_plain_stream():
    # The control: without the opt-out the middleware wraps the stream.
    response = through_gzip(stream_response(iter([b"x" * 300])))
    assert response["Content-Encoding"] == "gzip"
    response.close()


def test_headers():
    response = sse_response(iter(["a"]), headers={"X-Extra": "1"})
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    assert response["X-Extra"] == "1"
    assert b"".join(response) == b":\n\ndata: a\n\n"


def test_last_event_id():
    factory = RequestFactory()
    assert last_event_id(factory.get("/", HTTP_LAST_EVENT_ID="41")) == "41"
    assert last_event_id(factory.get("/?lastEventId=7")) == "7"
    assert last_event_id(factory.get("/", HTTP_LAST_EVENT_ID="")) is None
    assert last_event_id(factory.get("/")) is None


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


def test_e017_names_the_old_setting_when_that_is_the_one_set(settings):
    del settings.STREAMER_DRAIN_SPREAD
    settings.STREAMER_DRAIN_TIMEOUT = "soon"
    assert "setting STREAMER_DRAIN_TIMEOUT" in str(conf.problem("STREAMER_DRAIN_SPREAD"))


def test_the_default_drain_spread_gives_no_warning():
    assert check_drain() == []


def feed(request: HttpRequest) -> StreamingResponse:
    return sse_response(iter(["a"]))


def test_the_stream_is_named_after_the_calling_view_with_its_path():
    response = feed(RequestFactory().get("/live/feed/"))
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
