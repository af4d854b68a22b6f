"""Whether this process is shutting down, and who wants to know. Plain Python, no Django.

A worker that is told to stop (gunicorn's graceful ``SIGTERM``, a ``HUP``
replacing it) *drains*: finite streams run on to their end, long-lived ones
(Server-Sent Events, live feeds) are asked to end cleanly, and limited views
refuse new requests. :mod:`django_streamer.drain_hooks` starts the drain from
the server's shutdown signal; streams ask :func:`draining` or register a
callback with :func:`on_drain`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Drain", "draining", "on_drain", "process_drain", "start_drain"]

logger = logging.getLogger("django_streamer")


class Drain:
    """One drain state: flags that only go up, and callbacks run once when it starts.

    ``started``: streams should end. ``refusing``: limited views refuse new
    requests too (not while the worker only recycles itself, see :meth:`start`).

    Callbacks run in the thread that called :meth:`start` (never inside a
    signal handler: see :mod:`django_streamer.drain_hooks`), so they must be
    quick and thread-safe, e.g. wake a stream up.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Read-only outside this class; plain attributes, so a check per
        # request costs one read.
        self.started = False  # streams should end
        self.refusing = False  # limited views refuse new requests (503)
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next_key = 0

    def draining(self) -> bool:
        return self.started

    def on_drain(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` when the drain starts (at once if it has).

        Returns a function that unregisters it; call it when the stream ends,
        so a long-lived worker does not collect callbacks.
        """
        with self._lock:
            if not self.started:
                key = self._next_key
                self._next_key += 1
                self._callbacks[key] = callback
                return lambda: self._forget(key)
        _run(callback)
        return _nothing

    def _forget(self, key: int) -> None:
        with self._lock:
            self._callbacks.pop(key, None)

    def start(self, *, refuse: bool = True) -> None:
        """Start the drain; later calls only turn refusing on.

        ``refuse=False`` for a worker that recycles itself (gunicorn's
        ``max_requests``): it decides so while accepting the request that
        trips the limit, which it still serves, so it must not refuse it.
        """
        with self._lock:
            if refuse:
                self.refusing = True
            if self.started:
                return
            self.started = True
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
        for callback in callbacks:
            _run(callback)


def _run(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:  # one broken listener must not keep the others running
        logger.exception("django-streamer: a drain callback failed")


def _nothing() -> None:
    pass


# The process's drain. Each forked worker inherits it unstarted (the master
# never starts it), so every worker drains on its own signal.
process_drain = Drain()


def draining() -> bool:
    """True once this process has started shutting down gracefully."""
    return process_drain.draining()


def on_drain(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback`` once when this process starts draining; returns an unregister function."""
    return process_drain.on_drain(callback)


def start_drain(*, refuse: bool = True) -> None:
    """Start draining this process (the server hooks call this)."""
    process_drain.start(refuse=refuse)
