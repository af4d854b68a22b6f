"""``sse_response()``: Server-Sent Events over :func:`~django_streamer.stream_response`."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from asgiref.sync import SyncToAsync
from django.db import connections
from django.http import HttpRequest

from . import cap
from .conf import conf
from .context import current_request, stream_name
from .core.drain import process_drain
from .core.sse.schedule import Schedule
from .core.sse.source import AsyncEvents, SyncEvents
from .core.sse.threads import SOURCE_THREADS
from .core.validate import non_negative_int, positive_number
from .response import StreamingResponse, stream_response

__all__ = ["last_event_id", "sse_response"]

logger = logging.getLogger("django_streamer")

# A longer Last-Event-ID is not one of ours: last_event_id() ignores it.
MAX_LAST_EVENT_ID = 1024

T = TypeVar("T")
D = TypeVar("D")


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

    A sync source is read by a helper thread; it may yield ``IDLE`` while it
    waits, so that a closed stream stops it there. When the process already holds
    ``STREAMER_SSE_MAX_THREADS`` of them (streams' and closed streams' whose
    source has not returned yet), the answer is a 503 with ``Retry-After``.
    Under a thread-per-request (WSGI) server each feed holds a thread, so at
    most ``STREAMER_WSGI_MAX_FEEDS`` are served at once per process, then 503.
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
    if name is None:
        name = stream_name()
    try:  # before the thread budget: a refused feed takes nothing
        slot = cap.take_feed_slot(current_request.get(), name)
    except cap.Refused as refused:
        return cap.refuse(refused, name=name, source=events)
    try:
        return cap.hold(_feed(events, schedule, name, status, headers, compress), slot)
    except BaseException:
        if slot is not None:
            slot.release()
        raise


def _feed(
    events: object,
    schedule: Schedule,
    name: str,
    status: int,
    headers: Mapping[str, str] | None,
    compress: bool | None,
) -> StreamingResponse:
    source: SyncEvents | AsyncEvents
    if hasattr(events, "__iter__") and not isinstance(events, (str, bytes, Mapping)):
        if not SOURCE_THREADS.take(conf.STREAMER_SSE_MAX_THREADS):
            return _no_thread_left(name)
        # The helper thread may touch the database: close what it opened.
        source = SyncEvents(
            events,
            schedule=schedule,
            drain=process_drain,
            on_thread_end=connections.close_all,
            budget=SOURCE_THREADS,
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
    try:
        # No Content-Encoding unless compressed: Django's GZipMiddleware has no
        # other opt-out, and must not run over SSE (README, "Server-Sent Events").
        return stream_response(
            source,
            name=name,
            content_type="text/event-stream; charset=utf-8",
            flush_interval=0,
            status=status,
            headers=extra,
            compress=compress,
        )
    except BaseException:
        if isinstance(source, SyncEvents):
            source.close()  # gives its thread back to the budget
        raise


def _no_thread_left(name: str) -> StreamingResponse:
    limit = conf.STREAMER_SSE_MAX_THREADS
    logger.warning(
        "sse_response: %d SSE source threads in this process (STREAMER_SSE_MAX_THREADS); "
        "answering 503. A source blocked in a call keeps its thread after its stream "
        "closes: let it wake and yield IDLE every few seconds.",
        limit,
    )
    retry_after = conf.STREAMER_RETRY_AFTER
    return stream_response(
        iter(["Too many live event streams on this server; try again later.\n"]),
        name=name,
        content_type="text/plain; charset=utf-8",
        status=503,
        headers=None if retry_after is None else {"Retry-After": str(retry_after)},
    )


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


@overload
def last_event_id(request: HttpRequest) -> str | None: ...
@overload
def last_event_id(request: HttpRequest, *, default: D) -> str | D: ...
@overload
def last_event_id(request: HttpRequest, *, type: Callable[[str], T]) -> T | None: ...
@overload
def last_event_id(request: HttpRequest, *, type: Callable[[str], T], default: D) -> T | D: ...
def last_event_id(
    request: HttpRequest, *, type: Callable[[str], Any] | None = None, default: Any = None
) -> Any:
    """The ``Last-Event-ID`` a reconnecting ``EventSource`` sent, or ``default``.

    Browsers send it on reconnect; a client that cannot set headers may pass
    ``?lastEventId=`` instead. An empty value, one that is not UTF-8 or one
    over 1 KiB counts as none. With ``type`` (e.g. ``int``) the value is
    converted, and one it refuses (``ValueError``, ``TypeError``) gives
    ``default`` too: ``last_event_id(request, type=int, default=0)``.
    """
    header = request.headers.get("Last-Event-ID")
    value = _header_text(header) if header else request.GET.get("lastEventId") or None
    if value is None or len(value) > MAX_LAST_EVENT_ID:
        return default
    if type is None:
        return value
    try:
        return type(value)
    except (ValueError, TypeError, ArithmeticError):
        return default


def _header_text(value: str) -> str | None:
    # WSGI servers and Django's ASGI handler decode header bytes as latin-1;
    # browsers send the id as UTF-8.
    if len(value) > MAX_LAST_EVENT_ID:
        return None
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None
