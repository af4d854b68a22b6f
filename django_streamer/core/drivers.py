"""Driving a stream's chunks to the server: counting, recording, and the outcome.

The sync and async drivers differ only in ``await``; what they record and how
a failure is worded live in the helpers below.
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
    on_chunk = stream.recorders.chunk_callback()
    outcome = Outcome.ABORTED
    try:
        if on_chunk is None:
            for chunk in chunks:
                stream.sent_bytes += len(chunk)
                yield chunk
        else:
            for chunk in chunks:
                stream.sent_bytes += len(chunk)
                on_chunk(len(chunk))
                yield chunk
        outcome = stream.clean_end()
    except Exception:
        outcome = Outcome.FAILED
        log_failure(stream)
        raise
    finally:
        try:
            close_quietly(chunks)
        finally:
            stream.finish(outcome)


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
        outcome = Outcome.FAILED
        log_failure(stream)
        raise
    finally:
        try:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            stream.finish(outcome)


def log_failure(stream: Stream) -> None:
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
        if not first.done():
            first.cancel()
            await asyncio.gather(first, return_exceptions=True)
        aclose = getattr(rest, "aclose", None)
        if aclose is not None:
            await aclose()


def close_quietly(obj: object) -> None:
    """``obj.close()``, if it has one."""
    close = getattr(obj, "close", None)
    if close is not None:
        close()
