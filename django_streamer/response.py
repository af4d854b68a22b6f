"""``stream_response()``: the Django face of :class:`~django_streamer.core.stream.Stream`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, cast

from django.conf import settings
from django.http import HttpRequest, StreamingHttpResponse

from .compression import start_compression
from .conf import conf, warn_if_not_installed
from .context import current_request, stream_name
from .core.bridge import aiter_sync, iter_async
from .core.headers import check_headers, content_disposition
from .core.metrics.names import check_name
from .core.recorder import Outcome, StreamRecorder
from .core.sendfile import SLICE
from .core.sendtimeout import drop_if_stalled, guard_sends, set_socket_timeout
from .core.stream import FileSender, State, Stream
from .core.validate import boolean
from .extensions import extensions
from .querysets import rows_of
from .ranges import serve_ranges

__all__ = ["StreamingResponse", "current_request", "refusal_response", "stream_response"]

logger = logging.getLogger("django_streamer")


# Under ASGI the response waits this long at least for the first chunk, so a
# source that is empty or fails at once is known before the headers go, even
# with ``flush_interval`` 0 (a thread hop for a sync source takes ~0.1 ms).
FIRST_CHUNK_MIN_WAIT = 0.02


class _OnDone(StreamRecorder):
    def __init__(self, callback: Callable[[Outcome], object]) -> None:
        self.callback = callback

    def finish(self, outcome: Outcome) -> None:
        self.callback(outcome)


class StreamingResponse(StreamingHttpResponse):
    """A ``StreamingHttpResponse`` that sends right-sized chunks.

    It serves the same stream to WSGI (``__iter__``) and ASGI (``__aiter__``)
    and bridges sync and async sources chunk by chunk, so Django's
    whole-body-buffering fallback is never taken.
    """

    stream: Stream
    file_to_stream: FileSender | None = None
    send_timeout: float | None = None
    # The connection's socket, when the server gives it (gunicorn's WSGI workers).
    client_socket: socket.socket | None = None
    # A file we send on ``client_socket`` ourselves, slice by slice (progress shows).
    _slices: FileSender | None = None
    # Bytes per sendfile() call then (bench/run.py's file row compares sizes).
    sendfile_slice: int = SLICE
    # Set when someone (Django's test client, a middleware) replaced the
    # content with a wrapper around what ``streaming_content`` gave them.
    _replaced = False
    _content: Any = ()
    _content_close: Callable[[], object] | None = None

    def attach(self, stream: Stream) -> None:
        """Serve ``stream``; the response's charset is what it encodes ``str`` with."""
        self.stream = stream
        self.is_async = stream.is_async
        sender = stream.sendfile()
        if sender is not None:
            # Django's WSGIHandler hands this to ``wsgi.file_wrapper``: sendfile.
            self.file_to_stream = sender
            self.block_size = stream.chunk_size

    def send_file_in_slices(self, sock: socket.socket) -> None:
        """Send the file on ``sock`` in slices, not through ``wsgi.file_wrapper``.

        Still sendfile, but each slice is counted as it is handed over, so the
        metrics and the dashboard show a download's progress.
        """
        if self.file_to_stream is not None and self.stream.length is not None:
            self._slices, self.file_to_stream = self.file_to_stream, None
            self.client_socket = sock

    # -- the public hooks ------------------------------------------------

    def add_recorder(self, recorder: StreamRecorder) -> None:
        """Tell ``recorder`` of each later chunk and, exactly once, of the outcome."""
        self.stream.add_recorder(recorder)

    def on_done(self, callback: Callable[[Outcome], object]) -> None:
        """Call ``callback(outcome)`` once the stream is done, however it ended.

        Completed, failed, aborted by the client, or closed by the server (or
        never sent): also when the handler skips ``close()`` (Django's ASGI
        handler does when the stream raised).
        """
        self.stream.add_recorder(_OnDone(callback))

    # -- making the first chunk inside Django's error handling ------------

    def prime(self) -> None:
        """Make the first chunk now, before the headers go (blocking).

        ``StreamerMiddleware`` calls it right after the view, inside Django's
        exception handling: a source that fails before its first chunk gets
        Django's 500 path (debug page, ``django.request`` log, ``handler500``).
        """
        if not self._replaced and self.stream.can_prepare():
            self._set_length(self.stream.prepare())

    async def aprime(self) -> None:
        """``prime()`` on an event loop: wait a little for the first chunk, never blocking."""
        if not self._replaced and self.stream.can_prepare():
            wait = max(self.stream.flush_interval, FIRST_CHUNK_MIN_WAIT)
            self._set_length(await self.stream.aprepare(wait))
            # Its first chunk is now a future on this loop: whoever wraps the
            # content (GZipMiddleware) must take the async side, whatever the source.
            self.is_async = True

    def _set_length(self, length: int | None) -> None:
        # The whole body was the first chunk: Content-Length, no chunked framing.
        if length is not None and self.status_code != 304:
            self["Content-Length"] = str(length)

    # -- the body ---------------------------------------------------------

    @property
    def streaming_content(self) -> Iterator[bytes] | AsyncIterator[bytes]:
        if self._replaced:
            return cast("Iterator[bytes] | AsyncIterator[bytes]", self._content)
        self._unsendfile()  # a wrapper reads the chunks: no sendfile behind its back
        return self.__aiter__() if self.is_async else self.__iter__()

    @streaming_content.setter
    def streaming_content(self, value: Any) -> None:
        # As Django's own setter: iterate ``value`` once, close it with the response.
        self.is_async = not hasattr(value, "__iter__")
        self._content = aiter(value) if self.is_async else iter(value)
        self._content_close = getattr(value, "close", None)
        self._replaced = hasattr(self, "stream")

    def close(self) -> None:
        """End the stream (aborted if unfinished), close a wrapper, then Django's close()."""
        try:
            stream = self.__dict__.get("stream")
            if stream is not None:
                stream.close()
                sock = self.client_socket
                if sock is not None and self.send_timeout and stream.outcome is Outcome.ABORTED:
                    drop_if_stalled(sock)
            if self._content_close is not None:
                # As Django's close() does for its closers: a wrapper that calls
                # close() from its own ``finally`` (the test client's) raises
                # "generator already executing" here.
                with contextlib.suppress(Exception):
                    self._content_close()
        finally:
            super().close()

    def _unsendfile(self) -> None:
        # Iterating means the sendfile path was not taken: read the file instead.
        if self.file_to_stream is not None or self._slices is not None:
            self.file_to_stream = self._slices = None
            self.stream.cancel_sendfile()

    def __iter__(self) -> Iterator[bytes]:
        if self._replaced:
            return iter_async(self._content) if self.is_async else self._content
        if self._slices is not None and self.client_socket is not None:
            assert self.stream.length is not None  # send_file_in_slices() checked
            return self._slices.send_slices(
                self.client_socket, self.stream.length, slice_size=self.sendfile_slice
            )
        self._unsendfile()
        return self.stream.sync_chunks()

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._replaced:
            return self._content if self.is_async else aiter_sync(self._content)
        self._unsendfile()
        chunks = self.stream.async_chunks()
        if self.send_timeout is None:
            return chunks
        return guard_sends(chunks, self.send_timeout, on_timeout=self._send_timed_out)

    def _send_timed_out(self) -> None:
        logger.warning(
            "Stream %r: the client accepted no bytes for %s s (STREAMER_SEND_TIMEOUT); "
            "dropped after %d bytes",
            self.stream.name,
            self.send_timeout,
            self.stream.sent_bytes,
        )

    def items(self) -> Any:
        # Without StreamerMiddleware (or above a wrapper) under WSGI: Django's
        # WSGIHandler reads the headers through items() right before
        # start_response(), so the first chunk can still be made here for
        # Content-Length, though outside Django's error handling.
        if not self._replaced and self.stream.can_prepare() and not _in_event_loop():
            self._set_length(self.stream.prepare())
        return super().items()

    def getvalue(self) -> bytes:
        return b"".join(self)

    def __del__(self) -> None:
        # Last resort: a response nobody sends or closes still ends its stream
        # (aborted) when collected. Django's ASGI handler drops the response
        # when the client went away while the view ran. A closed stream (the
        # usual case) costs one attribute check here, where a
        # ``weakref.finalize`` cost ~1 us to make and a second ``close()``.
        stream = self.__dict__.get("stream")
        if (
            stream is not None
            and stream.lifecycle.state is not State.CLOSED
            and not sys.is_finalizing()
        ):
            stream.close()


def _in_event_loop() -> bool:
    # The low-level getter returns None outside a loop: no RuntimeError raised
    # and caught, as ``get_running_loop()`` would, ~3 times per request.
    return asyncio._get_running_loop() is not None


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
    compress: bool | None = None,
    ranges: bool = True,
) -> StreamingResponse:
    """Stream ``source`` in right-sized chunks.

    ``source`` is a sync or async iterable of ``bytes``/``bytearray``/
    ``memoryview``/``str`` pieces, a binary or text file-like object, or a
    path; a QuerySet is read in chunks (``iterator()``, ``aiterator()`` on an
    event loop). Pieces smaller than ``chunk_size`` are coalesced, bigger ones split;
    ``flush_interval`` bounds how long a byte may wait. ``name`` labels the
    stream in logs and metrics (default: the resolved view's dotted path).
    ``compress``: None follows ``STREAMER_COMPRESSION``, True or False decides
    for this response (README, *Compression*). ``ranges``: False sends a file
    source whole whatever the ``Range`` header (README, *Files: ranges and
    conditional requests*); ``STREAMER_RANGES = False`` does so site-wide.
    Every stream counts toward
    ``STREAMER_MAX_STREAMS``; past it the answer is a 503 with ``Retry-After``
    and ``source`` is closed unstarted.
    """
    warn_if_not_installed()
    if name is None:
        name = stream_name()
    else:
        check_name(name)
    from . import cap  # cap -> pools -> slots -> this module

    try:  # first: a refused stream's source never starts
        slot = cap.take_stream_slot()
    except cap.Refused as refused:
        return cap.refuse(refused, name=name, source=source)
    try:
        response = _serve(
            source,
            name=name,
            content_type=content_type,
            chunk_size=chunk_size,
            flush_interval=flush_interval,
            filename=filename,
            status=status,
            headers=headers,
            compress=compress,
            ranges=ranges,
        )
    except BaseException:
        if slot is not None:
            slot.release()
        raise
    return cap.hold(response, slot)


def refusal_response(text: str, *, name: str, retry_after: int | None) -> StreamingResponse:
    """A 503 saying ``text``, made as a stream that counts toward no cap."""
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    return _serve(
        iter([text]),
        name=name,
        content_type="text/plain; charset=utf-8",
        status=503,
        headers=headers,
    )


def _serve(
    source: object,
    *,
    name: str,
    content_type: str | None = None,
    chunk_size: int | None = None,
    flush_interval: float | None = None,
    filename: str | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    compress: bool | None = None,
    ranges: bool = True,
) -> StreamingResponse:
    """``stream_response()`` once admitted."""
    request = current_request.get()
    if compress is not None:
        compress = boolean(compress, what=f"stream {name!r}: compress")
    ranges = boolean(ranges, what=f"stream {name!r}: ranges") and conf.STREAMER_RANGES
    source = rows_of(source)  # a QuerySet in chunks, not loaded whole
    response = _response(source, content_type, status, headers, filename, name=name)
    send_timeout = conf.STREAMER_SEND_TIMEOUT
    # Last, as it may open a file: nothing after this can fail and leak it.
    stream = Stream(
        source,
        name=name,
        chunk_size=conf.STREAMER_CHUNK_SIZE if chunk_size is None else chunk_size,
        flush_interval=conf.STREAMER_FLUSH_INTERVAL if flush_interval is None else flush_interval,
        encoding=response.charset,
    )
    stream.path = request.path if request is not None else ""
    if stream.length is not None:
        response["Content-Length"] = str(stream.length)  # also for the size threshold
    try:
        if request is not None:
            decision = serve_ranges(request, response, stream, ranges=ranges)
            if decision is None or decision.status == 200:
                _compress(request, response, stream, compress)
        _attach_recorders(stream)
    except BaseException:
        stream.discard()  # a recorder factory raised: the file a Path opened must not leak
        raise
    response.attach(stream)
    response.send_timeout = send_timeout
    if request is not None:
        _use_socket(request, response, send_timeout)
    return response


def _use_socket(request: HttpRequest, response: StreamingResponse, timeout: float | None) -> None:
    """WSGI under gunicorn (sync and gthread workers): the connection's socket."""
    sock = request.META.get("gunicorn.socket")
    if not isinstance(sock, socket.socket):
        return
    response.client_socket = sock
    if timeout is not None:
        set_socket_timeout(sock, timeout)
    if request.method != "HEAD":  # the server leaves the body out
        response.send_file_in_slices(sock)


def _response(
    source: object,
    content_type: str | None,
    status: int,
    headers: Mapping[str, str] | None,
    filename: str | None,
    *,
    name: str,
) -> StreamingResponse:
    extra = dict(headers or {})
    check_headers(extra, name=name)
    if content_type is None and isinstance(source, os.PathLike):
        guessed, encoding = mimetypes.guess_type(os.fspath(source))
        # A compressed file (encoding set) is sent as the bytes it is.
        content_type = guessed if guessed and not encoding else "application/octet-stream"
    # Without a content type Django's default carries DEFAULT_CHARSET: passing
    # it spares ``response.charset`` a regex search of the header it built.
    charset = settings.DEFAULT_CHARSET if content_type is None else None
    response = StreamingResponse(content_type=content_type, status=status, charset=charset)
    for key, value in extra.items():
        response[key] = value
    if conf.STREAMER_X_ACCEL_BUFFERING and "X-Accel-Buffering" not in response:
        response["X-Accel-Buffering"] = "no"
    if filename is not None:
        response["Content-Disposition"] = content_disposition(filename)
    return response


def _compress(
    request: HttpRequest, response: StreamingResponse, stream: Stream, compress: bool | None
) -> None:
    """Decide once per stream; when compressing, the stage sits before the driver."""
    stage = start_compression(
        request,
        response,
        compress=compress,
        chunk_size=stream.chunk_size,
        flush_interval=stream.flush_interval,
    )
    if stage is not None:
        stream.compress(stage)


def _attach_recorders(stream: Stream) -> None:
    for factory in extensions.stream_recorder_factories:
        recorder = factory(stream)
        if recorder is not None:
            stream.recorders.add(recorder)
    stream.recorders.start()
