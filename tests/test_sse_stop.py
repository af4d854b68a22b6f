"""How a sync SSE source is stopped when its stream closes, and what its thread costs."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator

import pytest

from django_streamer.core.drain import Drain
from django_streamer.core.sse.events import IDLE
from django_streamer.core.sse.schedule import Schedule
from django_streamer.core.sse.source import SyncEvents
from django_streamer.core.sse.threads import ThreadBudget


def schedule(ping: float = 0.2) -> Schedule:
    return Schedule(ping=ping, retry=None, max_duration=None, drain_spread=0)


def test_close_raises_nothing_inside_a_call_the_source_is_making():
    # The source is in the middle of a call when its stream closes. Nothing may
    # land inside it (an exception there can leave a shared lock or queue
    # half-updated); the generator is closed at its next yield, in its thread.
    in_call = threading.Event()
    landed: list[BaseException] = []
    closed_in: list[threading.Thread] = []
    calls = 0

    def source() -> Iterator[str]:
        nonlocal calls
        try:
            while True:
                calls += 1
                try:
                    in_call.set()
                    time.sleep(0.5)
                except BaseException as exc:
                    landed.append(exc)
                    raise
                yield "tick"
        finally:
            closed_in.append(threading.current_thread())

    events = SyncEvents(source(), schedule=schedule(), drain=Drain())
    assert next(events) == ":\n\n"
    assert in_call.wait(5)
    events.close()
    assert events.thread is not None
    events.thread.join(5)
    assert not events.thread.is_alive()
    assert landed == []
    assert closed_in == [events.thread]
    assert calls == 1  # not advanced after the close


def test_one_disconnect_leaves_a_shared_queue_working_for_the_others():
    # The usual fan-out: many streams' sources wait on one queue in short steps.
    shared: queue.Queue[str] = queue.Queue()

    def consumer() -> Iterator[object]:
        while True:
            try:
                yield shared.get(timeout=0.01)
            except queue.Empty:
                yield IDLE

    streams = [SyncEvents(consumer(), schedule=schedule(10), drain=Drain()) for _ in range(8)]
    for events in streams:
        next(events)
    time.sleep(0.2)
    for events in streams[1:]:
        events.close()
    for events in streams[1:]:
        assert events.thread is not None
        events.thread.join(5)
        assert not events.thread.is_alive()
    shared.put("still works")
    assert next(streams[0]) == "data: still works\n\n"
    streams[0].close()


def test_a_source_blocked_in_c_keeps_its_thread_until_the_call_returns():
    release = threading.Event()
    budget = ThreadBudget()
    assert budget.take(1)
    cleaned = threading.Event()

    def source() -> Iterator[str]:
        try:
            release.wait()  # no timeout: blocked in C
            yield "late"
            yield "never read"
        finally:
            cleaned.set()

    events = SyncEvents(source(), schedule=schedule(), drain=Drain(), budget=budget)
    next(events)
    t0 = time.monotonic()
    events.close()
    assert time.monotonic() - t0 < 1  # close() does not wait for the source
    assert events.thread is not None
    time.sleep(0.3)
    assert events.thread.is_alive() and events.thread.daemon
    assert budget.held == 1 and not budget.take(1)
    release.set()
    events.thread.join(5)
    assert not events.thread.is_alive() and cleaned.is_set()
    assert budget.held == 0


def test_a_stream_closed_before_it_started_gives_its_thread_back():
    budget = ThreadBudget()
    assert budget.take(2)
    events = SyncEvents(iter(["a"]), schedule=schedule(), drain=Drain(), budget=budget)
    events.close()
    events.close()
    assert events.thread is None and budget.held == 0


@pytest.mark.parametrize("ending", ["end", "error"])
def test_the_thread_is_given_back_when_the_source_ends(ending: str):
    budget = ThreadBudget()
    assert budget.take(1)

    def source() -> Iterator[str]:
        yield "a"
        if ending == "error":
            raise KeyError("boom")

    events = SyncEvents(source(), schedule=schedule(), drain=Drain(), budget=budget)
    expected = pytest.raises(KeyError) if ending == "error" else contextlib.nullcontext()
    with expected:
        list(events)
    assert events.thread is not None
    events.thread.join(5)
    assert budget.held == 0
