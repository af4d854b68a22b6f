"""Driving a stream's chunks to the server: counting, recording, and the outcome.

The sync and async drivers differ only in ``await``; how a failure is logged and
how a chunker is closed live in the helpers below, shared with the first-chunk
wrappers (``prepended``, ``aprepended``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from .lifecycle import State
from .recorder import Outcome

if TYPE_CHECKING:
    from .stream import Stream

logger = logging.getLogger("django_streamer")


def drive_sync(stream: Stream, chunks: Iterator[bytes]) -> Iterator[bytes]:
    # The fan-out, not a recorder picked now: one added later hears later chunks.
    on_chunk = stream.recorders.chunk
    outcome = Outcome.ABORTED
    try:
        for chunk in chunks:
            stream.sent_bytes += len(chunk)
            on_chunk(len(chunk))
            yield chunk
        outcome = stream.clean_end()
    except Exception:
        outcome = failure(stream)
        raise
    finally:
        try:
            close_quietly(chunks)
        finally:
            stream.finish(settled(stream, outcome))


async def drive_async(stream: Stream, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    on_chunk = stream.recorders.chunk
    outcome = Outcome.ABORTED
    try:
        async for chunk in chunks:
            stream.sent_bytes += len(chunk)
            on_chunk(len(chunk))
            yield chunk
        outcome = stream.clean_end()
    except Exception:
        outcome = failure(stream)
        raise
    finally:
        try:
            await aclose_quietly(chunks)
        finally:
            stream.finish(settled(stream, outcome))


def settled(stream: Stream, outcome: Outcome) -> Outcome:
    """``outcome``, except that a body of known length handed over whole is not aborted.

    A client that got every byte of a ``Content-Length`` may close before the
    server asks the source for its end (curl does; gunicorn's asgi worker then
    closes the body): the download is complete all the same.
    """
    length = stream.length
    if outcome is Outcome.ABORTED and length is not None and stream.sent_bytes >= length:
        return stream.clean_end()
    return outcome


def failure(stream: Stream) -> Outcome:
    """Log the error being handled, worded for where the stream was; return ``FAILED``."""
    if stream.state is State.PREPARED:
        logger.exception(
            "Stream %r failed before any byte was sent; the error goes to Django's error handling",
            stream.name,
        )
    else:
        logger.exception(
            "Stream %r failed after %d bytes; the response is left incomplete",
            stream.name,
            stream.sent_bytes,
        )
    return Outcome.FAILED


def prepended(first: bytes | None, rest: Iterator[bytes]) -> Iterator[bytes]:
    """``first`` (unless the source was empty), then ``rest``; closing it closes ``rest``.

    ``yield from`` hands a close (or a throw) on to ``rest`` by itself, and a
    ``rest`` that ran out needs none: only a close at ``first`` closes it here.
    """
    if first is not None:
        try:
            yield first
        except BaseException:
            close_quietly(rest)
            raise
    yield from rest


async def aprepended(
    first: asyncio.Future[bytes], rest: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    """After ``aprepare()``: ``first`` (awaited if still coming), then ``rest``.

    Closing it cancels ``first`` if it is still being made, and closes ``rest``.
    """
    try:
        try:
            chunk = await first
        except StopAsyncIteration:
            return
        yield chunk
        async for chunk in rest:
            yield chunk
    finally:
        await cancel_then_close(first, rest)


async def cancel_then_close(first: asyncio.Future[bytes], rest: AsyncIterator[bytes]) -> None:
    """Cancel ``first`` if it is still being made and wait for it; then close ``rest``.

    Waiting matters for a sync source: its bridge closes the driver in its own
    thread once the ``next()`` running there returns (closing it from here
    would raise "generator already executing").
    """
    if not first.done():
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
    await aclose_quietly(rest)


def close_quietly(obj: object) -> None:
    """``obj.close()``, if it has one."""
    close = getattr(obj, "close", None)
    if close is not None:
        close()


async def aclose_quietly(obj: object) -> None:
    """``await obj.aclose()``, if it has one."""
    aclose = getattr(obj, "aclose", None)
    if aclose is not None:
        await aclose()
