"""The one extension point: what plugs into every stream and every pool.

The metrics registry registers itself here in ``AppConfig.ready()``; a project
can register its own (tracing, audit logs) the same way::

    from django_streamer.extensions import extensions

    extensions.add_stream_recorder(lambda stream: MyRecorder(stream.name))
    extensions.add_limiter_recorder(MyPoolRecorder())

A stream recorder factory is called with each new
:class:`~django_streamer.core.stream.Stream` and may return a
:class:`~django_streamer.core.recorder.StreamRecorder` to attach (or None). A
limiter recorder (:class:`~django_streamer.slots.LimiterRecorder`) hears every
admission, rejection and release. The registrations are tuples, replaced
whole, so the per-request loops read them without a lock; tests use
``reset()`` or ``monkeypatch.setattr(extensions, "limiter_recorders", (...))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core.recorder import StreamRecorder
    from .core.stream import Stream
    from .slots import LimiterRecorder

__all__ = ["Extensions", "extensions"]

StreamRecorderFactory = Callable[["Stream"], "StreamRecorder | None"]


class Extensions:
    stream_recorder_factories: tuple[StreamRecorderFactory, ...]
    limiter_recorders: tuple[LimiterRecorder, ...]

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every registration (for tests)."""
        self.stream_recorder_factories = ()
        self.limiter_recorders = ()

    def add_stream_recorder(self, factory: StreamRecorderFactory) -> None:
        """Call ``factory(stream)`` for every new stream. Adding one twice adds it once."""
        if factory not in self.stream_recorder_factories:
            self.stream_recorder_factories = (*self.stream_recorder_factories, factory)

    def add_limiter_recorder(self, recorder: LimiterRecorder) -> None:
        """Tell ``recorder`` of every admission, rejection and release. Once per object."""
        if recorder not in self.limiter_recorders:
            self.limiter_recorders = (*self.limiter_recorders, recorder)


extensions = Extensions()
