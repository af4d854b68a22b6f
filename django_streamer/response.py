"""``stream_response()``: the Django face of :class:`~django_streamer.core.stream.Stream`."""

from __future__ import annotations

import asyncio
import mimetypes
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, cast

from django.http import HttpRequest, StreamingHttpResponse

from .conf import conf
from .core.bridge import aiter_sync, iter_async
from .core.headers import check_headers, content_disposition
from .core.recorder import StreamRecorder
from .core.stream import FileSender, Stream

# Called with the new stream; each may return a recorder to attach. The
# metrics registry registers itself here in AppConfig.ready().
recorder_factories: list[Callable[[Stream], StreamRecorder | None]] = []


class StreamingResponse(StreamingHttpResponse):
    """A ``StreamingHttpResponse`` that sends right-sized chunks.

    It serves the same stream to WSGI (``__iter__``) and ASGI (``__aiter__``)
    and bridges sync and async sources chunk by chunk, so Django's
    whole-body-buffering fallback is never taken.
    """

    stream: Stream
    file_to_stream: FileSender | None = None
    # Django internals this class works with (not in django-stubs).
    _resource_closers: list[Callable[[], object]]
    _iterator: Any
    # Set when someone (Django's test client, a middleware) replaced the
    # content with a wrapper around what ``streaming_content`` gave them.
    _replaced = False

    def attach(self, stream: Stream) -> None:
        """Serve ``stream``; the response's charset is what it encodes ``str`` with."""
        self.stream = stream
        self._resource_closers.append(stream.close)
        self.is_async = stream.is_async
        sender = stream.sendfile()
        if sender is not None:
            # Django's WSGIHandler hands this to ``wsgi.file_wrapper``: sendfile.
            self.file_to_stream = sender
            self.block_size = stream.chunk_size

    @property
    def streaming_content(self) -> Iterator[bytes] | AsyncIterator[bytes]:
        if self._replaced:
            return cast("Iterator[bytes] | AsyncIterator[bytes]", self._iterator)
        return self.__aiter__() if self.stream.is_async else self.__iter__()

    @streaming_content.setter
    def streaming_content(self, value: Any) -> None:
        self._set_streaming_content(value)  # type: ignore[attr-defined]
        self._replaced = hasattr(self, "stream")

    def _unsendfile(self) -> None:
        # Iterating means the sendfile path was not taken: read the file instead.
        if self.file_to_stream is not None:
            self.file_to_stream = None
            self.stream.cancel_sendfile()

    def __iter__(self) -> Iterator[bytes]:
        if self._replaced:
            return iter_async(self._iterator) if self.is_async else self._iterator
        self._unsendfile()
        return self.stream.sync_chunks()

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._replaced:
            return self._iterator if self.is_async else aiter_sync(self._iterator)
        self._unsendfile()
        return self.stream.async_chunks()

    def items(self) -> Any:
        # Django's WSGIHandler reads the headers through items() right before
        # start_response(). A sync source's first chunk is made there, in the
        # server thread (PEP 3333 servers send no headers before it anyway):
        # when it is the whole body, Content-Length replaces chunked framing.
        if not self._replaced and not self.stream.is_async and not _in_event_loop():
            length = self.stream.prefetch()
            if length is not None:
                self["Content-Length"] = str(length)
        return super().items()

    def getvalue(self) -> bytes:
        return b"".join(self)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _caller(frame: Any) -> tuple[str, str]:
    """The calling view's dotted path, and its request's path if it has one.

    The path (for the active-streams table) comes from the view's own
    ``request`` argument; a view that names it otherwise shows no path.
    """
    code = frame.f_code
    qualname = getattr(code, "co_qualname", code.co_name)
    request = frame.f_locals.get("request")
    path = request.path if isinstance(request, HttpRequest) else ""
    return f"{frame.f_globals.get('__name__', '?')}.{qualname}", path


def stream_response(
    source: object,
    *,
    name: str | None = None,
    content_type: str | None = None,
    chunk_size: int | None = None,
    flush_interval: float | None = None,
    filename: str | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> StreamingResponse:
    """Stream ``source`` in right-sized chunks.

    ``source`` is a sync or async iterable of ``bytes``/``bytearray``/
    ``memoryview``/``str`` pieces, a binary or text file-like object, or a
    path. Pieces smaller than ``chunk_size`` are coalesced, bigger ones split;
    ``flush_interval`` bounds how long a byte may wait. ``name`` labels the
    stream in logs and metrics (default: the calling view's dotted path).
    """
    caller_name, request_path = _caller(sys._getframe(1))
    if name is None:
        name = caller_name
    extra = dict(headers or {})
    check_headers(extra, name=name)
    if content_type is None and isinstance(source, os.PathLike):
        guessed, encoding = mimetypes.guess_type(os.fspath(source))
        # A compressed file (encoding set) is sent as the bytes it is.
        content_type = guessed if guessed and not encoding else "application/octet-stream"
    response = StreamingResponse(content_type=content_type, status=status)
    for key, value in extra.items():
        response[key] = value
    if conf.STREAMER_X_ACCEL_BUFFERING and "X-Accel-Buffering" not in response:
        response["X-Accel-Buffering"] = "no"
    if filename is not None:
        response["Content-Disposition"] = content_disposition(filename)
    # Last, as it may open a file: nothing after this can fail and leak it.
    stream = Stream(
        source,
        name=name,
        chunk_size=conf.STREAMER_CHUNK_SIZE if chunk_size is None else chunk_size,
        flush_interval=conf.STREAMER_FLUSH_INTERVAL if flush_interval is None else flush_interval,
        encoding=response.charset,
    )
    stream.path = request_path
    response.attach(stream)
    if stream.length is not None:
        response["Content-Length"] = str(stream.length)
    for factory in recorder_factories:
        recorder = factory(stream)
        if recorder is not None:
            stream.recorders.add(recorder)
    stream.recorders.start()
    return response
