"""Right-sizing of stream chunks for async sources.

The source is read by a pump task (``apump.py``), so ``flush_interval`` holds
even while the source is silent. Chunks are cut with the helpers the sync
re-chunker uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable

from .apump import Pump
from .chunking import Piece, split_all, to_bytes


async def aiter_chunks(
    source: AsyncIterable[Piece],
    *,
    chunk_size: int,
    flush_interval: float,
    encoding: str = "utf-8",
    name: str = "stream",
    on_end: Callable[[int], None] | None = None,
    on_forced: Callable[[bytes], None] | None = None,
) -> AsyncIterator[bytes]:
    """Re-chunk an async source. ``flush_interval`` holds even while the source
    is silent: a timer sends whatever has waited that long. ``on_forced`` is
    told of the last chunk of each such timed flush, as in ``iter_chunks``; with
    ``on_forced``, a source silent for ``flush_interval`` after full chunks gets
    an empty forced chunk, so what a compressor made of them goes out too.

    The source is read by a helper task, so ``aclose()`` of this generator (or
    cancellation) cancels that task and ``aclose()``s the source.
    """
    if flush_interval == 0:
        async for chunk in _apassthrough(
            source, chunk_size=chunk_size, encoding=encoding, name=name, on_end=on_end
        ):
            yield chunk
        return
    loop = asyncio.get_running_loop()
    pump = Pump(source, chunk_size, name)
    task = loop.create_task(pump.run())
    oldest: float | None = None  # when the oldest buffered byte was first seen
    sent_full = False  # full chunks went out since the last timed flush
    try:
        while not pump.done:
            if pump.batches:
                chunks = pump.take_batch(encoding)
                sent_full = True
                if not pump.carry and not pump.pieces:
                    oldest = None
            elif pump.pieces or pump.carry:
                # Only now is the clock read and a timer armed: a source that
                # keeps a batch coming never gets here.
                now = loop.time()
                oldest = now if oldest is None else oldest
                remaining = oldest + flush_interval - now
                if remaining > 0:
                    await pump.wait(remaining)
                    continue
                oldest = None
                chunks = pump.take_all(encoding)
                if chunks and on_forced is not None:
                    on_forced(chunks[-1])
                sent_full = False
            else:
                if sent_full and on_forced is not None:
                    # A compressing stage may still hold what the full chunks
                    # made: once the source has been silent for flush_interval,
                    # an empty forced chunk makes it flush.
                    await pump.wait(flush_interval)
                    if not (pump.pieces or pump.carry or pump.done):
                        sent_full = False
                        on_forced(b"")
                        yield b""
                    continue
                pump.wake_on_any()  # after a whole chunk, the pump awaits a boundary
                await pump.wait(None)
                oldest = loop.time()
                continue
            for chunk in chunks:
                yield chunk
        for chunk in pump.last(encoding, on_end):
            yield chunk
        if pump.error is not None:
            raise pump.error
    finally:
        if not task.done():
            task.cancel()
            # The pump closes the source in its own ``finally``; wait for that.
            await asyncio.gather(task, return_exceptions=True)
        elif not task.cancelled():
            task.exception()  # retrieved: the pump keeps what it caught in ``error``


async def _apassthrough(
    source: AsyncIterable[Piece],
    *,
    chunk_size: int,
    encoding: str,
    name: str,
    on_end: Callable[[int], None] | None = None,
) -> AsyncIterator[bytes]:
    iterator = aiter(source)
    sent = 0
    try:
        async for piece in iterator:
            data = to_bytes(piece, encoding, name)
            sent += len(data)
            for chunk in split_all(data, chunk_size):
                yield chunk
        if on_end is not None and sent == 0:
            on_end(0)
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()
