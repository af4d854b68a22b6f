"""Dropping a client that accepts no bytes for a while (a send timeout).

Without one, a client that stops reading pins what serves it: a gthread worker
thread blocked in ``sendall()`` forever, or an ASGI task parked in ``send()``.
"""

from __future__ import annotations

import asyncio
import logging
import select
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


def drop_if_stalled(sock: socket.socket) -> bool:
    """Shut ``sock`` down now if its peer takes no bytes (no room to send); say if it did.

    For a stream that ended unfinished. After a send timeout gunicorn still
    waits on the stalled client: 27.x closes "gracefully" (half-close, then up
    to 2 s reading the peer), older releases wrote an error response with the
    same timeout. A thread then serves a client that never reads for about
    twice ``STREAMER_SEND_TIMEOUT``. Once shut down, both return at once.
    """
    poller = select.poll()
    try:
        poller.register(sock, select.POLLOUT)
        if poller.poll(0):
            return False  # room to send (or an error to report): not stalled
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):  # closed already
        return False
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
