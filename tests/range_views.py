"""Views the range tests fetch files through (routed under ``r/``).

``p`` is the file's path (the test made it); ``type`` its content type;
``compress`` is ``1`` or absent; ``skip`` hands a file object read from that
offset instead of the path; ``name`` names the stream (its outcome event).
"""

from __future__ import annotations

from pathlib import Path

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.urls import path
from django.utils.html import escape

from django_streamer import stream_response

# Headers a view sets itself: they must survive on 206, 304 and 416.
VIEW_HEADERS = {"Access-Control-Allow-Origin": "*", "Cache-Control": "max-age=60"}


def _source(request: HttpRequest) -> object:
    file = Path(request.GET["p"])
    skip = request.GET.get("skip")
    if skip is None:
        return file
    handle = open(file, "rb")  # noqa: SIM115 - the stream closes it
    handle.seek(int(skip))
    return handle


def file_view(request: HttpRequest) -> HttpResponseBase:
    return stream_response(
        _source(request),
        name=request.GET.get("name", "ranges.file"),
        content_type=request.GET.get("type"),
        headers=VIEW_HEADERS,
        compress=True if request.GET.get("compress") else None,
    )


def whole_view(request: HttpRequest) -> HttpResponseBase:
    return stream_response(Path(request.GET["p"]), name="ranges.whole", ranges=False)


def etag_view(request: HttpRequest) -> HttpResponseBase:
    """The view's own validators win over the file's."""
    return stream_response(
        Path(request.GET["p"]),
        name="ranges.etag",
        headers={"ETag": '"v7"', "Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT"},
    )


def audio_page(request: HttpRequest) -> HttpResponseBase:
    """An ``<audio>`` element over ``file/`` for the Chromium seek test."""
    source = escape(f"/r/file/?p={request.GET['p']}")
    return HttpResponse(f'<!doctype html><audio id="a" preload="metadata" src="{source}"></audio>')


urlpatterns = [
    path("audio/", audio_page),
    path("file/", file_view),
    path("whole/", whole_view),
    path("etag/", etag_view),
]
