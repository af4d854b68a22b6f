"""The bench's scenarios; each has a plain-Django twin served from the same process."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from django.http import FileResponse, HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase

from django_streamer import limit_concurrency, stream_response

TINY_ROWS = 200_000
ROW = b"x" * 32 + b"\n"
ROW_STR = ROW.decode()
BIG_PIECE = b"y" * 65536


def tiny(as_str: bool) -> Iterator[bytes | str]:
    row = ROW_STR if as_str else ROW
    for _ in range(TINY_ROWS):
        yield row


async def atiny() -> AsyncIterator[bytes]:
    for _ in range(TINY_ROWS):
        yield ROW


def small() -> Iterator[bytes]:
    for _ in range(10):
        yield b"s" * 100


def large() -> Iterator[bytes]:
    for _ in range(256):  # 16 MiB
        yield BIG_PIECE


def gib() -> Iterator[bytes]:
    for _ in range(16384):  # 1 GiB
        yield BIG_PIECE


def slow() -> Iterator[bytes]:
    for _ in range(20):
        time.sleep(0.05)  # the first item takes 50 ms to make
        yield ROW


def naive_rechunk(source: Iterator[bytes | str], size: int = 65536) -> Iterator[bytes]:
    """The ten-line list-and-join rechunker a user would otherwise write."""
    buf: list[bytes] = []
    n = 0
    for piece in source:
        data = piece.encode() if isinstance(piece, str) else piece
        buf.append(data)
        n += len(data)
        if n >= size:
            yield b"".join(buf)
            buf, n = [], 0
    if buf:
        yield b"".join(buf)


async def anaive_rechunk(source: AsyncIterator[bytes], size: int = 65536) -> AsyncIterator[bytes]:
    """The async twin of ``naive_rechunk``: no time bound at all."""
    buf: list[bytes] = []
    n = 0
    async for piece in source:
        buf.append(piece)
        n += len(piece)
        if n >= size:
            yield b"".join(buf)
            buf, n = [], 0
    if buf:
        yield b"".join(buf)


def bench_file() -> Path:
    path = Path(tempfile.gettempdir()) / "django-streamer-bench-64MiB.bin"
    if not path.exists() or path.stat().st_size != 64 << 20:
        tmp = path.with_suffix(f".{os.getpid()}")
        with open(tmp, "wb") as f:
            for _ in range(1024):
                f.write(BIG_PIECE)
        os.replace(tmp, path)
    return path


def dispatch(request: HttpRequest, scenario: str, impl: str) -> HttpResponseBase:
    source: object
    if scenario in ("tiny", "tinystr"):
        source = tiny(scenario == "tinystr")
    elif scenario == "atiny":
        source = atiny()
    elif scenario == "small":
        source = small()
    elif scenario == "large":
        source = large()
    elif scenario == "gib":
        source = gib()
    elif scenario == "slow":
        source = slow()
    elif scenario == "file":
        if impl == "plain":
            return FileResponse(open(bench_file(), "rb"))
        source = bench_file()
    else:
        raise ValueError(scenario)
    if impl == "plain":
        return StreamingHttpResponse(source)
    if impl == "ceiling":
        # Plain Django handed the whole body as one piece: the fewest writes
        # chunked framing allows, with no rechunking cost at all.
        return StreamingHttpResponse([b"".join(source)])  # type: ignore[arg-type]
    if impl == "naive":
        return StreamingHttpResponse(naive_rechunk(source))  # type: ignore[arg-type]
    if impl == "anaive":
        return StreamingHttpResponse(anaive_rechunk(source))  # type: ignore[arg-type]
    # Only the sweep passes ?chunk=; building request.GET costs ~8 us, which
    # the plain contenders would not pay.
    chunk = int(request.GET["chunk"]) if request.META.get("QUERY_STRING") else None
    response = stream_response(source, name=scenario, chunk_size=chunk)
    if impl == "whole":
        # The file in one sendfile() call, as gunicorn's own sendfile sends it
        # (no progress until the end); "streamer" sends it in 8 MiB slices.
        response.sendfile_slice = 64 << 20
    return response


def _small_stream(request: HttpRequest) -> HttpResponseBase:
    return stream_response(small(), name="limited")


LIMITED = {
    "none": _small_stream,
    "process": limit_concurrency(1000, scope="process", name="bench-process")(_small_stream),
    "host": limit_concurrency(1000, scope="host", name="bench-host")(_small_stream),
    # Needs BENCH_REDIS_URL (bench/run.py starts a redis-server for it).
    "cluster": limit_concurrency(1000, scope="cluster", name="bench-cluster")(_small_stream),
}


def limited(request: HttpRequest, impl: str) -> HttpResponseBase:
    return LIMITED[impl](request)
