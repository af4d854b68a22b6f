"""Start the drain when the server begins a graceful shutdown.

gunicorn tells a worker to stop gracefully with ``SIGTERM`` (also what a
``HUP``, a deploy or ``gunicorn`` stopping sends to old workers); it then
waits ``graceful_timeout`` and kills it. No gunicorn hook runs at that
moment (``worker_int`` is ``SIGINT``/``SIGQUIT``, a quick exit;
``worker_exit`` runs after the streams were already cut), so
:func:`drain_on_sigterm`, called from ``post_worker_init``, chains the
worker's own ``SIGTERM`` handler: gunicorn stops accepting as before, and
this process's drain starts.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from .core.drain import start_drain

__all__ = ["drain_on_sigterm"]


def drain_on_sigterm(worker: Any) -> None:
    """Make this gunicorn worker drain on ``SIGTERM``, after its own handling."""
    loop = getattr(worker, "loop", None)
    handle = getattr(worker, "handle_exit_signal", None)
    if loop is not None and handle is not None:
        # gunicorn's asgi worker takes signals through its event loop.
        def on_sigterm() -> None:
            handle()
            start_drain()

        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> None:
        if callable(previous):
            previous(signum, frame)
        # Not here: a signal handler runs between two bytecodes of the main
        # thread (the request thread of a sync worker), which may hold a lock
        # a drain callback needs. A thread takes the locks like any other.
        threading.Thread(target=start_drain, name="django-streamer-drain", daemon=True).start()

    signal.signal(signal.SIGTERM, handler)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn sets it
