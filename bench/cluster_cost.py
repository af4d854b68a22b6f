"""What one cluster-scope acquire + release costs, in-process: no Django, no server, no wrk.

    .venv/bin/python -m bench.cluster_cost              # 3 rounds of 2,000 requests
    .venv/bin/python -m bench.cluster_cost --requests 5000 --rounds 5

Starts its own redis-server on a free port. Each "request" is an acquire of a
cluster-scope slot (``ClusterBackend.try_acquire``), a few microseconds of work
and the release, on one thread, as a gthread worker's request thread does it;
the same loop over the process-scope backend is the baseline. Per request it
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


def _loop(backend: Any, requests: int) -> float:
    """CPU seconds of this process for ``requests`` acquire + release, flushed."""
    started = time.process_time()
    for _ in range(requests):
        lease = backend.try_acquire("bench", "k", 1000)
        assert lease is not None
        lease.release()
    flush = getattr(backend, "flush", None)
    if flush is not None:
        flush()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
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
        process = ProcessBackend()
        _loop(cluster, 200)  # warm: connections, script cache
        _loop(process, 200)
        cpu: dict[str, list[float]] = {"process": [], "cluster": []}
        server: list[float] = []
        trips: list[float] = []
        n = args.requests
        for _ in range(args.rounds):
            cpu["process"].append(_loop(process, n) / n)
            t0, u0 = _server_figures(admin)
            cpu["cluster"].append(_loop(cluster, n) / n)
            t1, u1 = _server_figures(admin)
            trips.append((t1 - t0) / n)
            server.append((u1 - u0) / n)
        cluster.close()
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(directory, ignore_errors=True)
    base = statistics.median(cpu["process"]) * 1e6
    mine = statistics.median(cpu["cluster"]) * 1e6
    print("| per acquire + release | client CPU | Redis CPU | round trips |")
    print("|---|---|---|---|")
    print(f"| scope='process' | {base:,.1f} us | - | 0 |")
    print(
        f"| scope='cluster' | {mine:,.1f} us | {statistics.median(server):,.1f} us "
        f"| {statistics.median(trips):.2f} |"
    )
    print(f"({n:,} requests x {args.rounds} rounds, medians; pid {os.getpid()})")


if __name__ == "__main__":
    main()
