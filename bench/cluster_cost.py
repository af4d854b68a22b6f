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
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Commands that only Lua runs here: counted in commandstats, but no round trip.
_LUA_ONLY = {
    "time", "zremrangebyscore", "zrangebyscore", "zcard", "zscore", "zadd", "zrem", "zrank",
    "incr", "pexpire", "sadd", "srem", "sismember", "smembers", "exists", "publish", "del",
}  # fmt: skip


GAP = 0.02  # seconds between the idle case's requests: past the release delay


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_figures(client: Any) -> tuple[int, float]:
    """(round trips, server usec) so far, INFO itself left out."""
    stats = client.info("commandstats")
    trips, usec = 0, 0.0
    for name, v in stats.items():
        cmd = name.removeprefix("cmdstat_")
        if cmd in ("info", "config|resetstat", "config"):
            continue
        if cmd not in _LUA_ONLY:
            trips += v["calls"]
            usec += v["usec"]  # a script's usec includes the commands it ran
    return trips, usec


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
    import tempfile

    os.environ["BENCH_REDIS_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django
    from django.conf import settings

    django.setup()
    settings.STREAMER_LIMITER_DIR = tempfile.mkdtemp(prefix="bench-pools-")
    settings.STREAMER_METRICS_DIR = tempfile.mkdtemp(prefix="bench-metrics-")
    from wsgiref.util import setup_testing_defaults

    from django.core.handlers.wsgi import WSGIHandler

    handler = WSGIHandler()

    def one(path: str) -> float:
        environ: dict[str, Any] = {"PATH_INFO": path}
        setup_testing_defaults(environ)
        started = time.process_time()
        body = handler(environ, lambda status, headers, exc_info=None: lambda data: None)
        for _ in body:
            pass
        body.close()
        return time.process_time() - started

    paths = {"undecorated": "/limited/none", "scope='process'": "/limited/process"}
    paths["scope='cluster'"] = "/limited/cluster"
    times: dict[str, list[float]] = {label: [] for label in paths}
    for _ in range(300):
        for path in paths.values():
            one(path)
    for _ in range(requests):
        for label, path in paths.items():
            times[label].append(one(path))
    med = {label: statistics.median(v) * 1e6 for label, v in times.items()}
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

    import redis

    from django_streamer.core.limiter import ProcessBackend
    from django_streamer.core.limiter.cluster.backend import ClusterBackend

    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed")
    port = _free_port()
    directory = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
    )
    try:
        admin = redis.Redis(port=port)
        for _ in range(200):
            try:
                admin.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        url = f"redis://127.0.0.1:{port}/0"
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
                t0, u0 = _server_figures(admin)
                cpu[case].append(_loop(backend, count, gap) / count)
                t1, u1 = _server_figures(admin)
                trips[case].append((t1 - t0) / count)
                server[case].append((u1 - u0) / count)
        cluster.close()
        carrying.close()
        django_rows = _django(url, args.requests) if args.django else []
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(directory, ignore_errors=True)
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
