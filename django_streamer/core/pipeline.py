"""What a stream's pieces go through before its driver: the chunker, then the compression stage.

Built once per stream (never per chunk), sync or async alike, from the stream's
checked options. The driver (``drivers.py``) takes the chunks from there.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .achunking import aiter_chunks
from .chunking import Piece, iter_chunks
from .compression.stage import acompress_chunks, compress_chunks
from .validate import non_negative_number, positive_int

if TYPE_CHECKING:
    from .stream import Stream


def check_chunk_size(value: object, *, name: str) -> int:
    if type(value) is int and value > 0:  # the common case: no message built
        return value
    return positive_int(value, what=f"stream {name!r}: chunk_size")


def check_flush_interval(value: object, *, name: str) -> float:
    if type(value) is float and value >= 0:  # the common case (NaN fails >=)
        return value
    return non_negative_number(value, what=f"stream {name!r}: flush_interval")


def rechunk_sync(stream: Stream, on_end: Callable[[int], None] | None) -> Iterator[bytes]:
    """The stream's chunks from a sync source, compressed if the stream compresses."""
    source: Iterable[Piece] = stream.items
    stage = stream.compressor
    if stage is None:
        return iter_chunks(source, on_end=on_end, **_chunk_options(stream))
    chunks = iter_chunks(source, on_forced=stage.mark_forced, **_chunk_options(stream))
    return compress_chunks(chunks, stage, on_body=stream.recorders.uncompressed, on_end=on_end)


def rechunk_async(stream: Stream, on_end: Callable[[int], None] | None) -> AsyncIterator[bytes]:
    """``rechunk_sync()`` for an async source."""
    source: AsyncIterable[Piece] = stream.items
    stage = stream.compressor
    if stage is None:
        return aiter_chunks(source, on_end=on_end, **_chunk_options(stream))
    chunks = aiter_chunks(source, on_forced=stage.mark_forced, **_chunk_options(stream))
    return acompress_chunks(chunks, stage, on_body=stream.recorders.uncompressed, on_end=on_end)


def _chunk_options(stream: Stream) -> dict[str, Any]:
    return {
        "chunk_size": stream.chunk_size,
        "flush_interval": stream.flush_interval,
        "encoding": stream.encoding,
        "name": stream.name,
    }
