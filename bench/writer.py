"""Bench rows for stream_writer, stream_csv and stream_zip (issue 12).

    .venv/bin/python -m bench.writer               # in-process, then under gunicorn
    .venv/bin/python -m bench.writer --in-process  # the quick part only
    .venv/bin/python -m bench.writer --cpu         # writer vs stream_csv, CPU time

In-process: 200,000 CSV rows formatted by csv.writer into memory (the ceiling),
by stream_csv, by the Django docs' Echo recipe and by stream_writer, each body
written to a socket pair one item per send, as a server does. Under gunicorn
(gthread, one worker, wrk): CSV bytes/s (Echo vs stream_csv; stream_writer vs
stream_csv, whose identical bodies make bytes/s requests/s times a size) and a
64 MiB stored ZIP (zipfile in memory vs stream_zip) in bytes/s and the worker's
peak RSS. Ratios come from one run.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.writer_settings")

from bench.run import Gunicorn, wrk  # noqa: E402


def serve(body: Iterable[bytes]) -> int:
    """Send each item of ``body`` with one sendall(), as a WSGI server does."""
    left, right = socket.socketpair()
    got = [0]

    def drain() -> None:
        while data := right.recv(1 << 20):
            got[0] += len(data)

    reader = threading.Thread(target=drain)
    reader.start()
    for item in body:
        if item:
            left.sendall(item)
    left.close()
    reader.join()
    right.close()
    return got[0]


def timed(fn: Callable[[], int], repeat: int) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        size = fn()
        times.append(time.perf_counter() - start)
    return min(times), size


def in_process(repeat: int) -> None:
    import django

    django.setup()
    from bench import writer_views as v

    def ceiling() -> int:
        buffer = io.StringIO()
        csv.writer(buffer).writerows(v.rows())
        return len(buffer.getvalue().encode())

    contenders: dict[str, Callable[[], int]] = {
        "csv.writer in memory (ceiling)": ceiling,
        "stream_csv": lambda: serve(v.dispatch(None, "csv", "streamer")),  # type: ignore[arg-type]
        "Echo + StreamingHttpResponse": lambda: serve(v.echo_csv()),  # type: ignore[arg-type]
        "stream_writer + csv.writer": lambda: serve(v.writer_csv()),  # type: ignore[arg-type]
    }
    results = {name: timed(fn, repeat) for name, fn in contenders.items()}
    base = results["csv.writer in memory (ceiling)"][0]
    echo = results["Echo + StreamingHttpResponse"][0]
    print(f"In-process, {v.ROWS} CSV rows, best of {repeat}:")
    for name, (seconds, size) in results.items():
        print(
            f"  {name:34} {seconds * 1000:7.1f} ms  {size / seconds / 1e6:6.1f} MB/s  "
            f"{base / seconds:5.2f}x ceiling  {echo / seconds:5.1f}x Echo"
        )


def cpu_per_body(repeat: int) -> None:
    """Process CPU time (every thread) per body: stream_writer vs stream_csv.

    Served requests/s on one worker is bound by this figure, and it is less
    disturbed by other processes on the machine than wall time. The two are
    interleaved; medians.
    """
    import django

    django.setup()
    from bench import writer_views as v

    contenders: dict[str, Callable[[], int]] = {
        "stream_csv": lambda: serve(v.dispatch(None, "csv", "streamer")),  # type: ignore[arg-type]
        "stream_writer + csv.writer": lambda: serve(v.writer_csv()),
    }
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            start = time.process_time()
            fn()
            cpu[name].append(time.process_time() - start)
    base = statistics.median(cpu["stream_csv"])
    print(f"Process CPU per body, {v.ROWS} CSV rows, median of {repeat}:")
    for name, times in cpu.items():
        median = statistics.median(times)
        print(f"  {name:34} {median * 1000:7.1f} ms  {base / median:5.2f}x stream_csv")
    print(f"  hand-off alone: {handoff_per_write(repeat):.0f} ns per write over list.append")


def handoff_per_write(repeat: int) -> float:
    """Process CPU per ``out.write()`` of a ready CSV line, beyond appending it to a list."""
    from django_streamer.core.writer.handoff import HandOff
    from django_streamer.core.writer.thread import ThreadWriter

    lines = [f"{i},name {i},{i * 1.5},plain\r\n" for i in range(200_000)]

    def produce(out: Any) -> None:
        write = out.write
        for line in lines:
            write(line)

    def through_writer() -> None:
        hand = HandOff(
            chunk_size=65536, flush_interval=0.2, limit=262144, encoding="utf-8", name="bench"
        )
        for _ in ThreadWriter(produce, hand, text=True):
            pass

    def into_list() -> None:
        buffer: list[str] = []
        append = buffer.append
        for line in lines:
            append(line)
        "".join(buffer).encode()

    got: dict[str, list[float]] = {"writer": [], "list": []}
    for _ in range(repeat):
        for name, fn in (("writer", through_writer), ("list", into_list)):
            start = time.process_time()
            fn()
            got[name].append(time.process_time() - start)
    extra = statistics.median(got["writer"]) - statistics.median(got["list"])
    return extra / len(lines) * 1e9


def peak_rss_kib(server: Gunicorn) -> int:
    status = Path(f"/proc/{server.worker_pid()}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))


def under_gunicorn(rounds: int, seconds: int) -> None:
    env = {"DJANGO_SETTINGS_MODULE": "bench.writer_settings"}
    rows = [
        ("csv", ("echo", "streamer"), 1, 1),  # bytes/s, one connection
        # The writer's cost, four connections. Bytes/s, not wrk's requests/s:
        # a body takes ~0.4 s, so a few seconds complete only a handful of
        # requests and wrk drops the ones in flight; the bodies are identical,
        # so bytes/s is requests/s times the body's size, without the rounding.
        ("csv", ("streamer", "writer"), 4, 1),
    ]
    server = Gunicorn("gthread", env=env)
    try:
        for scenario, impls, conns, metric in rows:
            got: dict[str, list[float]] = {i: [] for i in impls}
            for _ in range(rounds):
                for impl in impls:
                    url = f"http://127.0.0.1:{server.port}/{scenario}/{impl}"
                    got[impl].append(wrk(url, seconds, conns)[metric])
                    server.wait_idle()
            a, b = (statistics.median(got[i]) for i in impls)
            unit = "B/s" if metric else "req/s"
            print(
                f"  {scenario} {impls[0]} {a:,.0f} {unit}  {impls[1]} {b:,.0f} {unit}  "
                f"ratio {b / a:.2f}"
            )
    finally:
        server.stop()
    for impl in ("zipfile", "streamer"):  # a fresh worker each: VmHWM only grows
        server = Gunicorn("gthread", env=env)
        try:
            url = f"http://127.0.0.1:{server.port}/zip/{impl}"
            bps = statistics.median(wrk(url, seconds, 1)[1] for _ in range(rounds))
            peak = peak_rss_kib(server) / 1024
            print(f"  zip {impl:9} {bps / 1e6:8.1f} MB/s  peak RSS {peak:.0f} MiB")
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--in-process", action="store_true")
    parser.add_argument("--cpu", action="store_true")
    args = parser.parse_args()
    if args.cpu:
        cpu_per_body(args.rounds)
        return
    in_process(args.rounds)
    if not args.in_process:
        print("Under gunicorn gthread, one worker:")
        under_gunicorn(args.rounds, args.seconds)


if __name__ == "__main__":
    main()
