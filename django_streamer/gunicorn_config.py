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

The hooks work when ``DJANGO_SETTINGS_MODULE`` is set only in ``wsgi.py`` (as
``startproject`` does): each worker tells the arbiter the module. If your own
config file defines ``on_starting`` or ``post_worker_init``, call ours from it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import Any

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


class _SettingsNote:
    """How workers tell the arbiter their ``DJANGO_SETTINGS_MODULE``.

    A ``startproject`` sets it in ``wsgi.py``, which only the workers import
    (without ``--preload``), so the arbiter's ``child_exit`` would not know the
    project's settings. The note is an anonymous file (no name anyone could
    make first) that the arbiter opens before forking and every worker inherits.
    """

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 (open for the arbiter's life)

    def write(self, module: str) -> None:
        os.pwrite(self.file.fileno(), module.encode() + b"\n", 0)

    def read(self) -> str | None:
        data = os.pread(self.file.fileno(), 4096, 0)
        module = data.split(b"\n", 1)[0].decode()
        return module or None


_note: _SettingsNote | None = None


def on_starting(server: object) -> None:
    """In the arbiter, before any worker: open the note the workers write their settings to."""
    global _note
    if _note is None:
        _note = _SettingsNote()


def _settings_known() -> bool:
    """Whether Django's settings can be read here, taking a worker's note if need be."""
    from django.conf import settings

    if os.environ.get("DJANGO_SETTINGS_MODULE") or settings.configured:
        return True
    module = _note.read() if _note is not None else None
    if module is None:
        return False
    os.environ["DJANGO_SETTINGS_MODULE"] = module
    return True


def child_exit(server: object, worker: object) -> None:
    """Fold the metrics file of a worker that exited (recycled, killed) at once.

    Readers and new workers do this too; the hook keeps the directory at one
    file per live worker even when nothing reads the metrics for a long time.
    The arbiter never waits here (a reader holding the directory lock means
    the fold is left to it) and never writes through a mapping: folding reads
    and writes files with plain calls, so a full disk is an error, not SIGBUS.
    """
    try:
        if not _settings_known():
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
        if not _settings_known():
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
    Also tells the arbiter the settings module, and warns (W005) if the drain's
    spread is not shorter than the real ``graceful_timeout``, and (W010, W012)
    if the stream caps do not fit the worker's real threads or connections.
    """
    from django_streamer.drain_hooks import (
        drain_on_recycle,
        drain_on_sigterm,
        warn_if_spread_too_long,
    )

    module = os.environ.get("DJANGO_SETTINGS_MODULE")  # set by now: the app is loaded
    if _note is not None and module:
        _note.write(module)
    drain_on_sigterm(worker)
    drain_on_recycle(worker)
    _warn_on_settings(worker, warn_if_spread_too_long)
    _warn_on_settings(worker, _warn_about_caps)
    _start_fleet_publisher(worker)


def _warn_about_caps(worker: Any) -> None:
    from django_streamer.cap import warn_at_worker_start

    warn_at_worker_start(worker)


def _warn_on_settings(worker: object, check: Callable[[Any], object]) -> None:
    try:
        check(worker)
    except Exception as exc:  # a bad value: the first request that reads it says so too
        log = getattr(worker, "log", None)
        if log is not None:
            log.warning("django-streamer: %s", exc)


def _start_fleet_publisher(worker: object) -> None:
    """With STREAMER_FLEET on, list this host in the fleet view from its first second."""
    try:
        from django_streamer.metrics.fleet import publisher

        publisher.start_once()
    except Exception as exc:  # a worker must boot even if the settings are wrong
        log = getattr(worker, "log", None)
        if log is not None:
            log.warning("django-streamer: the fleet publisher did not start: %s", exc)
