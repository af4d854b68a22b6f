"""Views the stream-cap server tests use: a held stream whose start is logged."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import path

from django_streamer import stream_response

from .views import event


def held(request: HttpRequest) -> HttpResponseBase:
    """A stream that logs ``started <tag>`` when its source runs, then trickles for 30 s."""
    tag = request.GET.get("tag", "held")

    def source() -> Iterator[bytes]:
        event(f"started {tag}")
        for _ in range(300):
            yield b"."
            threading.Event().wait(0.1)

    return stream_response(source(), name="cap-held", flush_interval=0)


def page(request: HttpRequest) -> HttpResponseBase:
    """A normal, non-streaming page."""
    return HttpResponse(b"page\n", content_type="text/plain")


urlpatterns = [path("held/", held), path("page/", page)]
