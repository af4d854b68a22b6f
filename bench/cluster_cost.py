"""What one cluster-scope acquire + release costs, in-process: no Django, no server, no wrk.

    .venv/bin/python -m bench.cluster_cost              # 3 rounds of 2,000 requests
    .venv/bin/python -m bench.cluster_cost --requests 5000 --rounds 5
    .venv/bin/python -m bench.cluster_cost --django   # also through WSGIHandler

Starts its own redis-server on a free port. Each "request" is an acquire of a
cluster-scope slot (``ClusterBackend.try_acquire``), a few microseconds of work
and the release, on one thread, as a gthread worker's request thread does it;
the same loop over the process-scope backend is the baseline. The cluster
loop runs back to back (as under load: each admission is handed the previous
request's pending release, and one ACQUIRE per reuse window asks Redis), back
to back with hand-offs off (``reuse_window=0``: each release rides with the
next admission) and with requests 20 ms apart (each release goes alone, from
the backend's thread, after the release delay). Per request it
prints: the client's CPU (this process's CPU time, every thread: deferred
releases are sent by a background thread), Redis's CPU (the ``usec`` of
``INFO commandstats``, scripts included), and the round trips (commands sent,
not counting those run inside Lua). The contenders are interleaved round by
round; figures are medians over rounds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    interleaved_medians,
    redis_figures,
    redis_server,
    setup_django,
    wsgi_request,
)

GAP = 0.02  # seconds between the idle case's requests: past the release delay


def _loop(backend: Any, requests: int, gap: float = 0.0) -> float:
    """CPU seconds of this process for ``requests`` acquire + release, flushed."""
    started = time.process_time()
    for _ in range(requests):
        lease = backend.try_acquire("bench", "k", 1000)
        assert lease is not None
        lease.release()
        if gap:
            time.sleep(gap)  # idle: the release goes alone, from the backend's thread
    flush = getattr(backend, "flush", None)
    if flush is not None:
        flush()
    return time.process_time() - started


def _django(url: str, requests: int) -> list[str]:
    os.environ["BENCH_REDIS_URL"] = url
    setup_django()
    from django.core.handlers.wsgi import WSGIHandler

    handler = WSGIHandler()
    paths = {"undecorated": "/limited/none", "scope='process'": "/limited/process"}
    paths["scope='cluster'"] = "/limited/cluster"
    # Process CPU, every thread: deferred releases are sent by the backend's thread.
    contenders = {
        label: partial(wsgi_request, handler, path, time.process_time)
        for label, path in paths.items()
    }
    med = interleaved_medians(contenders, rounds=requests, warm=300)
    base = med["undecorated"]
    rows = ["| 10 x 100 B through WSGIHandler | CPU per request | undecorated / this |"]
    rows.append("|---|---|---|")
    rows += [f"| {k} | {v:,.1f} us | {base / v:.2f}x |" for k, v in med.items()]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--django", action="store_true", help="also through WSGIHandler")
    args = parser.parse_args()

    from django_streamer.core.limiter import ProcessBackend
    from django_streamer.core.limiter.cluster.backend import ClusterBackend

    with redis_server() as (url, admin):
        cluster = ClusterBackend(url, lease=10, on_error="closed")
        carrying = ClusterBackend(url, lease=10, on_error="closed", reuse_window=0)
        process = ProcessBackend()
        for warm in (cluster, carrying, process):
            _loop(warm, 200)  # connections, script cache
        cases = ("busy", "carried", "idle")
        cpu: dict[str, list[float]] = {"process": [], **{case: [] for case in cases}}
        server: dict[str, list[float]] = {case: [] for case in cases}
        trips: dict[str, list[float]] = {case: [] for case in cases}
        n, spaced = args.requests, max(1, args.requests // 10)
        for _ in range(args.rounds):
            cpu["process"].append(_loop(process, n) / n)
            for case, backend, count, gap in (
                ("busy", cluster, n, 0.0),
                ("carried", carrying, n, 0.0),
                ("idle", cluster, spaced, GAP),
            ):
                t0, u0 = redis_figures(admin)
                cpu[case].append(_loop(backend, count, gap) / count)
                t1, u1 = redis_figures(admin)
                trips[case].append((t1 - t0) / count)
                server[case].append((u1 - u0) / count)
        cluster.close()
        carrying.close()
        django_rows = _django(url, args.requests) if args.django else []
    base = statistics.median(cpu["process"]) * 1e6
    print("| per acquire + release | client CPU | Redis CPU | round trips |")
    print("|---|---|---|---|")
    print(f"| scope='process' | {base:,.1f} us | - | 0 |")
    for case, label in (
        ("busy", "back to back (pending releases handed on)"),
        ("carried", "back to back, no hand-off (releases ride with the next admission)"),
        ("idle", f"{GAP * 1000:.0f} ms apart (releases sent by the thread)"),
    ):
        mine = statistics.median(cpu[case]) * 1e6
        print(
            f"| scope='cluster', {label} | {mine:,.1f} us "
            f"| {statistics.median(server[case]):,.1f} us | {statistics.median(trips[case]):.2f} |"
        )
    print(f"({n:,} and {spaced:,} requests x {args.rounds} rounds, medians; pid {os.getpid()})")
    if django_rows:
        print()
        print("\n".join(django_rows))


if __name__ == "__main__":
    main()
