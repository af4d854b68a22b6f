"""Views the tests stream through, in-process and under a real gunicorn.

Query parameters pick the source: ``kind`` (sync, async, bytesio, textio,
path, strs), ``items``, ``size``, ``delay`` (seconds between items),
``fail_after`` (raise after that many items), ``chunk`` and ``flush``.
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase, StreamingHttpResponse
from django.views import View

from django_streamer import limit_concurrency, stream_response
from django_streamer.core.recorder import Outcome, StreamRecorder
from django_streamer.extensions import extensions

EVENTS = os.environ.get("STREAMER_TEST_EVENTS")


def event(line: str) -> None:
    if EVENTS:
        with open(EVENTS, "a") as f:
            f.write(f"{os.getpid()} {line}\n")


class FileRecorder(StreamRecorder):
    """Writes each stream's outcome to a file the test process reads."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bytes = 0

    def chunk(self, nbytes: int) -> None:
        self.bytes += nbytes

    def finish(self, outcome: Outcome) -> None:
        event(f"finish {self.name} {outcome} {self.bytes}")


if EVENTS:
    extensions.add_stream_recorder(lambda stream: FileRecorder(stream.name))


class Boom(RuntimeError):
    pass


def _params(request: HttpRequest) -> dict[str, float]:
    get = request.GET
    return {
        "items": int(get.get("items", 100)),
        "size": int(get.get("size", 33)),
        "delay": float(get.get("delay", 0)),
        "fail_after": int(get.get("fail_after", -1)),
    }


def sync_source(items: int, size: int, delay: float, fail_after: int, tag: str) -> Iterator[bytes]:
    row = b"x" * (size - 1) + b"\n"
    try:
        for i in range(items):
            if i == fail_after:
                raise Boom(f"failing after {i} items")
            if delay:
                time.sleep(delay)
            yield row
    finally:
        event(f"closed {tag}")


async def async_source(
    items: int, size: int, delay: float, fail_after: int, tag: str
) -> AsyncIterator[bytes]:
    row = b"x" * (size - 1) + b"\n"
    try:
        for i in range(items):
            if i == fail_after:
                raise Boom(f"failing after {i} items")
            if delay:
                await asyncio.sleep(delay)
            yield row
    finally:
        event(f"closed {tag}")


def _file_path(items: int, size: int) -> Path:
    path = Path(tempfile.gettempdir()) / f"streamer-test-{items}x{size}.bin"
    if not path.exists() or path.stat().st_size != items * size:
        data = (b"x" * (size - 1) + b"\n") * items
        tmp = path.with_suffix(f".{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def stream_view(request: HttpRequest) -> HttpResponseBase:
    p = _params(request)
    kind = request.GET.get("kind", "sync")
    tag = request.GET.get("tag", kind)
    event(f"serving {tag}")
    args = (int(p["items"]), int(p["size"]), p["delay"], int(p["fail_after"]), tag)
    options: dict[str, float] = {}
    if "chunk" in request.GET:
        options["chunk_size"] = int(request.GET["chunk"])
    if "flush" in request.GET:
        options["flush_interval"] = float(request.GET["flush"])
    source: object
    if kind == "sync":
        source = sync_source(*args)
    elif kind == "async":
        source = async_source(*args)
    elif kind == "strs":
        source = (row.decode() for row in sync_source(*args))
    elif kind == "bytesio":
        source = io.BytesIO(b"".join(sync_source(*args)))
    elif kind == "textio":
        source = io.StringIO(b"".join(sync_source(*args)).decode())
    elif kind == "path":
        source = _file_path(int(p["items"]), int(p["size"]))
    elif kind == "list":  # a plain list: [] for items=0
        source = list(sync_source(*args))
    elif kind == "iter":  # iter([]) for items=0
        source = iter(list(sync_source(*args)))
    elif kind == "multibyte":  # slow str items of 3-byte characters
        source = (("\u20ac" * (int(p["size"]) // 3)) for _ in sync_source(*args))
    elif kind in ("int", "none"):  # a bad first item
        source = iter([1 if kind == "int" else None, b"never"])
    else:
        return HttpResponse(f"unknown kind {kind}", status=400)
    return stream_response(source, name=tag, **options)  # type: ignore[arg-type]


def plain_view(request: HttpRequest) -> HttpResponseBase:
    """Plain Django, for comparison."""
    p = _params(request)
    return StreamingHttpResponse(
        sync_source(int(p["items"]), int(p["size"]), p["delay"], int(p["fail_after"]), "plain")
    )


@limit_concurrency(2, scope="host", name="e2e-reject")
def limited_reject(request: HttpRequest) -> HttpResponseBase:
    return stream_view(request)


@limit_concurrency(2, scope="host", name="e2e-wait", on_limit="wait", timeout=30)
def limited_wait(request: HttpRequest) -> HttpResponseBase:
    return stream_view(request)


@limit_concurrency(8, scope="host", name="e2e-abort")
def limited_abort(request: HttpRequest) -> HttpResponseBase:
    return stream_view(request)


@limit_concurrency(1, key="ip", scope="host", name="e2e-ip")
def limited_ip(request: HttpRequest) -> HttpResponseBase:
    return stream_view(request)


@limit_concurrency(1, scope="host", name="e2e-kill")
def limited_kill(request: HttpRequest) -> HttpResponseBase:
    return stream_view(request)


def _make_export(request: HttpRequest) -> HttpResponseBase:
    # A helper a view calls: it must not become the stream's name.
    return stream_response([b"a,b\n"])


def export_view(request: HttpRequest) -> HttpResponseBase:
    return _make_export(request)


class ExportView(View):
    def get(self, request: HttpRequest) -> HttpResponseBase:
        return stream_response([b"a,b\n"])
