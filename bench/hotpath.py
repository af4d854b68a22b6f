"""The hot path in-process: CPU per request and per async stream, no server, no wrk.

    .venv/bin/python -m bench.hotpath            # both tables
    .venv/bin/python -m bench.hotpath --rounds 3000

Each request goes through Django's WSGIHandler (as gunicorn's gthread worker
calls it) and is timed in thread CPU time, which other processes on a shared
machine do not move; the contenders are interleaved request by request. The
async table times ``aiter_chunks`` against the ten-line list-and-join
rechunker (``bench.views.anaive_rechunk``) on 200,000 records of 33 bytes,
with a consumer whose sends never suspend (the worst case for a pump task)
and one whose sends do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

from bench.common import interleaved_medians, setup_django, wsgi_request

ROW = b"x" * 32 + b"\n"

# label: (url, metrics on)
REQUESTS = {
    "undecorated": ("/limited/none", False),
    "scope='process'": ("/limited/process", False),
    "scope='host'": ("/limited/host", False),
    "undecorated, metrics on": ("/limited/none", True),
    "scope='process', metrics on": ("/limited/process", True),
    "scope='host', metrics on": ("/limited/host", True),
}


def per_request(rounds: int) -> list[str]:
    from django.conf import settings

    setup_django()
    from django.core.handlers.wsgi import WSGIHandler

    from django_streamer.conf import conf

    handler = WSGIHandler()

    def one(path: str, metrics: bool) -> float:
        # Flipped in the memo (as override_settings would), outside the timing.
        settings.STREAMER_METRICS = metrics
        conf.__dict__["STREAMER_METRICS"] = metrics
        return wsgi_request(handler, path)

    contenders = {label: partial(one, *request) for label, request in REQUESTS.items()}
    # 200 warm-up rounds: imports, pools, the metrics file.
    med = interleaved_medians(contenders, rounds=rounds, warm=200)
    base = med["undecorated"]
    rows = ["| 10 x 100 B through WSGIHandler | CPU per request | over undecorated |"]
    rows.append("|---|---|---|")
    rows += [f"| {k} | {v:.1f} us | {v - base:+.1f} us |" for k, v in med.items()]
    return rows


async def _atiny(n: int) -> AsyncIterator[bytes]:
    for _ in range(n):
        yield ROW


async def _consume(chunks: AsyncIterator[bytes], suspend: bool) -> float:
    started = time.thread_time()
    async for _ in chunks:
        if suspend:
            await asyncio.sleep(0)  # a send that waits for the socket
    return time.thread_time() - started


def async_rechunker(rounds: int) -> list[str]:
    from bench.views import anaive_rechunk
    from django_streamer.core.achunking import aiter_chunks

    n = 200_000
    contenders: dict[str, Callable[[], AsyncIterator[bytes]]] = {
        "anaive": lambda: anaive_rechunk(_atiny(n)),
        "streamer": lambda: aiter_chunks(_atiny(n), chunk_size=65536, flush_interval=0.1),
    }
    rows = ["| 200k records of 33 B, async source | anaive | aiter_chunks | speed vs anaive |"]
    rows.append("|---|---|---|---|")
    for suspend in (False, True):
        times: dict[str, list[float]] = {k: [] for k in contenders}

        async def run() -> None:
            for _ in range(rounds):
                for label, make in contenders.items():
                    times[label].append(await _consume(make(), suspend))  # noqa: B023

        asyncio.run(run())
        a, s = (statistics.median(times[k]) for k in ("anaive", "streamer"))
        how = "sends suspend" if suspend else "sends never suspend"
        rows.append(f"| {how} | {a * 1e3:.2f} ms | {s * 1e3:.2f} ms | {a / s:.3f}x (>= 1.0x) |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000, help="requests per contender")
    parser.add_argument("--streams", type=int, default=21, help="async streams per contender")
    args = parser.parse_args()
    print("\n".join(per_request(args.rounds)), flush=True)
    print()
    print("\n".join(async_rechunker(args.streams)), flush=True)


if __name__ == "__main__":
    main()
