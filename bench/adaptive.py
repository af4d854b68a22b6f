"""No limit, the best fixed limit and ``"auto"`` in one run, many clients, 4 "DB connections".

    .venv/bin/python -m bench.adaptive                 # 64 clients, 10 s a contender
    .venv/bin/python -m bench.adaptive --clients 128 --seconds 20

One gunicorn asgi worker serves ``bench/adaptive_views.py``: a stream whose first
byte waits for one of four connections (10 ms each). Clients loop on raw sockets:
a 200 read to its end counts as served (its time kept for the percentiles); a 503
counts as refused, and that client waits 10 ms before its next request. Fixed
limits are swept (a fresh server each, ``BENCH_FIXED_LIMIT``) and the one with the
most served requests/s is "best fixed". Targets (issue 24): "auto" serves at least
0.9x the requests/s of no limit, with a 90th percentile at most half of no limit's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import free_port  # noqa: E402

FIXED_LIMITS = (2, 4, 6, 8, 12, 16)


@dataclass
class Tally:
    served: list[float] = field(default_factory=list)  # seconds per served request
    refused: int = 0
    failed: int = 0


async def one_request(port: int, path: str) -> tuple[int, bool]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()  # the server closes: the whole response
    finally:
        writer.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    complete = data.endswith(b"0\r\n\r\n") or b"Content-Length" in data
    return status, complete


async def client(port: int, path: str, until: float, tally: Tally) -> None:
    while time.monotonic() < until:
        started = time.monotonic()
        try:
            status, complete = await one_request(port, path)
        except OSError:
            tally.failed += 1
            continue
        if status == 200 and complete:
            tally.served.append(time.monotonic() - started)
        elif status == 503:
            tally.refused += 1
            await asyncio.sleep(0.01)
        else:
            tally.failed += 1


async def load(port: int, path: str, clients: int, seconds: float) -> Tally:
    tally = Tally()
    until = time.monotonic() + seconds
    await asyncio.gather(*(client(port, path, until, tally) for _ in range(clients)))
    return tally


def start(port: int, fixed: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "BENCH_FIXED_LIMIT": str(fixed),
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "gunicorn", "--worker-class", "asgi", "--workers", "1"]
    cmd += ["--bind", f"127.0.0.1:{port}", "--worker-connections", "2000", "bench.asgi"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("gunicorn did not listen")


def measure(impl: str, fixed: int, clients: int, seconds: float) -> dict[str, float]:
    port = free_port()
    proc = start(port, fixed)
    try:
        asyncio.run(load(port, f"/adaptive/{impl}", clients, 1.0))  # warm up (and learn)
        tally = asyncio.run(load(port, f"/adaptive/{impl}", clients, seconds))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    served = sorted(tally.served)
    p90 = served[int(len(served) * 0.9)] if served else float("nan")
    return {
        "rps": len(served) / seconds,
        "p50_ms": 1000 * statistics.median(served) if served else float("nan"),
        "p90_ms": 1000 * p90,
        "refused": tally.refused,
        "failed": tally.failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    rows = {"no limit": measure("none", 0, args.clients, args.seconds)}
    sweep = {n: measure("fixed", n, args.clients, args.seconds) for n in FIXED_LIMITS}
    best = max(sweep, key=lambda n: sweep[n]["rps"])
    rows[f"best fixed ({best})"] = sweep[best]
    rows['"auto"'] = measure("auto", 0, args.clients, args.seconds)
    print(f"{args.clients} clients, {args.seconds:.0f} s each, 4 connections x 10 ms\n")
    print("| contender | served/s | p50 ms | p90 ms | refused | failed |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(
            f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} "
            f"| {r['refused']:.0f} | {r['failed']:.0f} |"
        )
    none, auto = rows["no limit"], rows['"auto"']
    print(
        f"\nauto / no limit: {auto['rps'] / none['rps']:.2f}x served/s (target >= 0.9), "
        f"p90 {auto['p90_ms'] / none['p90_ms']:.2f}x (target <= 0.5)"
    )
    print("fixed sweep:", {n: round(r["rps"]) for n, r in sweep.items()})


if __name__ == "__main__":
    main()
