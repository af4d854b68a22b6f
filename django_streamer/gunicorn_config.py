"""A gunicorn configuration suited to long streams.

Use it as it is::

    gunicorn -c python:django_streamer.gunicorn_config myproject.wsgi

or import from it in your own config file (``from django_streamer.gunicorn_config
import *``) and override what you need. Environment variables tune the common
knobs: ``GUNICORN_BIND``, ``WEB_CONCURRENCY`` (processes),
``GUNICORN_WORKER_CLASS`` (``gthread``, or ``asgi`` for an ASGI project),
``GUNICORN_THREADS`` (gthread) and ``GUNICORN_WORKER_CONNECTIONS`` (asgi).

Why gthread and not the default sync worker: a sync worker can only tell the
arbiter it is alive between requests, so any stream longer than ``timeout``
(30 s by default) gets the worker SIGKILLed mid-stream. A gthread worker's main
loop keeps notifying while threads stream, so ``timeout`` only catches a worker
that is truly stuck. For an ASGI project, set ``worker_class = "asgi"``.
"""

from __future__ import annotations

import contextlib
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
workers = int(os.environ.get("WEB_CONCURRENCY", str(min(4, (os.cpu_count() or 1) * 2))))
timeout = 30
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5

# Set only what the chosen worker class reads: gunicorn warns about the rest
# (the asgi worker logs "does not use threads configuration" for threads > 1).
if worker_class == "gthread":
    # Each thread serves one stream at a time: this is the per-worker stream capacity.
    threads = int(os.environ.get("GUNICORN_THREADS", "16"))
elif worker_class in ("asgi", "gevent", "eventlet"):
    # One event loop per worker; this caps its concurrent connections (streams).
    worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
if worker_class == "asgi":
    # Django's ASGI handler refuses the lifespan protocol; don't offer it.
    asgi_lifespan = "off"


def child_exit(server: object, worker: object) -> None:
    """Fold the metrics file of a worker that exited (recycled, killed) at once.

    Readers and new workers do this too; the hook keeps the directory at one
    file per live worker even when nothing reads the metrics for a long time.
    The arbiter never waits here (a reader holding the directory lock means
    the fold is left to it) and never writes through a mapping: folding reads
    and writes files with plain calls, so a full disk is an error, not SIGBUS.
    """
    try:
        from django.conf import settings

        if not os.environ.get("DJANGO_SETTINGS_MODULE") and not settings.configured:
            return
        from django_streamer.metrics import get_store

        with contextlib.suppress(BlockingIOError):
            get_store().compact(blocking=False)
    except Exception as exc:  # the arbiter must never die for metrics
        log = getattr(server, "log", None)
        if log is not None:
            log.warning("django-streamer: could not fold a dead worker's metrics: %s", exc)
    _release_cluster_slots(server, getattr(worker, "pid", 0))


def _release_cluster_slots(server: object, pid: int) -> None:
    """Give back a dead worker's cluster-scope slots now, not when its leases expire."""
    try:
        from django.conf import settings

        if not os.environ.get("DJANGO_SETTINGS_MODULE") and not settings.configured:
            return
        from django_streamer.cluster import release_dead_worker

        release_dead_worker(pid)
    except Exception as exc:  # Redis away: the leases expire on their own
        log = getattr(server, "log", None)
        if log is not None:
            log.warning("django-streamer: could not release a dead worker's slots: %s", exc)


def post_worker_init(worker: object) -> None:
    """Drain on SIGTERM: long-lived streams end cleanly, limited views refuse new requests.

    And when the worker recycles itself (``max_requests``): streams end cleanly.
    """
    from django_streamer.drain_hooks import drain_on_recycle, drain_on_sigterm

    drain_on_sigterm(worker)
    drain_on_recycle(worker)
    _start_fleet_publisher(worker)


def _start_fleet_publisher(worker: object) -> None:
    """With STREAMER_FLEET on, list this host in the fleet view from its first second."""
    try:
        from django_streamer.metrics.fleet import publisher

        publisher.start_once()
    except Exception as exc:  # a worker must boot even if the settings are wrong
        log = getattr(worker, "log", None)
        if log is not None:
            log.warning("django-streamer: the fleet publisher did not start: %s", exc)
