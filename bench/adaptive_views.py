"""The adaptive-limit bench's view: its first byte waits for one of a few "database connections".

``DB_CONNECTIONS`` connections, each held ``QUERY_SECONDS`` per request; more
requests than connections queue for one, so the time to first byte grows with
the concurrency past four. Three twins: no limit, a fixed limit
(``BENCH_FIXED_LIMIT``) and ``"auto"``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from django.http import HttpRequest
from django.http.response import HttpResponseBase

from django_streamer import limit_concurrency, stream_response

DB_CONNECTIONS = 4
QUERY_SECONDS = 0.01
_connections: asyncio.Semaphore | None = None


async def rows() -> AsyncIterator[bytes]:
    global _connections
    if _connections is None:  # made on the worker's loop
        _connections = asyncio.Semaphore(DB_CONNECTIONS)
    async with _connections:
        await asyncio.sleep(QUERY_SECONDS)
    for _ in range(10):
        yield b"r" * 99 + b"\n"


async def unlimited(request: HttpRequest) -> HttpResponseBase:
    return stream_response(rows(), flush_interval=0)


@limit_concurrency(int(os.environ.get("BENCH_FIXED_LIMIT", "4")), name="bench-fixed")
async def fixed(request: HttpRequest) -> HttpResponseBase:
    return stream_response(rows(), flush_interval=0)


@limit_concurrency("auto", name="bench-auto")
async def auto(request: HttpRequest) -> HttpResponseBase:
    return stream_response(rows(), flush_interval=0)


VIEWS = {"none": unlimited, "fixed": fixed, "auto": auto}


async def dispatch(request: HttpRequest, impl: str) -> HttpResponseBase:
    return await VIEWS[impl](request)
