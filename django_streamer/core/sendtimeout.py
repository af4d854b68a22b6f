"""Dropping a client that accepts no bytes for a while (a send timeout).

Without one, a client that stops reading pins what serves it: a gthread worker
thread blocked in ``sendall()`` forever, or an ASGI task parked in ``send()``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable

logger = logging.getLogger("django_streamer")


def set_socket_timeout(sock: object, timeout: float) -> bool:
    """Make every blocking send on ``sock`` fail after ``timeout`` seconds without progress.

    gunicorn's sync and gthread workers write the response with
    ``sock.sendall()`` (and ``sock.sendfile()``); with a timeout those raise
    ``TimeoutError`` once the peer has taken no bytes for that long, gunicorn
    drops the connection and closes the response (the stream ends aborted).
    gthread puts the socket back to non-blocking after the request, which
    clears the timeout, so keep-alive waits are untouched.
    """
    if not isinstance(sock, socket.socket):
        return False
    sock.settimeout(timeout)
    return True


async def guard_sends(
    chunks: AsyncIterator[bytes],
    timeout: float,
    *,
    on_timeout: Callable[[], None],
) -> AsyncIterator[bytes]:
    """Pass ``chunks`` on; if the server does not ask for the next one within
    ``timeout`` of taking the last, cancel the task that serves the response.

    An ASGI server's ``send()`` waits while the client reads nothing (uvicorn
    and gunicorn's asgi worker both wait on the transport's drain), and the
    handler asks for the next chunk only once ``send()`` returned. Cancelling
    the serving task makes that ``send()`` raise, the handler closes this
    iterator, and the stream ends aborted. One timer per chunk, never per item.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    try:
        async for chunk in chunks:
            handle = loop.call_later(timeout, _drop, task, on_timeout)
            try:
                yield chunk
            finally:
                handle.cancel()
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def _drop(task: asyncio.Task[object] | None, on_timeout: Callable[[], None]) -> None:
    on_timeout()
    if task is not None:
        task.cancel()
