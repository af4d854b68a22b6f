"""Start the drain when the server begins a graceful shutdown.

gunicorn tells a worker to stop gracefully with ``SIGTERM`` (also what a
``HUP``, a deploy or ``gunicorn`` stopping sends to old workers); it then
waits ``graceful_timeout`` and kills it. No gunicorn hook runs at that
moment (``worker_int`` is ``SIGINT``/``SIGQUIT``, a quick exit;
``worker_exit`` runs after the streams were already cut), so
:func:`drain_on_sigterm`, called from ``post_worker_init``, chains the
worker's own ``SIGTERM`` handler: gunicorn stops accepting as before, and
this process's drain starts.

A worker also stops itself after ``max_requests`` (gunicorn's recycling): it
sets ``worker.alive = False``, with no signal and no hook (gunicorn 27: the
sync and gthread workers while accepting the request that trips the limit,
the asgi worker after serving it). :func:`drain_on_recycle` sees that
assignment and drains without refusing: the worker still serves the request
that tripped it, and accepts no new connection anyway.

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
import sys
import threading
from types import FrameType
from typing import Any

from .core.drain import start_drain

__all__ = [
    "DrainOnSignals",
    "chain_signal_handlers",
    "drain_on_recycle",
    "drain_on_sigterm",
    "warn_if_spread_too_long",
]


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


def warn_if_spread_too_long(worker: Any) -> bool:
    """Log warning W005 if the drain may outlast gunicorn's real ``graceful_timeout``.

    Checked in the worker, where the arbiter's configuration is known: a
    system check only sees the environment of the process running ``check``.
    """
    from .conf import conf

    spread = conf.STREAMER_DRAIN_SPREAD
    graceful = worker.cfg.graceful_timeout
    if spread < graceful:
        return False
    worker.log.warning(
        "django_streamer.W005: STREAMER_DRAIN_SPREAD (%s s) is not shorter than gunicorn's "
        "graceful_timeout (%s s): draining SSE streams may be killed mid-way. Lower the "
        "setting or raise graceful_timeout (GUNICORN_GRACEFUL_TIMEOUT with "
        "django_streamer.gunicorn_config).",
        spread,
        graceful,
    )
    return True


def drain_on_recycle(worker: Any) -> None:
    """Make this gunicorn worker drain when it recycles itself (``max_requests``).

    The worker's class is swapped for a subclass whose ``alive`` attribute is
    a descriptor: gunicorn reads and writes it as before, and the write that
    stops a worker past ``max_requests`` starts the drain.
    """
    cls = type(worker)
    if not isinstance(cls.__dict__.get("alive"), _Alive):
        worker.__class__ = _recycling(cls)


class _Alive:
    """``worker.alive``, stored where gunicorn stored it; going False past max_requests drains."""

    def __get__(self, worker: Any, owner: type | None = None) -> Any:
        if worker is None:
            return self
        return worker.__dict__.get("alive", False)

    def __set__(self, worker: Any, value: Any) -> None:
        was = worker.__dict__.get("alive", False)
        worker.__dict__["alive"] = value
        if was and not value and _past_max_requests(worker):
            # In a thread: a stop signal may also set this, inside its handler.
            name = "django-streamer-drain"
            threading.Thread(target=_recycle_drain, name=name, daemon=True).start()


def _past_max_requests(worker: Any) -> bool:
    # gunicorn sets max_requests to sys.maxsize when recycling is off.
    return bool(getattr(worker, "nr", 0) >= getattr(worker, "max_requests", sys.maxsize))


def _recycle_drain() -> None:
    start_drain(refuse=False)


_recycling_classes: dict[type, type] = {}


def _recycling(cls: type) -> type:
    sub = _recycling_classes.get(cls)
    if sub is None:
        sub = type(cls.__name__, (cls,), {"alive": _Alive(), "__module__": cls.__module__})
        _recycling_classes[cls] = sub
    return sub


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
