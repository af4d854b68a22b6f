"""``stream_writer()``: a response whose body a producer writes into ``out``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.db import connections

from .conf import conf
from .context import stream_name
from .core.validate import non_negative_number, positive_int
from .core.writer.handoff import HandOff, StreamClosed
from .core.writer.task import async_writer_chunks
from .core.writer.thread import ThreadWriter
from .response import StreamingResponse, stream_response

__all__ = ["StreamClosed", "stream_writer"]


class _AsyncWriter:
    """An async source that starts its producer task when the server first reads."""

    def __init__(self, produce: Callable[..., Any], hand: HandOff, text: bool) -> None:
        self.produce, self.hand, self.text = produce, hand, text

    def __aiter__(self) -> AsyncIterator[bytes]:
        return async_writer_chunks(self.produce, self.hand, text=self.text)


def _close_connections() -> None:
    # The helper thread's connections are its own (Django keeps them per
    # thread); nothing else would ever close them.
    connections.close_all()


def stream_writer(
    produce: Callable[..., Any],
    *,
    text: bool = False,
    name: str | None = None,
    chunk_size: int | None = None,
    flush_interval: float | None = None,
    **kwargs: Any,
) -> StreamingResponse:
    """Stream what ``produce(out)`` writes into ``out``.

    A sync ``produce`` runs in a helper thread started when the server starts
    reading; an ``async def`` one runs on the event loop and awaits
    ``out.write()``. ``out.write()`` blocks once ``STREAMER_WRITER_BUFFER``
    bytes are waiting, and raises :class:`StreamClosed` once the client has
    gone. ``text=True`` takes ``str``, encoded with the response's charset.
    Other keyword arguments are :func:`stream_response`'s.
    """
    name = stream_name() if name is None else name
    what = f"stream_writer {name!r}"
    if not callable(produce):
        raise TypeError(f"{what}: produce must be callable, not {type(produce).__name__}")
    size = positive_int(
        conf.STREAMER_CHUNK_SIZE if chunk_size is None else chunk_size, what=f"{what}: chunk_size"
    )
    interval = non_negative_number(
        conf.STREAMER_FLUSH_INTERVAL if flush_interval is None else flush_interval,
        what=f"{what}: flush_interval",
    )
    limit = conf.STREAMER_WRITER_BUFFER
    hand = HandOff(chunk_size=size, flush_interval=interval, limit=limit, encoding="", name=name)
    source: object
    if iscoroutinefunction(produce):
        source = _AsyncWriter(produce, hand, text)
    else:
        source = ThreadWriter(produce, hand, text=text, on_exit=_close_connections)
    # The hand-off sizes the chunks and keeps flush_interval while the producer
    # is silent; the stream passes them on as they come.
    response = stream_response(source, name=name, chunk_size=size, flush_interval=0, **kwargs)
    hand.encoding = response.charset
    return response
