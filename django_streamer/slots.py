"""How long a limiter slot lives: from admission until the response is done.

Limiters that release at view return do not limit streams at all: the view
returns before the first byte is sent. A slot here is released when the
response is done: the stream completed, failed or was aborted, or the server
closed the response (for any response, streaming or not). Should the response
never be closed (a middleware raised after the view returned, or replaced the
response), the slot is released when the request ends: Django's
``request_finished``, sent when the handler's final response closes.
"""

from __future__ import annotations

import contextvars
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

from django.http import StreamingHttpResponse
from django.http.response import HttpResponseBase

from .core.limiter import Lease, Pool, PoolLease
from .core.recorder import Outcome, StreamRecorder
from .core.stream import Stream
from .extensions import extensions
from .rejection import Rejection
from .response import StreamingResponse

__all__ = [
    "LimiterRecorder",
    "Slot",
    "hold_until_done",
    "release_leftovers",
    "tell_rejected",
]


class LimiterRecorder:
    """Receives limiter events; the metrics registry subclasses it."""

    def admitted(self, pool: Pool, lease: PoolLease) -> None:
        """A request got a slot after waiting ``lease.waited`` seconds."""

    def rejected(self, pool: Pool, rejection: Rejection) -> None:
        """A request was turned away."""

    def released(self, pool: Pool, lease: PoolLease) -> None:
        """A slot was given back."""


# The slots taken in this request (a WSGI thread's, or an ASGI request task's,
# context), by id. Weak, so a dropped response is still freed when collected.
# A plain dict of weak references without callbacks: a ``WeakSet`` cost ~1 us
# per request in Python-level add and discard. A slot takes itself out when it
# releases; ``release_leftovers`` empties the dict at the end of each request,
# so references of slots released some other way do not pile up.
_open: contextvars.ContextVar[dict[int, weakref.ref[Slot]] | None] = contextvars.ContextVar(
    "django_streamer_open_slots", default=None
)


class Slot(PoolLease, StreamRecorder):
    """A pool's lease, held until the stream finishes, the response closes or the request ends.

    The Django layer's pools make their leases of this class (``get_pool``),
    so an admission is one object. Made at admission: the limiter recorders
    hear of it; one that raises frees the slot again and the error propagates.
    """

    __slots__ = ("__weakref__", "_slots", "stream")

    def __init__(self, pool: Pool, key: str, inner: Lease, waited: float) -> None:
        PoolLease.__init__(self, pool, key, inner, waited)
        # Weak: the stream holds this slot among its recorders already.
        self.stream: weakref.ref[Stream] | None = None
        slots = _open.get()
        if slots is None:
            slots = {}
            _open.set(slots)
        slots[id(self)] = weakref.ref(self)
        self._slots = slots
        try:
            for recorder in extensions.limiter_recorders:
                recorder.admitted(pool, self)
        except BaseException:
            self.release()
            raise

    def release(self, outcome: Outcome | None = None) -> bool:
        """Give the slot back; True for the one call that did (later calls do
        nothing). ``outcome`` is unused.
        """
        # Unlocked peek: released up to three times per request (the stream's
        # end, the response's close, the request's end); only the first counts.
        if self.released or not PoolLease.release(self):  # one of two racing threads
            return False
        self._slots.pop(id(self), None)
        for recorder in extensions.limiter_recorders:
            recorder.released(self.pool, self)
        return True

    # The stream's end (whatever its outcome) releases the slot; the stream
    # ignores the bool.
    finish = release  # type: ignore[assignment]

    def abort(self) -> None:
        """The request ended with this slot held: end its stream too (as aborted)."""
        stream = self.stream() if self.stream is not None else None
        if stream is not None:
            stream.close()
        self.release()

    def __del__(self) -> None:
        # Last resort, should the response be dropped outside any request.
        if not self.released:
            self.release()


def tell_rejected(pool: Pool, rejection: Rejection) -> None:
    for recorder in extensions.limiter_recorders:
        recorder.rejected(pool, rejection)


def release_leftovers(sender: object, **kwargs: Any) -> None:
    """``request_finished`` receiver: free the slots this request still holds.

    ``sender`` is the handler class; a response closed outside a handler (a
    test's RequestFactory, a view closing its own) sends None and is not the
    end of a request.
    """
    if sender is None:
        return
    slots = _open.get()
    if slots:
        for ref in list(slots.values()):
            slot = ref()
            if slot is not None:
                slot.abort()
        slots.clear()


def hold_until_done(response: HttpResponseBase, slot: Slot) -> HttpResponseBase:
    """Tie the slot to the response's life, whatever kind of response it is."""
    if isinstance(response, StreamingResponse):
        # The stream's outcome releases it: when the stream ends, and when the
        # response is closed (close() ends the stream), also without close()
        # (Django's ASGI handler skips it when the stream raised).
        stream = response.stream
        slot.stream = weakref.ref(stream)
        stream.add_recorder(slot)  # what response.add_recorder() does, one call less
        return response
    # Django offers no public hook on close() for an arbitrary response; its
    # own FileResponse uses this list the same way.
    closers: list[Callable[[], object]] = response._resource_closers  # type: ignore[attr-defined]
    closers.append(slot.release)  # the server closes every response it sent
    if isinstance(response, StreamingHttpResponse):
        content = response.streaming_content
        if response.is_async:
            response.streaming_content = _arelease_after(cast(AsyncIterator[bytes], content), slot)
        else:
            response.streaming_content = _release_after(cast(Iterator[bytes], content), slot)
    return response


def _release_after(content: Iterator[bytes], slot: Slot) -> Iterator[bytes]:
    try:
        yield from content
    finally:
        slot.release()


async def _arelease_after(content: AsyncIterator[bytes], slot: Slot) -> AsyncIterator[bytes]:
    try:
        async for part in content:
            yield part
    finally:
        slot.release()
