"""Views the SSE tests stream through, in-process and under real servers.

``kind`` picks a sync or an async source; ``ping``, ``retry`` and
``max_duration`` go to ``sse_response``; ``tag`` names the stream (its
outcome lands in the events file, see ``tests.views``).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import path

from django_streamer import (
    IDLE,
    Event,
    last_event_id,
    limit_concurrency,
    sse_response,
    stream_response,
)
from django_streamer.core.stream import Stream
from django_streamer.extensions import extensions

from .views import EVENTS, event


def _log_name_and_path(stream: Stream) -> None:
    # What every recorder (the active-streams table too) reads when it is made.
    if stream.name.startswith("tests.sse_views."):
        event(f"recorded {stream.name} {stream.path}")


if EVENTS:
    extensions.add_stream_recorder(_log_name_and_path)


def _options(request: HttpRequest) -> dict[str, Any]:
    get = request.GET
    options: dict[str, Any] = {"name": get.get("tag", "sse")}
    if "ping" in get:
        options["ping"] = float(get["ping"])
    if "retry" in get:
        options["retry"] = int(get["retry"])
    if "max_duration" in get:
        options["max_duration"] = float(get["max_duration"])
    return options


FRAMES: list[object] = [
    Event("line one\nline two", id=1, event="multi"),
    "plain",
    {"k": [1, 2]},
    Event("x", id="2", retry=500),
]


def frames(request: HttpRequest) -> HttpResponseBase:
    if request.GET.get("kind") == "async":

        async def agen() -> AsyncIterator[object]:
            for item in FRAMES:
                yield item

        return sse_response(agen(), **_options(request))
    return sse_response(iter(FRAMES), **_options(request))


def idle(request: HttpRequest) -> HttpResponseBase:
    """A source that sends nothing: waits in short steps, as a queue consumer does."""
    tag = request.GET.get("tag", "sse")

    def blocking() -> Iterator[object]:
        try:
            while not threading.Event().wait(0.1):
                yield IDLE
            yield "never"
        finally:
            event(f"source-closed {tag}")

    async def silent() -> AsyncIterator[object]:
        try:
            await asyncio.sleep(3600)
            yield "never"
        finally:
            event(f"source-closed {tag}")

    source = silent() if request.GET.get("kind") == "async" else blocking()
    return sse_response(source, **_options(request))


def ticks(request: HttpRequest) -> HttpResponseBase:
    """Numbered events every ``interval`` seconds, resuming after ``Last-Event-ID``."""
    interval = float(request.GET.get("interval", 0.2))
    start = last_event_id(request, type=int, default=0) + 1
    event(f"serving {request.GET.get('tag', 'sse')}")

    def sync_ticks() -> Iterator[Event]:
        n = start
        while True:
            threading.Event().wait(interval)
            yield Event(str(n), id=n)
            n += 1

    async def async_ticks() -> AsyncIterator[Event]:
        n = start
        while True:
            await asyncio.sleep(interval)
            yield Event(str(n), id=n)
            n += 1

    source = async_ticks() if request.GET.get("kind") == "async" else sync_ticks()
    return sse_response(source, **_options(request))


PAGE = """<!doctype html><title>sse</title><script>
window.received = []; window.opens = 0;
const source = new EventSource("/sse/ticks/?interval=0.1&tag=browser");
source.onopen = () => { window.opens += 1; };
source.onmessage = (e) => { window.received.push(Number(e.data)); };
</script>"""


def resume(request: HttpRequest) -> HttpResponseBase:
    """One event: the ``Last-Event-ID`` as ``last_event_id()`` reads it, with ``?id=``."""
    said = Event(repr(last_event_id(request)), id=request.GET.get("id"))
    return sse_response(iter([said]), **_options(request))


RESUME_PAGE = """<!doctype html><title>sse</title><script>
window.received = [];
const source = new EventSource("/sse/resume/?retry=100&id=" + encodeURIComponent("café ☃"));
source.onmessage = (e) => { window.received.push(e.data); };
</script>"""


def resume_page(request: HttpRequest) -> HttpResponseBase:
    return HttpResponse(RESUME_PAGE)


# Relayed items, as json.loads gives them: a lone surrogate, NaN, good ones between.
RELAYED = '["ok 1", "bad \\ud800 text", {"n": NaN, "m": [Infinity]}, "ok 2"]'


def relay(request: HttpRequest) -> HttpResponseBase:
    items = json.loads(RELAYED)
    if request.GET.get("kind") == "async":

        async def agen() -> AsyncIterator[object]:
            for item in items:
                yield item

        return sse_response(agen(), **_options(request))
    return sse_response(iter(items), **_options(request))


def stuck(request: HttpRequest) -> HttpResponseBase:
    """A sync source blocked in C, without a timeout, until the server exits."""

    def blocked() -> Iterator[object]:
        yield "started"
        threading.Event().wait()
        yield "never"

    return sse_response(blocked(), **_options(request))


def unnamed(request: HttpRequest) -> HttpResponseBase:
    """No ``name``: the stream is named after this view."""
    return sse_response(iter(["a"]))


@limit_concurrency(1, scope="host", name="t-slow-view")
def slow_view(request: HttpRequest) -> HttpResponseBase:
    """A view that takes ``view_delay`` seconds before it returns its stream."""
    tag = request.GET.get("tag", "slow")
    event(f"serving {tag}")
    threading.Event().wait(float(request.GET.get("view_delay", 0.3)))
    return stream_response(iter([b"row\n"]), name=tag)


def page(request: HttpRequest) -> HttpResponseBase:
    return HttpResponse(PAGE)


urlpatterns = [
    path("page/", page),
    path("frames/", frames),
    path("idle/", idle),
    path("ticks/", ticks),
    path("unnamed/", unnamed),
    path("resume/", resume),
    path("resume-page/", resume_page),
    path("relay/", relay),
    path("stuck/", stuck),
    path("slow-view/", slow_view),
]
