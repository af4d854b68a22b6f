"""The compressing stage between the chunker and the wire. Plain Python, no Django.

Input: the chunker's chunks, each with whether ``flush_interval`` FORCED it out
(a short chunk a client is waiting for) or it is a full chunk. Output: the
compressed bytes, re-coalesced to ``chunk_size``.

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

from collections.abc import AsyncGenerator, AsyncIterable, Generator, Iterable

from .codecs import Encoder

__all__ = ["Compressor", "acompress_chunks", "compress_chunks"]


class Compressor:
    """Shared logic of both shells: feed chunks in, take wire chunks out.

    ``bytes_in`` and ``bytes_out`` count the uncompressed and compressed bytes
    so far, for the metrics.
    """

    def __init__(self, encoder: Encoder, *, chunk_size: int) -> None:
        self.encoder = encoder
        self.chunk_size = chunk_size
        self.bytes_in = 0
        self.bytes_out = 0
        self._buf: list[bytes] = []
        self._size = 0

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
    chunks: Iterable[tuple[bytes, bool]], compressor: Compressor
) -> Generator[bytes, None, None]:
    """Compress ``(chunk, forced)`` pairs; the source is closed when this ends."""
    try:
        for chunk, forced in chunks:
            yield from compressor.feed(chunk, forced=forced)
        yield from compressor.end()
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


async def acompress_chunks(
    chunks: AsyncIterable[tuple[bytes, bool]], compressor: Compressor
) -> AsyncGenerator[bytes, None]:
    """The async twin of :func:`compress_chunks`."""
    try:
        async for chunk, forced in chunks:
            for out in compressor.feed(chunk, forced=forced):
                yield out
        for out in compressor.end():
            yield out
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
