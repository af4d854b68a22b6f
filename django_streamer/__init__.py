"""Fast, bounded and observable streaming responses for Django."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "Outcome",
    "Rejection",
    "StreamRecorder",
    "StreamSourceError",
    "StreamingResponse",
    "limit_concurrency",
    "stream_response",
]

if TYPE_CHECKING:
    from .core.chunking import StreamSourceError
    from .core.recorder import Outcome, StreamRecorder
    from .decorators import Rejection, limit_concurrency
    from .response import StreamingResponse, stream_response

_LAZY = {
    "Outcome": "django_streamer.core.recorder",
    "StreamRecorder": "django_streamer.core.recorder",
    "StreamSourceError": "django_streamer.core.chunking",
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


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
