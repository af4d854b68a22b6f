"""The caps every stream counts toward, whatever its view.

``STREAMER_MAX_STREAMS`` caps all the streams ``stream_response()`` (and so
every factory over it) serves at once, at ``STREAMER_MAX_STREAMS_SCOPE``: a
pool named ``streams``. ``STREAMER_WSGI_MAX_FEEDS`` caps the SSE feeds one
process serves under a thread-per-request (WSGI) server, where each feed holds
a thread for its whole life: a pool named ``feeds``. Both are limiter pools,
so their use and refusals show in Prometheus and on the dashboard like any
``@limit_concurrency`` pool, and a slot lives as long as its stream.

A stream over a cap gets a 503 with ``Retry-After`` before its source starts
(see ``docs/limiting.md``, *The stream cap*).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpRequest

from . import cluster
from .conf import conf
from .core.limiter import Pool
from .pools import backend_for
from .rejection import Rejection
from .response import StreamingResponse, refusal_response
from .slots import Slot, hold_until_done, tell_rejected

__all__ = [
    "FEEDS_POOL",
    "STREAMS_POOL",
    "Refused",
    "hold",
    "refuse",
    "take_feed_slot",
    "take_stream_slot",
    "warn_at_worker_start",
]

logger = logging.getLogger("django_streamer")

STREAMS_POOL = "streams"
FEEDS_POOL = "feeds"

_lock = threading.Lock()
# One pool per (name, scope, backend, limit): override_settings may change a limit.
_pools: dict[tuple[str, str, int, int], Pool] = {}
_feed_warned = threading.Event()


class Refused(Exception):
    """A cap is full: ``pool`` at ``limit``."""

    def __init__(self, pool: Pool, what: str) -> None:
        super().__init__(f"{what} is full ({pool.limit} streams)")
        self.pool = pool
        self.what = what


def _pool(name: str, scope: str, limit: int) -> Pool:
    backend = backend_for(scope)
    where = (name, scope, id(backend), limit)  # backends live as long as the process
    with _lock:
        pool = _pools.get(where)
        if pool is None:
            pool = _pools[where] = Pool(name=name, limit=limit, backend=backend, lease_class=Slot)
        return pool


def take_stream_slot() -> Slot | None:
    """A slot of the site-wide cap (None: no cap); raises :class:`Refused` when full."""
    limit = conf.STREAMER_MAX_STREAMS
    if limit is None:
        return None
    scope = conf.STREAMER_MAX_STREAMS_SCOPE
    pool = _pool(STREAMS_POOL, scope, limit)
    # Cluster: one Redis round trip, no waiting.
    slot = cluster.acquire(pool, "", timeout=0.0) if scope == "cluster" else pool.try_acquire("")
    if slot is None:
        raise Refused(pool, "STREAMER_MAX_STREAMS")
    return slot  # type: ignore[return-value]  # the pool makes Slots


def take_feed_slot(request: HttpRequest | None, name: str) -> Slot | None:
    """A slot of this process's feed cap when ``request`` holds a server thread.

    None when the server is not thread-per-request (ASGI) or the cap is off;
    raises :class:`Refused` when full.
    """
    limit = conf.STREAMER_WSGI_MAX_FEEDS
    if limit is None or not isinstance(request, WSGIRequest):
        return None
    if not _feed_warned.is_set():
        _feed_warned.set()
        logger.warning(
            "django_streamer.W011: SSE feed %r is served by a thread-per-request (WSGI) "
            "server: each feed holds a thread for its life, so at most %d at once per "
            "process (STREAMER_WSGI_MAX_FEEDS). Serve feeds from an ASGI worker.",
            name,
            limit,
        )
    pool = _pool(FEEDS_POOL, "process", limit)
    slot = pool.try_acquire("")
    if slot is None:
        raise Refused(pool, "STREAMER_WSGI_MAX_FEEDS")
    return slot  # type: ignore[return-value]  # the pool makes Slots


def hold(response: StreamingResponse, slot: Slot | None) -> StreamingResponse:
    """Keep ``slot`` until ``response``'s stream is done."""
    if slot is not None:
        hold_until_done(response, slot)
    return response


def refuse(refused: Refused, *, name: str, source: object = None) -> StreamingResponse:
    """The 503 for a full cap; ``source`` is closed unstarted (no query, no thread)."""
    close = getattr(source, "close", None)
    if callable(close):
        close()  # a generator never started, a writer's or feed's thread never made
    retry_after = conf.STREAMER_RETRY_AFTER or 1  # a server condition: always say when
    pool = refused.pool
    rejection = Rejection(
        pool=pool.name, key="", limit=pool.limit, status=503, retry_after=retry_after, waited=0.0
    )
    tell_rejected(pool, rejection)
    logger.info("Stream %r refused: %s", name, refused)
    return refusal_response(
        "Too many streams on this server; try again later.\n", name=name, retry_after=retry_after
    )


# -- at gunicorn worker start (gunicorn_config.post_worker_init) -----------------


def warn_at_worker_start(worker: Any) -> list[str]:
    """Log W010 and W012 against the worker's real configuration; return their ids."""
    from django.conf import settings

    cfg = worker.cfg
    threaded = cfg.worker_class_str in ("sync", "gthread")
    per_worker = (cfg.threads if cfg.worker_class_str == "gthread" else 1) if threaded else None
    # gunicorn's asgi worker counts its connections but does not stop at
    # worker_connections (gunicorn 27, workers/gasgi.py): its capacity is unknown.
    if per_worker is None and cfg.worker_class_str in ("gevent", "eventlet"):
        per_worker = cfg.worker_connections
    said: list[str] = []
    cap, scope = conf.STREAMER_MAX_STREAMS, conf.STREAMER_MAX_STREAMS_SCOPE
    capacity = None
    if per_worker is not None and scope != "cluster":
        capacity = per_worker * (cfg.workers if scope == "host" else 1)
    # The default is above every thread-per-request server's capacity on purpose
    # (its threads cap streams first): only a value someone set is worth a word.
    if hasattr(settings, "STREAMER_MAX_STREAMS") and cap and capacity and cap > capacity:
        worker.log.warning(
            "django_streamer.W010: STREAMER_MAX_STREAMS (%d, %s scope) is above what this "
            "server serves at once (%d): the server's own limit answers first. Lower it to "
            "at most %d.",
            cap,
            scope,
            capacity,
            capacity,
        )
        said.append("W010")
    feeds = conf.STREAMER_WSGI_MAX_FEEDS
    if threaded and feeds is not None and per_worker is not None and feeds >= per_worker:
        worker.log.warning(
            "django_streamer.W012: STREAMER_WSGI_MAX_FEEDS (%d) leaves none of this worker's "
            "%d thread(s) to other requests while feeds are open. Lower it, or serve feeds "
            "from the asgi worker.",
            feeds,
            per_worker,
        )
        said.append("W012")
    return said
