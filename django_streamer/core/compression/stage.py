"""The compressing stage between the chunker and the driver. Plain Python, no Django.

Input: the chunker's chunks. The chunker tells the stage, per forced flush and
never per item, which chunk ``flush_interval`` FORCED out (a short chunk a
client is waiting for): it calls :meth:`Compressor.mark_forced` with the last
chunk of that flush before yielding it. Every other chunk is a full one.
Output: the compressed bytes, re-coalesced to ``chunk_size``.

A sync flush costs ratio (every flush ends a deflate block, and gzip 6 on very
repetitive records grew 13% when flushed every 64 KiB), so it happens only when
a chunk was forced out, and at the end. A fast stream therefore compresses
about as well as the whole body in one go, and a ticker is still decodable tick
by tick.

When the source fails, the encoder is never finished: no gzip trailer, no
brotli last block, no end of the zstd frame. The client's decoder sees a
truncated stream, never a well-formed short one.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Generator, Iterable

from .codecs import Encoder

# Under an event loop, a chunk at least this big is compressed in a thread when
# the coding is slow: gzip 6 takes over 1 ms per 64 KiB, zstd 3 and br 4 a
# tenth of that (README, *Compression*). Below it (a ticker's chunks) the
# compression costs the loop about what the thread hop would.
OFFLOAD_BYTES = 16 * 1024
SLOW_CODINGS = frozenset({"gzip"})

__all__ = ["Compressor", "acompress_chunks", "compress_chunks"]


class Compressor:
    """Shared logic of both shells: feed chunks in, take wire chunks out.

    ``bytes_in`` and ``bytes_out`` count the uncompressed and compressed bytes
    so far, for the metrics.
    """

    def __init__(
        self,
        encoder: Encoder,
        *,
        chunk_size: int,
        flush_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.encoder = encoder
        self.chunk_size = chunk_size
        self.bytes_in = 0
        self.bytes_out = 0
        # Bytes may wait in the encoder too (brotli holds ~100s of KB unflushed):
        # a chunk that comes when the encoder has held bytes for
        # ``flush_interval`` is forced as well. 0 forces every chunk.
        self.flush_interval = flush_interval
        self.clock = clock
        self.offload_at = OFFLOAD_BYTES if encoder.coding in SLOW_CODINGS else sys.maxsize
        self._buf: list[bytes] = []
        self._size = 0
        self._forced: bytes | None = None
        self._held_since: float | None = None

    @property
    def coding(self) -> str:
        return self.encoder.coding

    def feed(self, chunk: bytes, *, forced: bool) -> list[bytes]:
        """Wire chunks ready after ``chunk``: full ones, or everything when ``forced``."""
        self.bytes_in += len(chunk)
        self._add(self.encoder.compress(chunk))
        if forced:
            self._add(self.encoder.flush())
            return self._take(everything=True)
        if self._size < self.chunk_size:
            return []
        return self._take(everything=False)

    def mark_forced(self, chunk: bytes) -> None:
        """The chunker's call: ``chunk`` ends a flush that ``flush_interval`` forced."""
        self._forced = chunk

    def feed_marked(self, chunk: bytes) -> list[bytes]:
        """:meth:`feed`, forced when the chunker marked ``chunk`` or held bytes waited too long."""
        forced = chunk is self._forced
        if self.flush_interval is not None:
            now = self.clock()
            held = self._held_since
            if held is None:
                self._held_since = held = now
            forced = forced or now - held >= self.flush_interval
        if forced:
            self._forced = self._held_since = None
        return self.feed(chunk, forced=forced)

    def end(self) -> list[bytes]:
        """The rest, with the end of the compressed stream. Only on success."""
        self._add(self.encoder.finish())
        return self._take(everything=True)

    def _add(self, data: bytes) -> None:
        if data:
            self._buf.append(data)
            self._size += len(data)

    def _take(self, *, everything: bool) -> list[bytes]:
        if not self._size:
            return []
        data = b"".join(self._buf) if len(self._buf) > 1 else self._buf[0]
        self._buf.clear()
        size, step = len(data), self.chunk_size
        cut = size if everything else size - size % step
        chunks = [data[i : min(i + step, cut)] for i in range(0, cut, step)]
        rest = data[cut:]
        self._buf.extend([rest] if rest else [])
        self._size = len(rest)
        self.bytes_out += cut
        return chunks


def compress_chunks(
    chunks: Iterable[bytes],
    compressor: Compressor,
    *,
    on_body: Callable[[int], None] | None = None,
    on_end: Callable[[int], None] | None = None,
) -> Generator[bytes, None, None]:
    """Compress the chunker's chunks; the chunker is closed when this ends.

    ``on_body(n)``: ``n`` body bytes went in (before the wire chunks they made).
    ``on_end(n)``: the body ended cleanly with ``n`` wire bytes still to come
    (the chunker's ``on_end``, in wire bytes: ``Content-Length`` when it is all).
    """
    feed = compressor.feed_marked
    try:
        for chunk in chunks:
            if on_body is not None:
                on_body(len(chunk))
            yield from feed(chunk)
        yield from _end(compressor, on_end)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


async def acompress_chunks(
    chunks: AsyncIterable[bytes],
    compressor: Compressor,
    *,
    on_body: Callable[[int], None] | None = None,
    on_end: Callable[[int], None] | None = None,
) -> AsyncGenerator[bytes, None]:
    """The async twin of :func:`compress_chunks`; slow chunks compress in a thread."""
    offload = compressor.offload_at
    loop = asyncio.get_running_loop()
    try:
        async for chunk in chunks:
            if on_body is not None:
                on_body(len(chunk))
            if len(chunk) >= offload:
                out = await loop.run_in_executor(None, compressor.feed_marked, chunk)
            else:
                out = compressor.feed_marked(chunk)
            for wire in out:
                yield wire
        for wire in _end(compressor, on_end):
            yield wire
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()


def _end(compressor: Compressor, on_end: Callable[[int], None] | None) -> list[bytes]:
    out = compressor.end()
    if on_end is not None:
        on_end(sum(map(len, out)))
    return out
