"""Bench views for SSE: idle streams, and one event fanned out to every subscriber."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from django_streamer import sse_response

# Each open /sse/fanout stream's queue; one asgi worker, one event loop.
SUBSCRIBERS: set[asyncio.Queue[str]] = set()


async def _never() -> AsyncIterator[str]:
    await asyncio.Event().wait()
    yield ""


async def idle(request: HttpRequest) -> HttpResponseBase:
    return sse_response(_never(), ping=float(request.GET.get("ping", 15)))


async def _subscribe() -> AsyncIterator[str]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    SUBSCRIBERS.add(queue)
    try:
        while True:
            yield await queue.get()
    finally:
        SUBSCRIBERS.discard(queue)


async def fanout(request: HttpRequest) -> HttpResponseBase:
    return sse_response(_subscribe(), ping=None)


async def publish(request: HttpRequest) -> HttpResponse:
    stamp = repr(time.time())
    for queue in SUBSCRIBERS:
        queue.put_nowait(stamp)
    return HttpResponse(str(len(SUBSCRIBERS)))
