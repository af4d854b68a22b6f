"""Crossing between sync and async, one hop per chunk (never per item).

Plain Django buffers the whole body when a sync iterator meets ASGI
(``sync_to_async(list)``) or an async one meets WSGI (``async_to_sync``); these
bridges stream instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

from asgiref.sync import sync_to_async


def _next_or_none(iterator: Iterator[bytes]) -> bytes | None:
    return next(iterator, None)


async def aiter_sync(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Drive a sync chunk iterator from async code, one thread hop per chunk.

    ``thread_sensitive=True`` keeps every call of one request on one thread
    (Django's ASGI handler opens a ``ThreadSensitiveContext`` per request), so a
    generator that holds a database cursor stays on the thread that opened it.
    """
    step = sync_to_async(_next_or_none, thread_sensitive=True)
    try:
        while True:
            chunk = await step(chunks)
            if chunk is None:
                return
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            await sync_to_async(close, thread_sensitive=True)()


def iter_async(chunks: AsyncIterator[bytes]) -> Iterator[bytes]:
    """Drive an async chunk iterator from sync code on a private event loop.

    The loop lives as long as the stream, so the source's timers, tasks and
    async-generator state stay on one loop; each chunk costs one
    ``run_until_complete``.
    """
    loop = asyncio.new_event_loop()
    try:
        while True:
            try:
                chunk = loop.run_until_complete(chunks.__anext__())
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        try:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                loop.run_until_complete(aclose())
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
