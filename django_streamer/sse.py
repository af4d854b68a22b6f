"""``sse_response()``: Server-Sent Events over :func:`~django_streamer.stream_response`."""

from __future__ import annotations

import sys
from collections.abc import Mapping

from asgiref.sync import SyncToAsync
from django.db import connections
from django.http import HttpRequest

from .conf import conf
from .context import stream_name
from .core.drain import process_drain
from .core.sse.schedule import Schedule
from .core.sse.source import AsyncEvents, SyncEvents
from .core.validate import non_negative_int, positive_number
from .response import StreamingResponse, stream_response

__all__ = ["last_event_id", "sse_response"]


def sse_response(
    events: object,
    *,
    ping: float | None = 15,
    retry: int | None = None,
    max_duration: float | None = None,
    name: str | None = None,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    compress: bool | None = None,
) -> StreamingResponse:
    """Stream ``events`` as ``text/event-stream``, each event written as it comes.

    ``events`` is a sync or async iterable of :class:`~django_streamer.Event`,
    ``str`` or JSON-encodable values. A comment goes out every ``ping`` seconds
    while it is silent (None: never). ``retry`` (milliseconds) sets the
    client's reconnection delay. After ``max_duration`` seconds, or when the
    worker drains, the stream ends cleanly with a ``retry:`` hint, so the
    client reconnects, with ``Last-Event-ID``, to whichever worker is free.
    ``compress`` is :func:`stream_response`'s: every event is flushed, so a
    compressed stream is still read event by event.
    """
    if ping is not None:
        ping = positive_number(ping, what="sse_response: ping")
    if retry is not None:
        retry = non_negative_int(retry, what="sse_response: retry (milliseconds)")
    if max_duration is not None:
        max_duration = positive_number(max_duration, what="sse_response: max_duration")
    schedule = Schedule(
        ping=ping, retry=retry, max_duration=max_duration, drain_spread=conf.STREAMER_DRAIN_SPREAD
    )
    source: SyncEvents | AsyncEvents
    if hasattr(events, "__iter__") and not isinstance(events, (str, bytes, Mapping)):
        # The helper thread may touch the database: close what it opened.
        source = SyncEvents(
            events, schedule=schedule, drain=process_drain, on_thread_end=connections.close_all
        )
    elif hasattr(events, "__aiter__"):
        source = AsyncEvents(
            events, schedule=schedule, drain=process_drain, on_start=release_request_thread
        )
    else:
        raise TypeError(
            "sse_response: events must be a sync or async iterable of events, "
            f"not {type(events).__name__}"
        )
    extra = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})}
    if name is None:
        # Named as stream_response() names streams, but from our caller's
        # frame: without a resolved view, the name is the view that called us,
        # not sse_response. The path comes from the same request, found again
        # by stream_response() before any recorder reads it.
        caller = sys._getframe(1)
        name = stream_name(caller)
    response = stream_response(
        source,
        name=name,
        content_type="text/event-stream; charset=utf-8",
        flush_interval=0,
        status=status,
        headers=extra,
        compress=compress,
    )
    # Not compressed here: GZipMiddleware leaves a response alone when it has a
    # Content-Encoding (its documented opt-out); for a sync stream it would
    # otherwise hold events in gzip's buffer indefinitely (it never flushes).
    response.setdefault("Content-Encoding", "identity")
    return response


def release_request_thread() -> None:
    """Let the request's thread-sensitive thread go while an async SSE stream runs.

    Django's ASGI handler gives every request its own thread for sync code
    (asgiref's ``ThreadSensitiveContext``), started by the sync receivers of
    ``request_started`` and kept until the response is closed. An idle SSE
    stream would hold it for hours: a thread (its stack, its thread state) per
    connection, and any database connection the view opened in it. Once the
    body starts, that thread has nothing left to do for this request: it
    closes its database connections and ends. Sync code the request runs later
    (``response.close()``, ``request_finished``) gets a new thread.

    It reaches into asgiref (``SyncToAsync.thread_sensitive_context`` and
    ``context_to_thread_executor``, read against asgiref 3.7-3.13); should
    those change, it does nothing and the thread is kept, as before.
    """
    contexts = getattr(SyncToAsync, "thread_sensitive_context", None)
    executors = getattr(SyncToAsync, "context_to_thread_executor", None)
    if contexts is None or executors is None:
        return
    context = contexts.get(None)
    if context is None or getattr(context, "_executor", None) is not None:
        return  # no per-request thread, or an executor its owner manages
    executor = executors.pop(context, None)
    if executor is None:
        return
    executor.submit(connections.close_all)
    executor.shutdown(wait=False)


def last_event_id(request: HttpRequest) -> str | None:
    """The ``Last-Event-ID`` a reconnecting ``EventSource`` sent, or None.

    Browsers send it on reconnect; a client that cannot set headers may pass
    ``?lastEventId=`` instead. An empty value counts as none.
    """
    value = request.headers.get("Last-Event-ID") or request.GET.get("lastEventId")
    return value or None
