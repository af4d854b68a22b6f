"""Where a ZIP member's bytes come from. Plain Python, no Django.

Each member source becomes a sync iterable of bytes for zipstream-ng, which
reads members in the thread that reads the archive:

* a file is read to the size it had when the archive was planned, and a file
  that changed size meanwhile fails the stream before the member's data
  descriptor, so the client sees a cut body, never the clean end of a wrong
  archive (a sized archive's ``Content-Length`` counted that size);
* an iterable with a declared size is held to it the same way;
* ``str`` is encoded UTF-8, anything else that is not bytes raises naming
  the member;
* an async member (an async iterable, or an ``async def produce(out)``) runs
  as a task on a private loop in the reading thread, with its
  thread-sensitive ``sync_to_async`` calls (the async ORM's) on a thread of its
  own: the reading thread is busy, and under ASGI it is the one such calls
  would otherwise wait for (asgiref 3.13's ``ThreadSensitiveContext(executor=)``).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async

from .bridge import iter_async
from .writer.handoff import HandOff
from .writer.task import AsyncOut, async_writer_chunks

__all__ = ["OWN_THREAD", "async_member", "encoded", "exactly", "read_file"]

_BYTES = (bytes, bytearray, memoryview)

# asgiref 3.13 (Python 3.11+) lets a block send its thread-sensitive calls to
# an executor of its own; 3.12 (the last for Python 3.10) cannot.
OWN_THREAD = "executor" in inspect.signature(ThreadSensitiveContext).parameters


def read_file(name: str, path: str, size: int, *, block: int) -> Iterator[bytes]:
    """The file at ``path``, which must still be ``size`` bytes long, in ``block`` pieces."""
    with open(path, "rb") as file:
        _same_size(name, path, os.fstat(file.fileno()).st_size, size)
        left = size
        while left:
            data = file.read(min(block, left))
            if not data:
                break  # it shrank: the check below says so
            left -= len(data)
            yield data
        _same_size(name, path, os.fstat(file.fileno()).st_size, size)


def _same_size(name: str, path: str, now: int, counted: int) -> None:
    if now != counted:
        raise RuntimeError(
            f"stream_zip: member {name!r}: {path!r} is {now} bytes, not the {counted} "
            "it had when stream_zip() was called; the archive is cut short here"
        )


def encoded(name: str, pieces: Iterable[object]) -> Iterator[bytes]:
    """``pieces``, with ``str`` encoded UTF-8; anything else but bytes raises."""
    for piece in pieces:
        if isinstance(piece, str):
            yield piece.encode()
        elif isinstance(piece, _BYTES):
            yield piece  # type: ignore[misc]  # zipstream-ng takes any bytes-like
        else:
            raise TypeError(
                f"stream_zip: member {name!r}: its source gave a {type(piece).__name__}; "
                "a member takes bytes, or str (encoded UTF-8)"
            )


def exactly(name: str, pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """``pieces``, which must come to ``size`` bytes: raises before a byte too many."""
    left = size
    for piece in pieces:
        left -= len(piece)
        if left < 0:
            raise ValueError(
                f"stream_zip: member {name!r}: its source gave more than the {size} bytes "
                "its size option declares"
            )
        yield piece
    if left:
        raise ValueError(
            f"stream_zip: member {name!r}: its source gave {size - left} bytes, not the "
            f"{size} its size option declares"
        )


def copy_from(name: str, source: AsyncIterable[object]) -> Callable[[AsyncOut], Awaitable[None]]:
    """An async iterable as an ``async def produce(out)``."""

    async def produce(out: AsyncOut) -> None:
        iterator = aiter(source)
        try:
            async for piece in iterator:
                if not isinstance(piece, (str, *_BYTES)):
                    raise TypeError(
                        f"stream_zip: member {name!r}: its source gave a "
                        f"{type(piece).__name__}; a member takes bytes, or str (encoded UTF-8)"
                    )
                await out.write(piece)
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    return produce


def async_member(
    produce: Callable[[AsyncOut], Awaitable[object]],
    hand: HandOff,
    *,
    on_exit: Callable[[], object],
) -> Iterator[bytes]:
    """The chunks ``produce`` writes (bytes or str), run on a private loop in this thread.

    ``on_exit`` runs on the producer's own thread once it is done (Django
    closes that thread's database connections there).
    """
    return iter_async(async_writer_chunks(_on_own_thread(produce, on_exit), hand, text=None))


def _on_own_thread(
    produce: Callable[[AsyncOut], Awaitable[object]], on_exit: Callable[[], object]
) -> Callable[[AsyncOut], Awaitable[None]]:
    if not OWN_THREAD:
        return produce  # type: ignore[return-value]  # awaited alike

    async def run(out: AsyncOut) -> None:
        worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamer-zip-member")
        # A dict: the Python 3.10 leg type-checks against asgiref 3.12.
        own: dict[str, Any] = {"executor": worker}
        try:
            async with ThreadSensitiveContext(**own):
                try:
                    await produce(out)
                finally:
                    await sync_to_async(on_exit)()
        finally:
            worker.shutdown(wait=False)

    return run
