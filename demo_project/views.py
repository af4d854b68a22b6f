"""The demo's streams: a million-row CSV, a file download and a slow ticker."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from django_streamer import stream_response


def index(request: HttpRequest) -> HttpResponse:
    return render(request, "demo/index.html")


def export_csv(request: HttpRequest) -> HttpResponse:
    rows = int(request.GET.get("rows", 1_000_000))

    def generate() -> Iterator[str]:
        yield "id,name,score\n"
        for i in range(rows):
            yield f"{i},user-{i},{i * 7 % 1000}\n"

    return stream_response(generate(), content_type="text/csv", filename="export.csv")


def _demo_file() -> os.PathLike[str]:
    path = settings.VAR_DIR / "demo-download.bin"
    size = 64 * 1024 * 1024
    if not path.exists() or path.stat().st_size != size:
        block = bytes(range(256)) * 4096
        with open(path, "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
    return path


def download(request: HttpRequest) -> HttpResponse:
    return stream_response(_demo_file(), filename="demo-download.bin")


async def ticker(request: HttpRequest) -> HttpResponse:
    """One line every half second: each reaches the browser within flush_interval."""
    count = int(request.GET.get("count", 20))

    async def ticks() -> AsyncIterator[str]:
        for i in range(count):
            yield f"tick {i} at {asyncio.get_running_loop().time():.3f}\n"
            await asyncio.sleep(0.5)

    return stream_response(ticks(), content_type="text/plain; charset=utf-8", flush_interval=0.1)
