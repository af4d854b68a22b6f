"""The compressing stage: coalesced output, sync flushes only when forced, truncation on failure."""

from __future__ import annotations

import asyncio
import gzip
import random
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator

import brotli
import pytest

from django_streamer.core.compression.codecs import make_encoder
from django_streamer.core.compression.stage import Compressor, acompress_chunks, compress_chunks

from .decoders import Decoder, decode

CODINGS = ("gzip", "br", "zstd")
CHUNK = 4096


def rows(n: int) -> list[bytes]:
    rnd = random.Random(n)
    return [b"%d,%d,%s\n" % (i, rnd.randrange(10**6), b"x" * (i % 7)) for i in range(n)]


def full_chunks(data: bytes, size: int = 65536) -> list[tuple[bytes, bool]]:
    return [(data[i : i + size], False) for i in range(0, len(data), size)]


def marked(
    pairs: Iterable[tuple[bytes, bool]], comp: Compressor
) -> tuple[Iterator[bytes], Compressor]:
    """``(chunk, forced)`` pairs as a chunker gives them: forced ones marked, then yielded."""

    def chunks() -> Iterator[bytes]:
        iterator = iter(pairs)
        try:
            for chunk, forced in iterator:
                if forced:
                    comp.mark_forced(chunk)
                yield chunk
        finally:
            getattr(iterator, "close", lambda: None)()

    return chunks(), comp


def amarked(
    pairs: AsyncIterable[tuple[bytes, bool]], comp: Compressor
) -> tuple[AsyncIterator[bytes], Compressor]:
    async def chunks() -> AsyncIterator[bytes]:
        iterator = aiter(pairs)
        try:
            async for chunk, forced in iterator:
                if forced:
                    comp.mark_forced(chunk)
                yield chunk
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                await aclose()

    return chunks(), comp


def stage(coding: str, *, padding: bool = True, chunk_size: int = CHUNK) -> Compressor:
    encoder = make_encoder(coding, max_padding=100 if padding else 0)
    return Compressor(encoder, chunk_size=chunk_size)


@pytest.mark.parametrize("coding", CODINGS)
def test_fast_stream_is_coalesced_to_chunk_size_and_decodes(coding):
    data = b"".join(rows(30_000))
    out = list(compress_chunks(*marked(iter(full_chunks(data)), stage(coding))))
    assert len(out) > 3
    assert all(len(c) == CHUNK for c in out[:-1])
    assert 0 < len(out[-1]) <= CHUNK
    assert decode(coding, b"".join(out)) == data


def test_fast_stream_compresses_like_the_whole_body_at_once():
    data = b"".join(rows(50_000))
    comp = stage("gzip", padding=False)
    wire = b"".join(compress_chunks(*marked(iter(full_chunks(data)), comp)))
    whole = gzip.compress(data, compresslevel=6)
    assert abs(len(wire) - len(whole)) <= len(whole) * 0.01
    br_comp = stage("br", padding=False)
    br_wire = b"".join(compress_chunks(*marked(iter(full_chunks(data)), br_comp)))
    assert len(br_wire) <= len(brotli.compress(data, quality=4)) * 1.01


@pytest.mark.parametrize("coding", CODINGS)
def test_forced_chunks_are_decodable_as_they_come(coding):
    """A ticker: every forced chunk comes out at once and decodes to everything so far."""
    comp = stage(coding)
    dec = Decoder(coding)
    for i in range(40):
        tick = b"tick %d\n" % i
        out = comp.feed(tick, forced=True)
        assert len(out) == 1
        assert dec.feed(out[0]) == tick
        assert not dec.complete
    dec.feed(b"".join(comp.end()))
    assert dec.complete


@pytest.mark.parametrize("coding", CODINGS)
def test_full_chunks_are_not_flushed(coding):
    """Small full chunks that compress to little produce no output until enough piles up."""
    comp = stage(coding, chunk_size=65536)
    piece = b"".join(rows(300))
    assert comp.feed(piece, forced=False) == []
    assert comp.feed(piece, forced=False) == []
    out = comp.feed(b"last\n", forced=True)
    assert decode_prefix(coding, b"".join(out)) == piece + piece + b"last\n"


def decode_prefix(coding: str, data: bytes) -> bytes:
    dec = Decoder(coding)
    out = dec.feed(data)
    assert not dec.complete
    return out


def test_a_forced_chunk_after_a_big_backlog_goes_out_whole():
    rnd = random.Random(0)
    noise = rnd.randbytes(3 * CHUNK + 100)  # incompressible
    comp = stage("zstd", padding=False)
    out = comp.feed(noise, forced=True)
    assert [len(c) for c in out[:-1]] == [CHUNK] * (len(out) - 1)
    assert decode_prefix("zstd", b"".join(out)) == noise


@pytest.mark.parametrize("coding", CODINGS)
def test_empty_source_is_a_complete_empty_stream(coding):
    out = list(compress_chunks(*marked(iter([]), stage(coding))))
    assert decode(coding, b"".join(out)) == b""


class Boom(Exception):
    pass


def failing(data: bytes, closed: list[bool]) -> Iterator[tuple[bytes, bool]]:
    try:
        yield data[:50_000], True
        yield data[50_000:120_000], False
        raise Boom
    finally:
        closed.append(True)


@pytest.mark.parametrize("coding", CODINGS)
def test_failed_source_leaves_the_stream_unfinished(coding):
    data = b"".join(rows(20_000))
    closed: list[bool] = []
    out: list[bytes] = []
    with pytest.raises(Boom):
        out.extend(compress_chunks(*marked(failing(data, closed), stage(coding))))
    dec = Decoder(coding)
    got = dec.feed(b"".join(out))
    assert data.startswith(got) and len(got) >= 50_000
    assert not dec.complete
    assert closed == [True]


def test_closing_the_stage_closes_the_source():
    closed: list[bool] = []

    def source() -> Iterator[tuple[bytes, bool]]:
        try:
            while True:
                yield b"x" * 1000, True
        finally:
            closed.append(True)

    gen = compress_chunks(*marked(source(), stage("gzip")))
    next(gen)
    gen.close()
    assert closed == [True]


def test_counts_bytes_before_and_after():
    data = b"".join(rows(20_000))
    comp = stage("br")
    wire = b"".join(compress_chunks(*marked(iter(full_chunks(data)), comp)))
    assert comp.bytes_in == len(data)
    assert comp.bytes_out == len(wire)
    assert comp.coding == "br"


async def achunks(pairs: list[tuple[bytes, bool]]) -> AsyncIterator[tuple[bytes, bool]]:
    for pair in pairs:
        await asyncio.sleep(0)
        yield pair


@pytest.mark.parametrize("coding", CODINGS)
def test_async_twin_gives_the_same_bytes(coding):
    data = b"".join(rows(20_000))
    pairs = full_chunks(data, 30_000)
    pairs[1] = (pairs[1][0], True)

    async def collect() -> list[bytes]:
        comp = Compressor(make_encoder(coding, max_padding=0), chunk_size=CHUNK)
        return [c async for c in acompress_chunks(*amarked(achunks(pairs), comp))]

    sync = list(compress_chunks(*marked(iter(pairs), stage(coding, padding=False))))
    assert asyncio.run(collect()) == sync


def test_async_failure_is_unfinished_and_closes_the_source():
    closed: list[bool] = []

    async def source() -> AsyncIterator[tuple[bytes, bool]]:
        try:
            yield b"a" * 5000, True
            raise Boom
        finally:
            closed.append(True)

    async def collect(out: list[bytes]) -> None:
        async for c in acompress_chunks(*amarked(source(), stage("zstd"))):
            out.append(c)

    out: list[bytes] = []
    with pytest.raises(Boom):
        asyncio.run(collect(out))
    assert decode_prefix("zstd", b"".join(out)) == b"a" * 5000
    assert closed == [True]
