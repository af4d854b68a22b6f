"""The soak site's views: one per kind of traffic, each with a fixed stream name.

Views named ``*.abort`` serve clients that go away mid-body, so that the
bytes of the other names can be compared exactly with what clients read.
Bodies are deterministic: ``csv_body(n)`` is what ``/csv?rows=n`` sends.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from django.http import HttpRequest, HttpResponse
from django.urls import include, path

from django_streamer import (
    limit_concurrency,
    sse_response,
    stream_csv,
    stream_jsonl,
    stream_response,
    stream_zip,
)

LIMITS = {"process": 2, "host": 3, "cluster": 3}


def csv_rows(n: int) -> list[tuple[int, str, int]]:
    return [(i, f"name-{i}", i * 3) for i in range(n)]


def csv_body(n: int) -> bytes:
    return b"".join(f"{i},{s},{t}\r\n".encode() for i, s, t in csv_rows(n))


def _name(request: HttpRequest, base: str) -> str:
    return f"{base}.abort" if request.GET.get("abort") else base


def _int(request: HttpRequest, key: str, default: int) -> int:
    return max(0, min(int(request.GET.get(key, default)), 1_000_000))


def export_csv(request: HttpRequest) -> HttpResponse:
    return stream_csv(csv_rows(_int(request, "rows", 1000)), name=_name(request, "soak.csv"))


def export_jsonl(request: HttpRequest) -> HttpResponse:
    n = _int(request, "rows", 1000)
    rows = ({"id": i, "name": f"name-{i}", "ok": i % 2 == 0} for i in range(n))
    return stream_jsonl(rows, name=_name(request, "soak.jsonl"))


def export_zip(request: HttpRequest) -> HttpResponse:
    n = _int(request, "rows", 1000)
    members = [("rows.csv", csv_body(n)), ("file.bin", Path(os.environ["SOAK_FILE"]))]
    return stream_zip(members, filename="soak.zip", name=_name(request, "soak.zip"))


def download(request: HttpRequest) -> HttpResponse:
    return stream_response(Path(os.environ["SOAK_FILE"]), name=_name(request, "soak.file"))


def small(request: HttpRequest) -> HttpResponse:
    return stream_response([b"ok\n"], name="soak.small")


def plain(request: HttpRequest) -> HttpResponse:
    return HttpResponse(b"plain\n")


def feed(request: HttpRequest) -> HttpResponse:
    seconds = float(request.GET.get("seconds", "3"))

    def ticks():  # type: ignore[no-untyped-def]
        for i in range(int(seconds * 10)):
            time.sleep(0.1)
            yield {"tick": i}

    return sse_response(ticks(), ping=1, name=_name(request, "soak.sse"))


def failing(request: HttpRequest) -> HttpResponse:
    """A source that fails after its first chunks: clients must see a cut body."""

    def rows():  # type: ignore[no-untyped-def]
        for i in range(200):
            yield f"{i},row\r\n".encode() * 100
            if i == 150:
                raise RuntimeError("soak: the source failed on purpose")

    return stream_response(rows(), name="soak.fail", flush_interval=0)


def _held(request: HttpRequest, name: str) -> HttpResponse:
    """A slow stream that holds its slot for ``hold`` seconds."""
    hold = float(request.GET.get("hold", "0.5"))

    def pieces():  # type: ignore[no-untyped-def]
        for _ in range(10):
            time.sleep(hold / 10)
            yield b"x" * 1000

    return stream_response(pieces(), name=name, flush_interval=0)


def worker_pid(get_response):  # type: ignore[no-untyped-def]
    """Middleware: which worker served a response (the soak kills one mid-stream)."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response["X-Worker-Pid"] = str(os.getpid())
        return response

    return middleware


@limit_concurrency(LIMITS["process"], scope="process", status=429, name="soak.lim.process")
def limited_process(request: HttpRequest) -> HttpResponse:
    return _held(request, "soak.lim.process")


@limit_concurrency(
    LIMITS["host"], scope="host", on_limit="wait", timeout=0.5, status=429, name="soak.lim.host"
)
def limited_host(request: HttpRequest) -> HttpResponse:
    return _held(request, "soak.lim.host")


@limit_concurrency(LIMITS["cluster"], scope="cluster", status=429, name="soak.lim.cluster")
def limited_cluster(request: HttpRequest) -> HttpResponse:
    return _held(request, "soak.lim.cluster")


urlpatterns = [
    path("csv", export_csv),
    path("jsonl", export_jsonl),
    path("zip", export_zip),
    path("file", download),
    path("small", small),
    path("plain", plain),
    path("sse", feed),
    path("fail", failing),
    path("lim/process", limited_process),
    path("lim/host", limited_host),
    path("lim/cluster", limited_cluster),
    path("streaming/", include("django_streamer.urls")),
]
