"""The demo's streams: a million-row CSV, a file download, a slow ticker and a live clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.shortcuts import render

from django_streamer import Event, last_event_id, limit_concurrency, sse_response, stream_response


def index(request: HttpRequest) -> HttpResponseBase:
    return render(request, "demo/index.html")


# At most two exports per client address at a time, across all gunicorn workers.
@limit_concurrency(2, key="ip", scope="host", status=429)
def export_csv(request: HttpRequest) -> HttpResponseBase:
    rows = int(request.GET.get("rows", 1_000_000))

    def generate() -> Iterator[str]:
        yield "id,name,score\n"
        for i in range(rows):
            yield f"{i},user-{i},{i * 7 % 1000}\n"

    return stream_response(generate(), content_type="text/csv", filename="export.csv")


def _demo_file() -> Path:
    path: Path = settings.VAR_DIR / "demo-download.bin"  # type: ignore[misc]
    size = 64 * 1024 * 1024
    if not path.exists() or path.stat().st_size != size:
        block = bytes(range(256)) * 4096
        with open(path, "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
    return path


def download(request: HttpRequest) -> HttpResponseBase:
    return stream_response(_demo_file(), filename="demo-download.bin")


async def ticker(request: HttpRequest) -> HttpResponseBase:
    """One line every half second: each reaches the browser within flush_interval."""
    count = int(request.GET.get("count", 20))

    async def ticks() -> AsyncIterator[str]:
        for i in range(count):
            yield f"tick {i} at {asyncio.get_running_loop().time():.3f}\n"
            await asyncio.sleep(0.5)

    return stream_response(ticks(), content_type="text/plain; charset=utf-8", flush_interval=0.1)


def live(request: HttpRequest) -> HttpResponseBase:
    return render(request, "demo/live.html")


# Three open clocks per user (per address when logged out).
@limit_concurrency(3, key="user", status=429)
def clock(request: HttpRequest) -> HttpResponseBase:
    """Server-Sent Events: one a second; a reconnecting browser resumes after its last id."""
    start = last_event_id(request, type=int, default=0) + 1

    def seconds() -> Iterator[Event]:
        n = start
        while True:
            time.sleep(1)  # a blocking source: pings go out from the server thread meanwhile
            yield Event({"n": n, "time": time.strftime("%H:%M:%S")}, id=n)
            n += 1

    return sse_response(seconds(), ping=5, max_duration=60)
