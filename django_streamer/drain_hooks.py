"""Start the drain when the server begins a graceful shutdown.

gunicorn tells a worker to stop gracefully with ``SIGTERM`` (also what a
``HUP``, a deploy or ``gunicorn`` stopping sends to old workers); it then
waits ``graceful_timeout`` and kills it. No gunicorn hook runs at that
moment (``worker_int`` is ``SIGINT``/``SIGQUIT``, a quick exit;
``worker_exit`` runs after the streams were already cut), so
:func:`drain_on_sigterm`, called from ``post_worker_init``, chains the
worker's own ``SIGTERM`` handler: gunicorn stops accepting as before, and
this process's drain starts.

uvicorn stops on ``SIGTERM`` or ``SIGINT``: it closes its listeners and
waits for every open response to end (forever, unless
``--timeout-graceful-shutdown``); its ASGI lifespan ``shutdown`` comes only
after that, too late to end a stream. It installs its handlers after
importing the application (measured with uvicorn 0.54: ``SIG_DFL`` at import
time), so :class:`DrainOnSignals` wraps the application and chains them on
its first call, the lifespan startup, which runs in the main thread.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from .core.drain import start_drain

__all__ = ["DrainOnSignals", "chain_signal_handlers", "drain_on_sigterm"]


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
    chain_signal_handlers(signal.SIGTERM)


def chain_signal_handlers(*signums: int) -> None:
    """Drain on these signals, after the handler installed now has run.

    Call it from the main thread once the server has installed its own
    handlers (uvicorn installs them after importing the application:
    :class:`DrainOnSignals` calls this at the right moment).
    """
    for signum in signums:
        _chain(signum)


def _chain(signum: int) -> None:
    previous = signal.getsignal(signum)

    def handler(signum: int, frame: FrameType | None) -> None:
        if callable(previous):
            previous(signum, frame)
        # Not here: a signal handler runs between two bytecodes of the main
        # thread (the request thread of a sync worker), which may hold a lock
        # a drain callback needs. A thread takes the locks like any other.
        threading.Thread(target=start_drain, name="django-streamer-drain", daemon=True).start()

    signal.signal(signum, handler)
    signal.siginterrupt(signum, False)  # as gunicorn sets it for SIGTERM


class DrainOnSignals:
    """An ASGI application that drains this process on uvicorn's stop signals.

    ``application = DrainOnSignals(get_asgi_application())`` in ``asgi.py``.
    """

    def __init__(
        self, app: Any, signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)
    ) -> None:
        self.app = app
        self.signums = signums
        self._installed = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not self._installed and threading.current_thread() is threading.main_thread():
            self._installed = True
            chain_signal_handlers(*self.signums)
        await self.app(scope, receive, send)
