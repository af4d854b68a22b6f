"""Views the compression server tests stream through (routed under ``z/``).

``kind`` picks a sync or an async source; ``compress`` is ``1``, ``0`` or
absent (None: the setting, off in tests); ``ae`` stands in for the client's
``Accept-Encoding`` (a browser's ``fetch()`` may not set it).
"""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import path
from django.views.decorators.gzip import gzip_page

from django_streamer import sse_response, stream_response

ROWS = 30_000
DATA = b"".join(b"%d,row,%d\n" % (i, i * 31) for i in range(ROWS))
PIECE = 1000  # bytes per item the sources yield


class Boom(Exception):
    pass


def _pieces(data: bytes) -> list[bytes]:
    return [data[i : i + PIECE] for i in range(0, len(data), PIECE)]


def _options(request: HttpRequest) -> dict[str, Any]:
    if "ae" in request.GET:
        request.META["HTTP_ACCEPT_ENCODING"] = request.GET["ae"]
    value = request.GET.get("compress")
    return {"compress": None if value is None else value == "1", "content_type": "text/csv"}


def _source(
    request: HttpRequest,
    pieces: list[bytes],
    *,
    gap: float = 0,
    fail: bool = False,
    pause_at: int = -1,
) -> Any:
    def pause(i: int) -> float:
        return 0.3 if i == pause_at else gap

    # Each piece is produced, then yielded, as a ticker would.
    def sync() -> Iterator[bytes]:
        for i, piece in enumerate(pieces):
            time.sleep(pause(i))
            yield piece
        if fail:
            raise Boom("the source failed mid-stream")

    async def asyn() -> AsyncIterator[bytes]:
        for i, piece in enumerate(pieces):
            await asyncio.sleep(pause(i))
            yield piece
        if fail:
            raise Boom("the source failed mid-stream")

    return asyn() if request.GET.get("kind") == "async" else sync()


def data(request: HttpRequest) -> HttpResponseBase:
    return stream_response(_source(request, _pieces(DATA)), **_options(request))


def small(request: HttpRequest) -> HttpResponseBase:
    """The whole body is the first chunk: Content-Length, compressed too."""
    return stream_response(_source(request, _pieces(DATA[:5000])), **_options(request))


def ticker(request: HttpRequest) -> HttpResponseBase:
    ticks = [b"tick %d\n" % i for i in range(int(request.GET.get("n", "5")))]
    gap = float(request.GET.get("gap", "0.3"))
    return stream_response(
        _source(request, ticks, gap=gap), flush_interval=0.05, **_options(request)
    )


# Text that compresses only about 2:1, so compressed bytes are on the wire
# well before the failure (repetitive rows would all still sit in the encoder).
NOISE = random.Random(0).randbytes(200_000).hex().encode()


def fail(request: HttpRequest) -> HttpResponseBase:
    """400 KB of hex digits, a pause (``flush_interval`` forces a flush), then the source raises.

    Without the pause brotli would still hold every byte when the source fails.
    """
    source = _source(request, _pieces(NOISE), fail=True, pause_at=200)
    return stream_response(source, chunk_size=4096, **_options(request))


def partial(request: HttpRequest) -> HttpResponseBase:
    headers = {"Content-Range": f"bytes 0-999/{len(DATA)}"}
    return stream_response(
        _source(request, [DATA[:1000]]), status=206, headers=headers, **_options(request)
    )


def encoded(request: HttpRequest) -> HttpResponseBase:
    """A body that is gzip already, and says so."""
    body = _pieces(gzip.compress(DATA))
    headers = {"Content-Encoding": "gzip"}
    return stream_response(_source(request, body), headers=headers, **_options(request))


_DIR = Path(tempfile.mkdtemp(prefix="streamer-z-"))
(_DIR / "rows.csv").write_bytes(DATA)
(_DIR / "noise.png").write_bytes(os.urandom(100_000))


def file(request: HttpRequest, name: str) -> HttpResponseBase:
    options = _options(request)
    del options["content_type"]  # guessed from the name
    return stream_response(_DIR / name, **options)


def events(request: HttpRequest) -> HttpResponseBase:
    frames = [f"event {i}" for i in range(int(request.GET.get("n", "4")))]
    gap = float(request.GET.get("gap", "0.3"))
    options = _options(request)
    del options["content_type"]

    def source() -> Iterator[str]:
        for frame in frames:
            time.sleep(gap)
            yield frame

    return sse_response(source(), ping=None, **options)


urlpatterns = [
    path("data", data),
    path("small", small),
    path("ticker", ticker),
    path("fail", fail),
    path("partial", partial),
    path("encoded", encoded),
    path("file/<str:name>", file),
    path("events", events),
    # Django's GZipMiddleware, as a decorator: the middleware itself, on these views.
    path("gzipmw/data", gzip_page(data)),
    path("gzipmw/ticker", gzip_page(ticker)),
]
