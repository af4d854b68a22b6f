"""The per-stream recorder seam.

A :class:`~django_streamer.core.stream.Stream` calls its recorders once when it
starts, once per chunk put on the wire (never per yielded item) and exactly
once when it finishes, with an :class:`Outcome`. The limiter and the metrics
registry plug in here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable


class Outcome(str, enum.Enum):
    COMPLETED = "completed"
    ABORTED = "aborted"  # the client went away, or the server closed the stream early
    FAILED = "failed"  # the source raised
    # Never passed to finish(): the metrics store counts a stream as lost when
    # its process died while it was active (SIGKILL, graceful timeout).
    LOST = "lost"
    DRAINED = "drained"  # ended cleanly because the worker was shutting down

    def __str__(self) -> str:
        return self.value


class StreamRecorder:
    """A recorder that records nothing. Subclass it and override what you need."""

    def start(self) -> None:
        """The stream was created (the view returned it)."""

    def chunk(self, nbytes: int) -> None:
        """``nbytes`` were handed to the server as one chunk."""

    def uncompressed(self, nbytes: int) -> None:
        """``nbytes`` of the source went into compression for the chunks put on the wire.

        Called by the compression stage only, per compressed chunk, beside
        :meth:`chunk` (which gets the compressed size).
        """

    def finish(self, outcome: Outcome) -> None:
        """Called exactly once, however the stream ended."""


class Recorders(StreamRecorder):
    """Fans each event out to several recorders."""

    def __init__(self, recorders: list[StreamRecorder] | None = None) -> None:
        self.recorders: list[StreamRecorder] = list(recorders or [])

    def add(self, recorder: StreamRecorder) -> None:
        self.recorders.append(recorder)

    def chunk_callback(self) -> Callable[[int], None] | None:
        """What to call per chunk: nothing, the one recorder, or the fan-out."""
        if not self.recorders:
            return None
        if len(self.recorders) == 1:
            return self.recorders[0].chunk
        return self.chunk

    def start(self) -> None:
        for recorder in self.recorders:
            recorder.start()

    def chunk(self, nbytes: int) -> None:
        for recorder in self.recorders:
            recorder.chunk(nbytes)

    def uncompressed(self, nbytes: int) -> None:
        for recorder in self.recorders:
            recorder.uncompressed(nbytes)

    def finish(self, outcome: Outcome) -> None:
        errors: list[Exception] = []
        for recorder in self.recorders:
            try:
                recorder.finish(outcome)
            except Exception as exc:  # one broken recorder must not keep a slot held
                errors.append(exc)
        if errors:
            raise errors[0]
