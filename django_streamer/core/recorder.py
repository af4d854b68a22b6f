"""The per-stream recorder seam.

A :class:`~django_streamer.core.stream.Stream` calls its recorders once when it
starts, once per chunk put on the wire (never per yielded item; compressed
streams also report the body bytes that went into the compressor) and exactly
once when it finishes, with an :class:`Outcome`. The limiter and the metrics
registry plug in here.
"""

from __future__ import annotations

import enum
import logging

logger = logging.getLogger("django_streamer")

# The (recorder class, error class) pairs already logged: a recorder that
# fails on every stream is logged once, not once per request.
_logged: set[tuple[type, type]] = set()


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

    # No instance dict of its own: a subclass that declares ``__slots__`` has none.
    __slots__ = ()

    def start(self) -> None:
        """The stream was created (the view returned it)."""

    def chunk(self, nbytes: int) -> None:
        """``nbytes`` were handed to the server as one chunk."""

    def uncompressed(self, nbytes: int) -> None:
        """``nbytes`` of body went into the compressor (compressed streams only).

        Called per chunk, before the ``chunk()`` calls for what came out, so a
        recorder can relate body bytes to wire bytes.
        """

    def finish(self, outcome: Outcome) -> None:
        """Called exactly once, however the stream ended."""


def _class_listens(cls: type) -> tuple[bool, bool, bool]:
    """Whether ``cls`` overrides ``chunk`` and ``uncompressed``, and whether its
    instances have a ``__dict__`` (where a method may be set per instance).

    Only StreamRecorder's own no-op counts as not listening: a class that
    lacks the method (a test double) listens.
    """
    return (
        getattr(cls, "chunk", None) is not StreamRecorder.chunk,
        getattr(cls, "uncompressed", None) is not StreamRecorder.uncompressed,
        cls.__dictoffset__ != 0,
    )


# Per recorder class, what _class_listens() says: streams add the same few
# classes over and over. Bounded: a Mock is a class of its own.
_class_listening: dict[type, tuple[bool, bool, bool]] = {}


class Recorders(StreamRecorder):
    """Fans each event out to several recorders."""

    __slots__ = ("_chunk", "_uncompressed", "recorders")

    def __init__(self, recorders: list[StreamRecorder] | None = None) -> None:
        self.recorders: list[StreamRecorder] = []
        # The per-chunk events go only to recorders that override them: a
        # limiter slot hears nothing but the end, and costs nothing per chunk.
        self._chunk: list[StreamRecorder] = []
        self._uncompressed: list[StreamRecorder] = []
        for recorder in recorders or ():
            self.add(recorder)

    def add(self, recorder: StreamRecorder) -> None:
        self.recorders.append(recorder)
        cls = type(recorder)  # not __class__, which a Mock(spec=...) fakes
        found = _class_listening.get(cls)
        if found is None:
            if len(_class_listening) >= 256:
                _class_listening.clear()
            found = _class_listening[cls] = _class_listens(cls)
        chunk, uncompressed, per_instance = found
        if per_instance:  # a method set on the instance listens too
            own = recorder.__dict__
            chunk = chunk or "chunk" in own
            uncompressed = uncompressed or "uncompressed" in own
        if chunk:
            self._chunk.append(recorder)
        if uncompressed:
            self._uncompressed.append(recorder)

    def start(self) -> None:
        for recorder in self.recorders:
            recorder.start()

    def chunk(self, nbytes: int) -> None:
        for recorder in self._chunk:
            recorder.chunk(nbytes)

    def uncompressed(self, nbytes: int) -> None:
        for recorder in self._uncompressed:
            recorder.uncompressed(nbytes)

    def finish(self, outcome: Outcome) -> None:
        """Tell every recorder; one that raises is logged, never raised.

        It runs in the driver's ``finally``: raising there would turn a
        stream that completed on the wire into a failure, and keep the
        recorders after it (a limiter slot) from hearing the end.
        """
        for recorder in self.recorders:
            try:
                recorder.finish(outcome)
            except Exception as exc:
                cause = (type(recorder), type(exc))
                if cause not in _logged:
                    _logged.add(cause)
                    logger.exception(
                        "Recorder %s raised in finish(%s); logged once per cause, "
                        "the stream's outcome stands",
                        type(recorder).__qualname__,
                        outcome.value,
                    )
