"""The drain in-process: limited views refuse, streams a drain ended are ``drained``.

Under real servers: ``tests/test_drain_server.py``.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from django_streamer import Rejection, draining, limit_concurrency, sse_response, stream_response
from django_streamer.context import serving
from django_streamer.core.drain import Drain, process_drain
from django_streamer.core.recorder import Outcome, StreamRecorder
from django_streamer.decorators import LimiterRecorder
from django_streamer.extensions import extensions
from django_streamer.response import StreamingResponse

from .conftest import resolved

rf = RequestFactory()


@pytest.fixture
def drain(monkeypatch: pytest.MonkeyPatch) -> Drain:
    """The process's drain, not started; put back as it was afterwards."""
    monkeypatch.setattr(process_drain, "started", False)
    monkeypatch.setattr(process_drain, "refusing", False)
    return process_drain


class Outcomes(StreamRecorder):
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def finish(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


def unique() -> str:
    return "drain-" + uuid.uuid4().hex[:8]


# -- limited views refuse while draining -----------------------------------


def test_a_limited_view_refuses_with_503_and_retry_after_while_draining(drain, monkeypatch):
    rejected: list[Rejection] = []

    class Spy(LimiterRecorder):
        def rejected(self, pool, rejection):
            rejected.append(rejection)

    monkeypatch.setattr(extensions, "limiter_recorders", (Spy(),))
    calls: list[str] = []

    @limit_concurrency(5, name=unique(), status=429, retry_after=7)
    def view(request: HttpRequest) -> HttpResponse:
        calls.append("called")
        return HttpResponse(b"x")

    assert view(rf.get("/")).status_code == 200
    drain.start()
    refused = view(rf.get("/"))
    # 503 although the view says 429 for "too many": a drain is a server condition.
    assert (refused.status_code, refused["Retry-After"]) == (503, "7")
    assert b"restarting" in refused.content
    assert calls == ["called"]  # the view never ran
    assert [(r.status, r.draining) for r in rejected] == [(503, True)]


def test_an_async_limited_view_refuses_while_draining(drain):
    @limit_concurrency(5, name=unique())
    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"x")

    drain.start()
    refused = asyncio.run(view(rf.get("/")))
    assert refused.status_code == 503 and refused["Retry-After"] == "5"


def test_retry_after_is_sent_even_when_rejections_send_none(drain, settings):
    settings.STREAMER_RETRY_AFTER = None

    @limit_concurrency(5, name=unique())
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"x")

    drain.start()
    assert view(rf.get("/"))["Retry-After"] == "1"


def test_a_rejection_handler_is_told_it_is_a_drain(drain):
    def handler(request: HttpRequest, rejection: Rejection) -> HttpResponse:
        return HttpResponse(f"draining={rejection.draining}", status=rejection.status)

    @limit_concurrency(5, name=unique(), response=handler)
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"x")

    drain.start()
    refused = view(rf.get("/"))
    assert (refused.status_code, refused.content) == (503, b"draining=True")


def test_a_request_the_key_exempts_is_served_while_draining(drain):
    @limit_concurrency(5, name=unique(), key=lambda request: None)
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"x")

    drain.start()
    assert view(rf.get("/")).status_code == 200


def test_a_recycle_drain_does_not_refuse_but_a_later_signal_does(drain):
    # A worker recycling itself (max_requests) still serves the request that
    # tripped the limit: its drain ends streams but refuses nothing.
    @limit_concurrency(5, name=unique())
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"x")

    drain.start(refuse=False)
    assert draining() and view(rf.get("/")).status_code == 200
    drain.start()
    assert view(rf.get("/")).status_code == 503


# -- the outcome of a stream a drain ended ----------------------------------


def ticks() -> Iterator[str]:
    n = 0
    while True:
        threading.Event().wait(0.02)
        n += 1
        yield str(n)


async def aticks() -> AsyncIterator[str]:
    n = 0
    while True:
        await asyncio.sleep(0.02)
        n += 1
        yield str(n)


def feed(request: HttpRequest) -> StreamingResponse:
    return sse_response(ticks(), ping=None)


def afeed(request: HttpRequest) -> StreamingResponse:
    return sse_response(aticks(), ping=None)


def drain_soon(drain: Drain) -> threading.Timer:
    timer = threading.Timer(0.15, drain.start)
    timer.start()
    return timer


def test_a_sync_sse_stream_a_drain_ends_is_drained(drain, settings):
    settings.STREAMER_DRAIN_SPREAD = 0
    response = feed(rf.get("/"))
    outcomes = Outcomes()
    response.add_recorder(outcomes)
    drain_soon(drain)
    body = b"".join(response).decode()
    response.close()
    assert body.endswith(": draining\nretry: 1000\n\n"), body
    assert outcomes.outcomes == [Outcome.DRAINED]


def test_an_async_sse_stream_a_drain_ends_is_drained(drain, settings):
    settings.STREAMER_DRAIN_SPREAD = 0
    response = afeed(rf.get("/"))
    outcomes = Outcomes()
    response.add_recorder(outcomes)

    async def consume() -> str:
        parts = [part async for part in response]
        return b"".join(parts).decode()

    drain_soon(drain)
    body = asyncio.run(consume())
    assert body.endswith(": draining\nretry: 1000\n\n"), body
    assert outcomes.outcomes == [Outcome.DRAINED]


def test_max_duration_still_ends_as_completed(drain):
    response = sse_response(ticks(), ping=None, max_duration=0.1)
    outcomes = Outcomes()
    response.add_recorder(outcomes)
    assert b"".join(response).endswith(b": max_duration\nretry: 1000\n\n")
    assert outcomes.outcomes == [Outcome.COMPLETED]


class UntilDrained:
    """A source of another kind that asks draining() and says why it stopped."""

    def __init__(self) -> None:
        self.outcome: Outcome | None = None

    def __iter__(self) -> UntilDrained:
        return self

    def __next__(self) -> bytes:
        threading.Event().wait(0.02)
        if draining():
            self.outcome = Outcome.DRAINED
            raise StopIteration
        return b"row\n"


def test_any_source_can_end_as_drained(drain):
    response = stream_response(UntilDrained(), flush_interval=0)
    outcomes = Outcomes()
    response.add_recorder(outcomes)
    drain_soon(drain)
    assert b"".join(response).startswith(b"row\n")
    assert outcomes.outcomes == [Outcome.DRAINED]


def test_a_finite_stream_that_completes_during_a_drain_is_completed(drain):
    drain.start()
    response = stream_response(iter([b"a", b"b"]))
    outcomes = Outcomes()
    response.add_recorder(outcomes)
    assert b"".join(response) == b"ab"
    assert outcomes.outcomes == [Outcome.COMPLETED]


# -- SSE streams are named after the view and carry its path ------------------


def test_an_sse_stream_is_named_after_the_view_and_recorders_see_the_path(monkeypatch):
    seen: list[tuple[str, str]] = []

    def factory(stream: object) -> None:
        seen.append((stream.name, stream.path))  # type: ignore[attr-defined]

    monkeypatch.setattr(extensions, "stream_recorder_factories", (factory,))
    with serving(resolved(rf.get("/live/feed/"), feed)) as request:
        feed(request).close()
    # What a recorder (the active-streams table) reads when it is made.
    assert seen == [("tests.test_drain.feed", "/live/feed/")]
