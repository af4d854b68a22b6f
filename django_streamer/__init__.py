"""Fast, bounded and observable streaming responses for Django."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Outcome", "StreamingResponse", "stream_response"]

if TYPE_CHECKING:
    from .core.recorder import Outcome
    from .response import StreamingResponse, stream_response

_LAZY = {
    "Outcome": "django_streamer.core.recorder",
    "StreamingResponse": "django_streamer.response",
    "stream_response": "django_streamer.response",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the plain-Python core never imports Django.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'django_streamer' has no attribute {name!r}")
