"""SSE wire format, pings, endings and the drain state, in plain Python (no server)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from django_streamer.core.drain import Drain
from django_streamer.core.recorder import Outcome
from django_streamer.core.sse.events import IDLE, Event, comment, encode, retry_hint
from django_streamer.core.sse.schedule import Schedule
from django_streamer.core.sse.source import AsyncEvents, SyncEvents


def test_event_fields_and_multi_line_data():
    text = Event("one\ntwo\r\nthree\rfour", id=7, event="tick", retry=2500).encode()
    assert text == (
        "event: tick\nid: 7\nretry: 2500\ndata: one\ndata: two\ndata: three\ndata: four\n\n"
    )


def test_plain_values():
    assert encode("hi") == "data: hi\n\n"
    assert encode({"a": [1, "é"]}) == 'data: {"a":[1,"é"]}\n\n'
    assert encode("") == "data: \n\n"
    assert comment("a\nb") == ": a\n: b\n\n"
    assert comment() == ":\n\n"
    assert retry_hint(1000, "bye") == ": bye\nretry: 1000\n\n"


@pytest.mark.parametrize("field", ["id", "event"])
@pytest.mark.parametrize(
    "bad",
    [
        *("a\nb", "a\rb", "x\r\ndata: injected"),
        # What str.splitlines() also splits on: such a client reads a new field.
        *("x\u2028data: injected", "x\u2029y", "x\x85y", "x\vy", "x\fy", "x\x1ey"),
    ],
)
def test_line_breaks_refused_in_id_and_event(field, bad):
    with pytest.raises(ValueError, match=f"Event {field} must not contain a line break"):
        Event("x", **{field: bad})
    assert len(f"{field}: {bad}".splitlines()) > 1  # what the refusal prevents


def test_json_data_is_one_line_whatever_splits_it():
    value = {"text": "a\u2028id: 5\x85b\u2029c"}
    text = encode(value)
    assert text == 'data: {"text":"a\\u2028id: 5\\u0085b\\u2029c"}\n\n'
    assert len(text.splitlines()) == 2 and json.loads(text[6:]) == value
    # str data is the caller's text, split where the standard's parser splits.
    assert encode("a\u2028b") == "data: a\u2028b\n\n"


def test_lone_surrogates_become_replacement_characters():
    # json.loads accepts a lone surrogate escape; UTF-8 cannot encode it.
    relayed = json.loads('{"text": "a\\ud800b", "pair": "\\ud83d\\ude00"}')
    text = encode(relayed)
    assert text == 'data: {"text":"a\ufffdb","pair":"\U0001f600"}\n\n'
    assert json.loads(text.encode("utf-8")[6:]) == {"text": "a\ufffdb", "pair": "\U0001f600"}
    assert encode("x\udc80") == "data: x\ufffd\n\n"
    # A pair held as two code points (surrogateescape, UTF-16 sources) is joined.
    assert encode("\ud83d\ude00") == "data: \U0001f600\n\n"
    assert Event("x", id="7\ud800", event="t\udfff").encode().encode("utf-8") == (
        "event: t\ufffd\nid: 7\ufffd\ndata: x\n\n".encode()
    )


def test_nan_and_infinities_in_json_data_become_null():
    nan, inf = float("nan"), float("inf")
    text = encode({"a": nan, "b": [inf, -inf, 1.5], "c": (2, nan), "d": {"e": nan}})
    assert text == 'data: {"a":null,"b":[null,null,1.5],"c":[2,null],"d":{"e":null}}\n\n'
    json.loads(text[6:], parse_constant=pytest.fail)  # strict JSON, no NaN literal
    circular: list[object] = [nan]
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference"):
        encode(circular)


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="Event retry"):
        Event("x", retry=-1)
    with pytest.raises(TypeError, match="not bytes"):
        encode(b"raw")
    with pytest.raises(TypeError, match="Event event must be a str"):
        Event("x", event=3)  # type: ignore[arg-type]


def schedule(**kw: object) -> Schedule:
    args: dict[str, object] = {"ping": 0.2, "retry": None, "max_duration": None, "drain_spread": 0}
    args.update(kw)
    return Schedule(**args)  # type: ignore[arg-type]


def blocking_source(release: threading.Event, items: list[str]) -> Iterator[str]:
    # Waits like a queue consumer that wakes every 0.1 s and yields IDLE to be stoppable.
    for item in items:
        while not release.wait(0.1):
            yield IDLE
        release.clear()
        yield item


def test_sync_pings_while_the_source_blocks_and_events_go_at_once():
    release = threading.Event()
    events = SyncEvents(blocking_source(release, ["a", "b"]), schedule=schedule(), drain=Drain())
    t0 = time.monotonic()
    assert next(events) == ":\n\n"
    assert next(events) == ":\n\n"  # a ping, after 0.2 s of silence
    assert 0.15 < time.monotonic() - t0 < 0.4
    release.set()
    assert next(events) == "data: a\n\n"
    release.set()
    assert next(events) == "data: b\n\n"
    with pytest.raises(StopIteration):
        next(events)
    assert events.thread is not None
    events.thread.join(1)
    assert not events.thread.is_alive()


def test_sync_close_stops_the_helper_thread_promptly():
    ended = threading.Event()
    cleaned = threading.Event()

    def source() -> Iterator[str]:
        try:
            yield from blocking_source(threading.Event(), ["never"])
        finally:
            cleaned.set()

    events = SyncEvents(
        source(),
        schedule=schedule(),
        drain=Drain(),
        on_thread_end=ended.set,
    )
    next(events)
    next(events)
    events.close()
    assert events.thread is not None
    events.thread.join(0.2 + 1)
    assert not events.thread.is_alive() and ended.is_set() and cleaned.is_set()


def test_sync_source_error_is_raised_in_the_server_thread():
    def broken() -> Iterator[str]:
        yield "ok"
        raise KeyError("boom")

    events = SyncEvents(broken(), schedule=schedule(), drain=Drain())
    assert next(events) == ":\n\n"
    assert next(events) == "data: ok\n\n"
    with pytest.raises(KeyError):
        next(events)


def test_sync_batches_what_is_already_queued():
    events = SyncEvents(iter(["1", "2", "3"]), schedule=schedule(), drain=Drain())
    next(events)
    time.sleep(0.1)
    assert next(events) == "data: 1\n\ndata: 2\n\ndata: 3\n\n"


def test_a_bad_item_does_not_take_the_good_ones_batched_with_it():
    events = SyncEvents(iter(["1", "2", object(), "4"]), schedule=schedule(), drain=Drain())
    next(events)
    time.sleep(0.2)  # all four queued: one batch
    assert next(events) == "data: 1\n\ndata: 2\n\n"
    with pytest.raises(TypeError, match="not JSON serializable"):
        next(events)
    with pytest.raises(StopIteration):
        next(events)


def test_idle_sends_nothing():
    source = iter([IDLE, "a", IDLE, IDLE, "b"])
    assert "".join(SyncEvents(source, schedule=schedule(), drain=Drain())) == (
        ":\n\ndata: a\n\ndata: b\n\n"
    )

    async def agen() -> AsyncIterator[object]:
        for item in [IDLE, "a", IDLE, "b"]:
            yield item

    async def collect() -> str:
        events = AsyncEvents(agen(), schedule=schedule(), drain=Drain())
        return "".join([block async for block in events])

    assert asyncio.run(collect()) == ":\n\ndata: a\n\ndata: b\n\n"


def test_sync_drain_ends_with_a_retry_hint():
    drain = Drain()
    events = SyncEvents(
        blocking_source(threading.Event(), ["x"]), schedule=schedule(ping=10), drain=drain
    )
    next(events)
    threading.Timer(0.1, drain.start).start()
    t0 = time.monotonic()
    assert next(events) == ": draining\nretry: 1000\n\n"
    assert time.monotonic() - t0 < 0.5
    assert events.schedule.outcome is Outcome.DRAINED
    with pytest.raises(StopIteration):
        next(events)


def test_max_duration_ends_cleanly_with_the_streams_retry():
    events = SyncEvents(
        blocking_source(threading.Event(), ["x"]),
        schedule=schedule(ping=0.1, retry=3000, max_duration=0.35),
        drain=Drain(),
    )
    blocks = list(events)
    assert blocks[0] == "retry: 3000\n\n"
    assert blocks[1:-1] == [":\n\n"] * 3
    assert blocks[-1] == ": max_duration\nretry: 3000\n\n"
    assert events.schedule.outcome is Outcome.COMPLETED


async def async_source(gate: asyncio.Event, items: list[object]) -> AsyncIterator[object]:
    for item in items:
        await gate.wait()
        gate.clear()
        yield item


async def _async_pings_events_and_end() -> None:
    gate = asyncio.Event()
    events = AsyncEvents(
        async_source(gate, [Event("a", id=1), {"b": 2}]), schedule=schedule(), drain=Drain()
    )
    t0 = time.monotonic()
    assert await events.__anext__() == ":\n\n"
    assert await events.__anext__() == ":\n\n"
    assert 0.15 < time.monotonic() - t0 < 0.4
    gate.set()
    assert await events.__anext__() == "id: 1\ndata: a\n\n"
    gate.set()
    assert await events.__anext__() == 'data: {"b":2}\n\n'
    gate.set()
    with pytest.raises(StopAsyncIteration):
        await events.__anext__()


async def _async_drain_from_another_thread() -> None:
    drain = Drain()
    closed = asyncio.Event()

    async def source() -> AsyncIterator[str]:
        try:
            await asyncio.sleep(60)
            yield "never"
        finally:
            closed.set()

    events = AsyncEvents(source(), schedule=schedule(ping=10), drain=drain)
    assert await events.__anext__() == ":\n\n"
    threading.Timer(0.1, drain.start).start()
    blocks = [block async for block in events]
    assert blocks == [": draining\nretry: 1000\n\n"]
    assert events.schedule.outcome is Outcome.DRAINED
    assert closed.is_set()


def test_async_pings_events_and_end():
    asyncio.run(_async_pings_events_and_end())


def test_async_drain_from_another_thread_and_source_closed():
    asyncio.run(_async_drain_from_another_thread())


def test_drain_callbacks_once_and_unregister():
    drain = Drain()
    calls: list[str] = []
    drain.on_drain(lambda: calls.append("a"))
    forget = drain.on_drain(lambda: calls.append("b"))
    forget()
    assert not drain.draining()
    drain.start()
    drain.start()
    assert drain.draining() and calls == ["a"]
    drain.on_drain(lambda: calls.append("late"))
    assert calls == ["a", "late"]


def test_drain_spread_stays_in_its_window():
    s = schedule(ping=100, drain_spread=2.0)
    now = s.clock()
    s.drain()
    assert now <= s.drain_at <= now + 2.1
    assert s.ending(now) is None
    assert s.ending(s.drain_at) == ": draining\nretry: 1000\n\n"


def test_a_stream_started_while_draining_ends_at_once():
    drain = Drain()
    drain.start()
    events = SyncEvents(
        blocking_source(threading.Event(), ["x"]),
        schedule=schedule(ping=10, drain_spread=5),
        drain=drain,
    )
    t0 = time.monotonic()
    assert list(events) == [":\n\n", ": draining\nretry: 1000\n\n"]
    assert time.monotonic() - t0 < 0.5


def test_the_core_modules_import_no_django():
    import subprocess
    import sys

    code = (
        "import sys, django_streamer.core.sse.source, django_streamer.core.drain;"
        "assert not [m for m in sys.modules if m.startswith('django.')], 'django imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_adapter_reports_a_drained_outcome():
    drain = Drain()
    drain.start()
    events = SyncEvents(iter(["x"]), schedule=schedule(), drain=drain)
    list(events)
    assert events.outcome is Outcome.DRAINED
