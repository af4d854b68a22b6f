"""What the helper thread of a sync SSE source costs, in process (no server).

    .venv/bin/python -m bench.sse_thread

The README quotes these figures: start cost and RSS per idle thread, the
per-event hand-over through the thread, and the CPU of idle threads.
"""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from django_streamer.core.drain import Drain
from django_streamer.core.sse.schedule import Schedule
from django_streamer.core.sse.source import SyncEvents

STREAMS = 200
EVENTS = 50_000


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise KeyError("VmRSS")


def events(source: Iterator[str]) -> SyncEvents:
    schedule = Schedule(ping=15, retry=None, max_duration=None, drain_spread=0)
    return SyncEvents(source, schedule=schedule, drain=Drain())


def idle(stop: threading.Event) -> Iterator[str]:
    while not stop.wait(1):  # a source that wakes every second, as a queue consumer does
        pass
    yield "x"


def start_cost() -> str:
    stop = threading.Event()
    before, started = rss_kib(), time.perf_counter()
    streams = [events(idle(stop)) for _ in range(STREAMS)]
    for stream in streams:
        next(stream)
    took = (time.perf_counter() - started) / STREAMS * 1e6
    grew = (rss_kib() - before) / STREAMS
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(3)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) / 3 * 100
    stop.set()
    for stream in streams:
        stream.close()
    return (
        f"start: {took:.0f} us and {grew:.0f} KiB RSS per stream; "
        f"{STREAMS} idle streams: {cpu:.1f} % of a core"
    )


def hand_over() -> str:
    def source() -> Iterator[str]:
        for _ in range(EVENTS):
            yield "e"

    started = time.perf_counter()
    for _ in (f"data: {item}\n\n" for item in source()):
        pass
    plain = (time.perf_counter() - started) / EVENTS * 1e6
    started = time.perf_counter()
    writes = sum(1 for _ in events(source()))
    through = (time.perf_counter() - started) / EVENTS * 1e6
    return (
        f"per event: {through:.2f} us through the thread ({writes} writes for {EVENTS} "
        f"events), {plain:.2f} us encoded in place"
    )


if __name__ == "__main__":
    print(start_cost())
    print(hand_over())
