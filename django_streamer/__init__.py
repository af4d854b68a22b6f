"""Fast, bounded and observable streaming responses for Django."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "IDLE",
    "Adaptive",
    "Event",
    "Outcome",
    "Rejection",
    "StreamClosed",
    "StreamRecorder",
    "StreamSourceError",
    "StreamingResponse",
    "draining",
    "last_event_id",
    "limit_concurrency",
    "sse_response",
    "stream_csv",
    "stream_json_array",
    "stream_jsonl",
    "stream_response",
    "stream_writer",
    "stream_zip",
]

if TYPE_CHECKING:
    from .archive import stream_zip
    from .core.chunking import StreamSourceError
    from .core.drain import draining
    from .core.recorder import Outcome, StreamRecorder
    from .core.sse.events import IDLE, Event
    from .core.writer.handoff import StreamClosed
    from .decorators import Adaptive, Rejection, limit_concurrency
    from .formats import stream_csv, stream_json_array, stream_jsonl
    from .response import StreamingResponse, stream_response
    from .sse import last_event_id, sse_response
    from .writer import stream_writer

_LAZY = {
    "Event": "django_streamer.core.sse.events",
    "IDLE": "django_streamer.core.sse.events",
    "draining": "django_streamer.core.drain",
    "last_event_id": "django_streamer.sse",
    "sse_response": "django_streamer.sse",
    "Outcome": "django_streamer.core.recorder",
    "StreamRecorder": "django_streamer.core.recorder",
    "StreamSourceError": "django_streamer.core.chunking",
    "Rejection": "django_streamer.decorators",
    "limit_concurrency": "django_streamer.decorators",
    "Adaptive": "django_streamer.decorators",
    "StreamingResponse": "django_streamer.response",
    "stream_response": "django_streamer.response",
    "StreamClosed": "django_streamer.core.writer.handoff",
    "stream_writer": "django_streamer.writer",
    "stream_csv": "django_streamer.formats",
    "stream_jsonl": "django_streamer.formats",
    "stream_json_array": "django_streamer.formats",
    "stream_zip": "django_streamer.archive",
}


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the plain-Python core never imports Django.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'django_streamer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
