"""The plain-Python chunking core, without Django."""

from __future__ import annotations

import array
import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from django_streamer.core.achunking import aiter_chunks
from django_streamer.core.apump import AHEAD
from django_streamer.core.chunking import StreamSourceError, iter_chunks


def chunks_of(pieces, chunk_size=8, flush_interval=10.0, **kw):
    return list(iter_chunks(pieces, chunk_size=chunk_size, flush_interval=flush_interval, **kw))


def test_small_pieces_are_coalesced_to_exact_chunks():
    out = chunks_of([b"abc"] * 10, chunk_size=8)
    assert b"".join(out) == b"abc" * 10
    assert [len(c) for c in out] == [8, 8, 8, 6]


def test_big_pieces_are_split_and_a_full_chunk_passes_untouched():
    big = bytes(range(256)) * 10
    out = chunks_of([big], chunk_size=1000)
    assert [len(c) for c in out] == [1000, 1000, 560]
    assert b"".join(out) == big
    exact = b"x" * 1000
    assert chunks_of([exact], chunk_size=1000)[0] is exact


def test_bytes_like_pieces_are_accepted():
    out = chunks_of([b"ab", bytearray(b"cd"), memoryview(b"ef"), "gh"], chunk_size=3)
    assert out == [b"abc", b"def", b"gh"]


def test_str_is_encoded_with_the_given_charset_and_chunks_stay_exact_in_bytes():
    text = ["é"] * 9  # 2 bytes each in UTF-8, 1 in latin-1
    utf8 = chunks_of(text, chunk_size=4)
    assert b"".join(utf8) == ("é" * 9).encode()
    assert all(len(c) == 4 for c in utf8[:-1])
    latin = chunks_of(text, chunk_size=4, encoding="latin-1")
    assert b"".join(latin) == ("é" * 9).encode("latin-1")


def test_empty_pieces_never_make_empty_chunks():
    assert chunks_of([b"", b"", b"a", b""]) == [b"a"]
    assert chunks_of([b"", ""], flush_interval=0) == []


@pytest.mark.parametrize("bad", [5, None, [b"x"], object()])
def test_a_bad_item_is_a_clear_error_naming_the_stream(bad):
    with pytest.raises(StreamSourceError, match=r"stream 'exports'.*yielded .*must be bytes"):
        chunks_of([b"ok", bad, b"more"], name="exports")


def test_flush_interval_zero_sends_every_piece_as_it_comes():
    assert chunks_of([b"a", "b", b"c" * 20], chunk_size=8, flush_interval=0) == [
        b"a",
        b"b",
        b"c" * 8,
        b"c" * 8,
        b"c" * 4,
    ]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_slow_producer_gets_each_record_out_as_it_arrives():
    clock = FakeClock()
    sent_at: list[tuple[float, bytes]] = []

    def producer() -> Iterator[bytes]:
        for i in range(5):
            clock.now += 1.0  # one record a second
            yield b"rec%d;" % i

    for chunk in iter_chunks(producer(), chunk_size=1 << 16, flush_interval=0.2, clock=clock):
        sent_at.append((clock.now, chunk))
    assert [c for _, c in sent_at] == [b"rec%d;" % i for i in range(5)]
    assert [t for t, _ in sent_at] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_producer_that_yields_then_waits_is_streamed_not_held_to_the_end():
    # The first record comes at once, so the first rate estimate is absurdly
    # fast; the probe spacing must not jump to 64 records on that guess (a
    # newcomer's 6-record feed came out in one piece after 3 s).
    clock = FakeClock()
    sent_at: list[tuple[float, bytes]] = []

    def ticking() -> float:  # real clocks move between two reads
        clock.now += 2e-6
        return clock.now

    def producer() -> Iterator[bytes]:
        for i in range(6):
            yield b"rec%d;" % i
            clock.now += 0.5  # then wait for the next record

    for chunk in iter_chunks(producer(), chunk_size=1 << 16, flush_interval=0.1, clock=ticking):
        sent_at.append((clock.now, chunk))
    assert b"".join(c for _, c in sent_at) == b"".join(b"rec%d;" % i for i in range(6))
    # A sync source cannot be interrupted while it waits: each record goes out
    # when the next one arrives at the latest, never later.
    for i in range(5):
        record = b"rec%d;" % i
        when = next(t for t, c in sent_at if record in c)
        assert when <= (i + 1) * 0.5 + 0.001, (record, when)


def test_fast_burst_is_coalesced_then_flushed_at_the_deadline():
    clock = FakeClock()

    def producer() -> Iterator[bytes]:
        for _ in range(100):
            clock.now += 0.001
            yield b"x"
        clock.now += 5  # a long pause, then one more record
        yield b"y"

    out = list(iter_chunks(producer(), chunk_size=1 << 16, flush_interval=0.05, clock=clock))
    # No chunk holds a byte for more than the interval beyond the probe
    # spacing; the burst went out in a handful of chunks, not 101 writes.
    assert b"".join(out) == b"x" * 100 + b"y"
    assert 2 <= len(out) <= 6


def test_the_source_is_closed_when_the_consumer_stops_early():
    closed = []

    def producer() -> Iterator[bytes]:
        try:
            while True:
                yield b"x" * 10
        finally:
            closed.append(True)

    gen = iter_chunks(producer(), chunk_size=16, flush_interval=1)
    next(gen)
    gen.close()  # type: ignore[attr-defined]
    assert closed == [True]


@settings(max_examples=200, deadline=None)
@given(
    pieces=st.lists(st.one_of(st.binary(max_size=50), st.text(max_size=20)), max_size=40),
    chunk_size=st.integers(min_value=1, max_value=64),
    flush=st.sampled_from([0, 0.001, 10.0]),
)
def test_any_pieces_come_out_whole_and_exactly_sized(pieces, chunk_size, flush):
    expected = b"".join(p.encode() if isinstance(p, str) else p for p in pieces)
    out = list(iter_chunks(pieces, chunk_size=chunk_size, flush_interval=flush))
    assert b"".join(out) == expected
    assert all(0 < len(c) <= chunk_size for c in out)
    if flush == 10.0:
        assert all(len(c) == chunk_size for c in out[:-1])


# -- async ------------------------------------------------------------------


async def collect(agen: AsyncIterator[bytes]) -> list[bytes]:
    return [c async for c in agen]


async def arange(pieces: list[bytes | str], delay: float = 0) -> AsyncIterator[bytes | str]:
    for p in pieces:
        if delay:
            await asyncio.sleep(delay)
        yield p


def test_async_pieces_are_coalesced_to_exact_chunks():
    out = asyncio.run(collect(aiter_chunks(arange([b"abc"] * 10), chunk_size=8, flush_interval=5)))
    assert [len(c) for c in out] == [8, 8, 8, 6]
    assert b"".join(out) == b"abc" * 10


def test_async_str_and_split():
    out = asyncio.run(
        collect(aiter_chunks(arange(["é" * 5, b"z" * 20]), chunk_size=8, flush_interval=5))
    )
    assert b"".join(out) == ("é" * 5).encode() + b"z" * 20
    assert all(len(c) == 8 for c in out[:-1])


def test_async_flush_happens_while_the_source_is_silent():
    async def main() -> list[tuple[float, bytes]]:
        release = asyncio.Event()

        async def source() -> AsyncIterator[bytes]:
            yield b"first"
            await release.wait()  # silent until the consumer saw the first piece
            yield b"second"

        seen: list[tuple[float, bytes]] = []
        start = time.monotonic()
        async for chunk in aiter_chunks(source(), chunk_size=1 << 16, flush_interval=0.05):
            seen.append((time.monotonic() - start, chunk))
            release.set()
        return seen

    seen = asyncio.run(main())
    assert [c for _, c in seen] == [b"first", b"second"]
    assert seen[0][0] < 1.0  # flushed by the timer, not by the source


def test_async_each_piece_after_a_timed_flush_starts_the_timer_again():
    # After a timed flush the next piece must be flushed by the timer too,
    # however far the next chunk boundary is (the pump's loop keeps the limit
    # in a local, which the flush resets).
    async def main() -> list[bytes]:
        got_it = asyncio.Event()

        async def source() -> AsyncIterator[bytes]:
            for piece in (b"one", b"two", b"three"):
                got_it.clear()
                yield piece
                await got_it.wait()  # silent until the consumer has it

        got = []
        async for chunk in aiter_chunks(source(), chunk_size=1 << 16, flush_interval=0.02):
            got.append(chunk)
            got_it.set()
        return got

    # A piece held back would wait for the source's end, which never comes.
    assert asyncio.run(asyncio.wait_for(main(), 5)) == [b"one", b"two", b"three"]


def test_async_flush_holds_after_a_fast_burst_when_the_source_goes_silent():
    # Many chunks at once (the pump reads ahead in batches), then a partial
    # chunk and silence: the partial one must still go out by the timer.
    async def main() -> tuple[bytes, float]:
        release = asyncio.Event()

        async def source() -> AsyncIterator[bytes]:
            for _ in range(200):
                yield b"abc"
            await release.wait()
            yield b"end"

        got = b""
        start = time.monotonic()
        async for chunk in aiter_chunks(source(), chunk_size=64, flush_interval=0.05):
            got += chunk
            if len(got) == 600:  # everything before the silence, the partial tail included
                waited = time.monotonic() - start
                release.set()
        return got, waited

    got, waited = asyncio.run(asyncio.wait_for(main(), 5))  # a lost flush fails, not hangs
    assert got == b"abc" * 200 + b"end"
    assert waited < 1.0


def test_async_pump_reads_ahead_a_bounded_amount():
    made = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal made
        for _ in range(10_000):
            made += 1
            yield b"x" * 10

    async def main() -> int:
        gen = aiter_chunks(source(), chunk_size=100, flush_interval=5)
        await anext(gen)
        await asyncio.sleep(0.05)  # a client that accepts nothing for a while
        ahead = made
        await gen.aclose()  # type: ignore[attr-defined]
        return ahead

    ahead = asyncio.run(main())
    # The chunk sent, AHEAD chunks buffered, and the piece that crossed.
    assert ahead <= 10 * (1 + AHEAD) + 1, ahead


def test_async_flush_interval_zero_passes_pieces_through():
    out = asyncio.run(collect(aiter_chunks(arange([b"a", "b"]), chunk_size=8, flush_interval=0)))
    assert out == [b"a", b"b"]


def test_async_bad_item_names_the_stream():
    with pytest.raises(StreamSourceError, match="stream 'feed'"):
        bad: list[Any] = [b"a", 3]
        asyncio.run(collect(aiter_chunks(arange(bad), chunk_size=8, flush_interval=1, name="feed")))


def test_async_source_type_error_is_not_called_a_bad_item():
    async def source() -> AsyncIterator[bytes]:
        yield b"a"
        raise TypeError("the source's own bug")

    with pytest.raises(TypeError, match="the source's own bug") as caught:
        asyncio.run(collect(aiter_chunks(source(), chunk_size=8, flush_interval=1)))
    assert not isinstance(caught.value, StreamSourceError)


def test_async_chunks_stay_exact_when_len_is_not_bytes():
    # The one-chunk cut counts len(): a memoryview of 4-byte items and str
    # pieces count items and characters, so the cut must fall back.
    wide = memoryview(array.array("i", [1, 2, 3]))
    pieces: list[Any] = [wide, b"abcdefgh", b"fg", "\u00e9\u00e9", bytearray(b"hij"), b"k" * 9]
    pieces.append(wide)
    expected = b"".join(bytes(p) if not isinstance(p, str) else p.encode() for p in pieces)
    for size in (3, 4, 7, 8, 13):
        out = asyncio.run(collect(aiter_chunks(arange(pieces), chunk_size=size, flush_interval=5)))
        assert b"".join(out) == expected
        assert all(len(c) == size for c in out[:-1]), size
        assert 0 < len(out[-1]) <= size


def test_async_error_is_raised_after_the_bytes_before_it():
    async def source() -> AsyncIterator[bytes]:
        yield b"partial"
        raise KeyError("boom")

    async def main() -> list[bytes]:
        got: list[bytes] = []
        with pytest.raises(KeyError):
            async for c in aiter_chunks(source(), chunk_size=64, flush_interval=1):
                got.append(c)
        return got

    assert asyncio.run(main()) == [b"partial"]


def test_async_aclose_cancels_the_reader_and_closes_the_source():
    closed = []

    async def source() -> AsyncIterator[bytes]:
        try:
            while True:
                yield b"x" * 100
                await asyncio.sleep(0)
        finally:
            closed.append(True)

    async def main() -> None:
        gen = aiter_chunks(source(), chunk_size=64, flush_interval=1)
        await gen.__anext__()
        await gen.aclose()  # type: ignore[attr-defined]

    asyncio.run(main())
    assert closed == [True]


def test_async_cancellation_closes_a_source_blocked_in_await():
    closed = []

    async def source() -> AsyncIterator[bytes]:
        try:
            yield b"x"
            await asyncio.sleep(3600)
            yield b"never"
        finally:
            closed.append(True)

    async def consume() -> None:
        async for _ in aiter_chunks(source(), chunk_size=64, flush_interval=0.01):
            pass

    async def main() -> None:
        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert closed == [True]


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(st.one_of(st.binary(max_size=50), st.text(max_size=20)), max_size=40),
    chunk_size=st.integers(min_value=1, max_value=64),
    flush=st.sampled_from([0, 10.0]),
)
def test_async_any_pieces_come_out_whole_and_exactly_sized(pieces, chunk_size, flush):
    expected = b"".join(p.encode() if isinstance(p, str) else p for p in pieces)
    out = asyncio.run(
        collect(aiter_chunks(arange(pieces), chunk_size=chunk_size, flush_interval=flush))
    )
    assert b"".join(out) == expected
    assert all(0 < len(c) <= chunk_size for c in out)
    if flush == 10.0:
        assert all(len(c) == chunk_size for c in out[:-1])


MULTIBYTE = st.text(alphabet=st.sampled_from("a\u00e9\u20ac\U0001f600"), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.one_of(st.binary(max_size=50), MULTIBYTE), max_size=40),
    chunk_size=st.integers(min_value=1, max_value=64),
    steps=st.lists(st.sampled_from([0.0, 0.01, 0.2, 5.0]), min_size=1, max_size=10),
)
def test_the_flush_path_never_sends_a_chunk_over_chunk_size(pieces, chunk_size, steps):
    # A clock that jumps by flush_interval and more between reads sends the
    # re-chunker down the flush path with multibyte text buffered (issue 8:
    # 24-byte chunks with chunk_size=16).
    now = [0.0]
    jumps = iter(steps * 100)

    def clock() -> float:
        now[0] += next(jumps, 0.2)
        return now[0]

    expected = b"".join(p.encode() if isinstance(p, str) else p for p in pieces)
    out = list(iter_chunks(pieces, chunk_size=chunk_size, flush_interval=0.1, clock=clock))
    assert b"".join(out) == expected
    assert all(0 < len(c) <= chunk_size for c in out), [len(c) for c in out]


async def slow(pieces: list[bytes | str]) -> AsyncIterator[bytes | str]:
    for i, piece in enumerate(pieces):
        if i % 3 == 0:
            await asyncio.sleep(0.003)  # past flush_interval: the timer flushes
        yield piece


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(st.one_of(st.binary(max_size=50), MULTIBYTE), max_size=20),
    chunk_size=st.integers(min_value=1, max_value=64),
    flush=st.sampled_from([0, 0.001]),
)
def test_async_slow_multibyte_sources_never_exceed_chunk_size(pieces, chunk_size, flush):
    expected = b"".join(p.encode() if isinstance(p, str) else p for p in pieces)
    out = asyncio.run(
        collect(aiter_chunks(slow(pieces), chunk_size=chunk_size, flush_interval=flush))
    )
    assert b"".join(out) == expected
    assert all(0 < len(c) <= chunk_size for c in out), [len(c) for c in out]


@pytest.mark.parametrize("flush", [0, 0.1])
def test_an_empty_source_reports_its_end_with_zero_bytes(flush):
    ended: list[int] = []
    assert list(iter_chunks([], chunk_size=4, flush_interval=flush, on_end=ended.append)) == []
    aended: list[int] = []
    out = asyncio.run(
        collect(aiter_chunks(arange([]), chunk_size=4, flush_interval=flush, on_end=aended.append))
    )
    assert out == [] and ended == [0] and aended == [0]


@pytest.mark.parametrize("burst", [[b"abc"] * 30, [b"x" * 64]])
def test_async_flush_holds_for_a_piece_after_silence_after_a_timed_flush(burst):
    # A burst (a partial chunk flushed by the timer, or exactly one chunk),
    # silence, then one piece and silence again: that piece must go out by
    # the timer too, though the pump saw no chunk boundary since.
    async def main() -> bytes:
        again = asyncio.Event()
        end = asyncio.Event()

        async def source() -> AsyncIterator[bytes]:
            for piece in burst:
                yield piece
            await again.wait()
            yield b"late"
            await end.wait()
            yield b"end"

        got = b""
        async for chunk in aiter_chunks(source(), chunk_size=64, flush_interval=0.05):
            got += chunk
            if got == b"".join(burst):
                again.set()
            elif got.endswith(b"late"):
                end.set()
        return got

    got = asyncio.run(asyncio.wait_for(main(), 5))  # a lost flush fails, not hangs
    assert got == b"".join(burst) + b"lateend"
