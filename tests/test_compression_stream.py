"""Compression wired into the stream, in-process: the argument, the chunkers' marks, the stage's
clock, the recorder events, gzip off the event loop, and every factory's ``compress=``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
from django.test import override_settings

from django_streamer import sse_response, stream_csv, stream_jsonl, stream_response, stream_writer
from django_streamer.archive import stream_zip
from django_streamer.core.achunking import aiter_chunks
from django_streamer.core.chunking import iter_chunks
from django_streamer.core.compression.codecs import make_encoder
from django_streamer.core.compression.stage import Compressor, acompress_chunks
from django_streamer.core.recorder import StreamRecorder

from .conftest import ServingRequestFactory
from .decoders import Decoder, decode

rf = ServingRequestFactory()
BODY = b"".join(b"%d,row,%d\n" % (i, i * 7) for i in range(20_000))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def respond(request, source, **kwargs):
    # ``request`` is the current one (ServingRequestFactory), as under StreamerMiddleware.
    return stream_response(source, content_type="text/csv", **kwargs)


@pytest.mark.parametrize("value", ["yes", 1, 0.0])
def test_compress_must_be_none_or_a_bool(value):
    with pytest.raises(ValueError, match="compress must be True or False"):
        respond(rf.get("/"), iter([b"x"]), compress=value)


def test_off_by_default_and_unchanged():
    response = respond(rf.get("/", HTTP_ACCEPT_ENCODING="gzip"), iter([BODY]))
    assert not response.has_header("Content-Encoding")
    assert not response.has_header("Vary")
    assert response.stream.compressor is None
    assert b"".join(response) == BODY


@pytest.mark.parametrize("coding", ["zstd", "br", "gzip"])
def test_compress_true_compresses_what_the_client_accepts(coding):
    request = rf.get("/", HTTP_ACCEPT_ENCODING=coding)
    response = respond(
        request, (BODY[i : i + 999] for i in range(0, len(BODY), 999)), compress=True
    )
    assert response["Content-Encoding"] == coding
    assert decode(coding, b"".join(response)) == BODY


def test_the_setting_turns_it_on_and_false_turns_it_off():
    request = rf.get("/", HTTP_ACCEPT_ENCODING="br")
    with override_settings(STREAMER_COMPRESSION=True):
        assert respond(request, iter([BODY]))["Content-Encoding"] == "br"
        off = respond(request, iter([BODY]), compress=False)
        assert not off.has_header("Content-Encoding")
        assert b"".join(off) == BODY


def test_a_small_body_gets_the_compressed_length():
    response = respond(rf.get("/", HTTP_ACCEPT_ENCODING="gzip"), iter([BODY[:3000]]), compress=True)
    response.prime()
    body = b"".join(response)
    assert int(response["Content-Length"]) == len(body)
    assert decode("gzip", body) == BODY[:3000]


class Events(StreamRecorder):
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []

    def uncompressed(self, nbytes: int) -> None:
        self.events.append(("body", nbytes))

    def chunk(self, nbytes: int) -> None:
        self.events.append(("wire", nbytes))


def test_recorders_hear_body_bytes_and_wire_bytes():
    response = respond(
        rf.get("/", HTTP_ACCEPT_ENCODING="zstd"), iter([BODY]), compress=True, chunk_size=4096
    )
    events = Events()
    response.add_recorder(events)
    wire = b"".join(response)
    assert sum(n for kind, n in events.events if kind == "body") == len(BODY)
    assert sum(n for kind, n in events.events if kind == "wire") == len(wire)
    assert events.events[0][0] == "body"  # body bytes are told before what they made


def test_uncompressed_streams_tell_no_body_bytes():
    response = respond(rf.get("/", HTTP_ACCEPT_ENCODING="zstd"), iter([BODY]))
    events = Events()
    response.add_recorder(events)
    b"".join(response)
    assert {kind for kind, _ in events.events} == {"wire"}


# -- the chunkers mark forced flushes, never full chunks -----------------------------


def test_sync_chunker_marks_the_last_chunk_of_each_forced_flush():
    clock = FakeClock()
    marks: list[bytes] = []

    def source() -> Iterator[bytes]:
        yield b"a" * 100_000  # full chunks, and a rest
        clock.now += 1.0
        yield b"tick"  # the rest has waited: forced out with this

    out = list(
        iter_chunks(
            source(), chunk_size=65536, flush_interval=0.1, clock=clock, on_forced=marks.append
        )
    )
    assert [len(c) for c in out] == [65536, 100_000 - 65536 + 4]
    assert len(marks) == 1 and marks[0] is out[1]


def test_async_chunker_marks_a_timed_flush():
    marks: list[bytes] = []

    async def source() -> AsyncIterator[bytes]:
        yield b"b" * 70_000
        await asyncio.sleep(0.2)
        yield b"end"

    async def collect() -> list[bytes]:
        chunks = aiter_chunks(
            source(), chunk_size=65536, flush_interval=0.05, on_forced=marks.append
        )
        return [c async for c in chunks]

    out = asyncio.run(collect())
    assert [len(c) for c in out] == [65536, 70_000 - 65536, 3]
    assert len(marks) == 1 and marks[0] is out[1]  # the end is not marked: end() finishes it


def test_the_stage_forces_bytes_its_encoder_held_too_long():
    clock = FakeClock()
    stage = Compressor(
        make_encoder("br", max_padding=0), chunk_size=65536, flush_interval=0.1, clock=clock
    )
    assert stage.feed_marked(BODY[:65536]) == []  # brotli holds it all
    clock.now += 0.5
    out = stage.feed_marked(BODY[65536:131072])  # a full chunk, but late: flushed
    assert out
    assert Decoder("br").feed(b"".join(out)) == BODY[:131072]


def test_flush_interval_zero_flushes_every_chunk():
    # With any other interval zstd holds these small chunks (no output at all).
    stage = Compressor(make_encoder("zstd", max_padding=0), chunk_size=65536, flush_interval=0)
    decoder = Decoder("zstd")
    for event in (b"event 1\n", b"event 2\n", b"event 3\n"):
        assert decoder.feed(b"".join(stage.feed_marked(event))) == event  # each one at once


# -- gzip off the event loop ------------------------------------------------------


@pytest.mark.parametrize(("coding", "offloaded"), [("gzip", True), ("zstd", False), ("br", False)])
def test_only_gzip_compresses_big_chunks_in_a_thread(coding, offloaded):
    threads: list[int] = []
    stage = Compressor(make_encoder(coding), chunk_size=65536)
    feed = stage.feed_marked

    def recording(chunk: bytes) -> list[bytes]:
        threads.append(threading.get_ident())
        return feed(chunk)

    stage.feed_marked = recording  # type: ignore[method-assign]

    async def source() -> AsyncIterator[bytes]:
        yield BODY[:65536]
        yield b"small"

    async def run() -> tuple[int, bytes]:
        wire = b"".join([c async for c in acompress_chunks(source(), stage)])
        return threading.get_ident(), wire

    loop_thread, wire = asyncio.run(run())
    assert (threads[0] != loop_thread) is offloaded
    assert threads[1] == loop_thread  # a small chunk is not worth the hop
    assert decode(coding, wire) == BODY[:65536] + b"small"


# -- every factory takes compress= ------------------------------------------------


def test_csv_and_jsonl_take_compress():
    request = rf.get("/", HTTP_ACCEPT_ENCODING="gzip")
    csv = stream_csv([[i, "x"] for i in range(1000)], compress=True)
    assert csv["Content-Encoding"] == "gzip"
    assert decode("gzip", b"".join(csv)).startswith(b"0,x\r\n1,x\r\n")
    jsonl = stream_jsonl(({"i": i} for i in range(1000)), compress=True)
    assert decode("gzip", b"".join(jsonl)).startswith(b'{"i":0}\n')
    assert request is not None


def test_writer_takes_compress():
    request = rf.get("/", HTTP_ACCEPT_ENCODING="br")

    def produce(out) -> None:
        for i in range(1000):
            out.write(b"line %d\n" % i)

    response = stream_writer(produce, compress=True, content_type="text/plain")
    assert response["Content-Encoding"] == "br"
    assert decode("br", b"".join(response)) == b"".join(b"line %d\n" % i for i in range(1000))
    assert request is not None


def test_zip_is_never_compressed_and_refuses_true():
    request = rf.get("/", HTTP_ACCEPT_ENCODING="gzip")
    with override_settings(STREAMER_COMPRESSION=True):
        response = stream_zip([("a.txt", b"hello" * 100)])
        assert not response.has_header("Content-Encoding")
        b"".join(response)
        with pytest.raises(ValueError, match="compress must be None or False"):
            stream_zip([("a.txt", b"hello")], compress=True)
        stream_zip([("a.txt", b"hello")], compress=False).close()
    assert request is not None


def test_sse_has_no_content_encoding_unless_it_compresses():
    # RFC 9110 reserves "identity" for Accept-Encoding: an uncompressed feed sends none.
    request = rf.get("/", HTTP_ACCEPT_ENCODING="br")
    plain = sse_response(iter(["a"]), ping=None)
    assert "Content-Encoding" not in plain
    b"".join(plain)
    compressed = sse_response(iter(["a", "b"]), ping=None, compress=True)
    assert compressed["Content-Encoding"] == "br"
    assert b"data: b" in decode("br", b"".join(compressed))
    assert request is not None


def test_an_async_source_silent_after_full_chunks_is_flushed_by_the_timer():
    """brotli holds what two full chunks made; the source then sleeps 1 s: it goes out anyway."""
    arrivals: list[tuple[float, bytes]] = []

    async def source() -> AsyncIterator[bytes]:
        yield BODY[:131072]
        await asyncio.sleep(1.0)
        yield b"end"

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stage = Compressor(make_encoder("br", max_padding=0), chunk_size=65536, flush_interval=0.05)
        chunks = aiter_chunks(
            source(), chunk_size=65536, flush_interval=0.05, on_forced=stage.mark_forced
        )
        t0 = loop.time()
        async for wire in acompress_chunks(chunks, stage):
            arrivals.append((loop.time() - t0, wire))

    asyncio.run(run())
    early = b"".join(wire for at, wire in arrivals if at < 0.5)
    assert Decoder("br").feed(early) == BODY[:131072]
    assert decode("br", b"".join(wire for _, wire in arrivals)) == BODY[:131072] + b"end"
