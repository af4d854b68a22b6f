"""Fast, bounded and observable streaming responses for Django."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Event",
    "Outcome",
    "Rejection",
    "StreamingResponse",
    "draining",
    "last_event_id",
    "limit_concurrency",
    "sse_response",
    "stream_response",
]

if TYPE_CHECKING:
    from .core.drain import draining
    from .core.recorder import Outcome
    from .core.sse import Event
    from .decorators import Rejection, limit_concurrency
    from .response import StreamingResponse, stream_response
    from .sse import last_event_id, sse_response

_LAZY = {
    "Event": "django_streamer.core.sse",
    "draining": "django_streamer.core.drain",
    "last_event_id": "django_streamer.sse",
    "sse_response": "django_streamer.sse",
    "Outcome": "django_streamer.core.recorder",
    "Rejection": "django_streamer.decorators",
    "limit_concurrency": "django_streamer.decorators",
    "StreamingResponse": "django_streamer.response",
    "stream_response": "django_streamer.response",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the plain-Python core never imports Django.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'django_streamer' has no attribute {name!r}")
