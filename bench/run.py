"""Benchmark stream_response() against plain Django under a real gunicorn, with wrk.

    .venv/bin/python -m bench.run              # all scenarios, prints a table
    .venv/bin/python -m bench.run --sweep      # chunk_size sweep on tiny records
    .venv/bin/python -m bench.run --only tiny  # one scenario

Each scenario runs its contenders interleaved (plain, ours, plain, ours, ...)
against the same gunicorn process, and reports the median of the rounds and the
ratio against plain Django measured in the same run. One gunicorn worker; one
wrk connection for bytes/s (per stream), four for requests/s (the worker's
throughput with its four threads busy).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import free_port, redis_figures, redis_server  # noqa: E402
from django_streamer.testing import fetch  # noqa: E402

UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}


@dataclass
class Scenario:
    key: str
    title: str
    worker: str
    metric: str  # "bytes" or "requests"
    contenders: tuple[str, ...] = ("plain", "streamer")
    target: float = 0.0
    # Bytes/s is per stream: one connection. Requests/s is a server's
    # throughput: four connections keep the gthread worker's four threads busy,
    # where one connection would mostly measure the loopback round trip.
    connections: int = 0

    def __post_init__(self) -> None:
        if not self.connections:
            self.connections = 4 if self.metric == "requests" else 1


SCENARIOS = [
    Scenario(
        "tiny", "200k rows of 33 B, bytes", "gthread", "bytes", ("plain", "naive", "streamer"), 30
    ),
    Scenario(
        "tiny",
        "200k rows of 33 B, bytes (sync worker)",
        "sync",
        "bytes",
        ("plain", "naive", "streamer"),
        30,
    ),
    Scenario(
        "tinystr", "200k rows of 33 B, str", "gthread", "bytes", ("plain", "naive", "streamer"), 30
    ),
    Scenario(
        "atiny",
        "200k rows of 33 B, async source",
        "asgi",
        "bytes",
        ("plain", "anaive", "streamer"),
        20,
    ),
    Scenario(
        "small", "10 pieces of 100 B", "gthread", "requests", ("plain", "ceiling", "streamer"), 1.15
    ),
    Scenario("large", "256 pieces of 64 KiB", "gthread", "bytes", target=0.98),
    Scenario(
        "file",
        "64 MiB file (FileResponse vs Path, 8 MiB sendfile slices)",
        "gthread",
        "bytes",
        ("plain", "streamer", "whole"),
        0.98,
    ),
]


class Gunicorn:
    def __init__(self, worker: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        app = "bench.asgi:application" if worker == "asgi" else "bench.wsgi:application"
        cmd = [
            sys.executable, "-m", "gunicorn", "-k", worker, "-w", "1",
            "-b", f"127.0.0.1:{self.port}", "--timeout", "120", "--log-level", "warning",
            *(["--threads", "4"] if worker == "gthread" else []), app,
        ]  # fmt: skip
        full_env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            **(env or {}),
        }
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("gunicorn did not start")

    def worker_pid(self) -> int:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return int(out.stdout.split()[0])

    def wait_idle(self, timeout: float = 30) -> None:
        """Wait until the worker stops burning CPU.

        wrk hangs up mid-response when its time is up; a worker that has not
        noticed yet (plain Django under the asgi worker keeps writing a
        200,000-piece body into a closed transport) would steal CPU from the
        next contender.
        """
        pid = self.worker_pid()
        stat = Path(f"/proc/{pid}/stat")
        deadline = time.monotonic() + timeout
        before = _cpu_ticks(stat)
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = _cpu_ticks(stat)
            if now - before <= 1:
                return
            before = now

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=20)


def _cpu_ticks(stat: Path) -> int:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def cpu_per_request(server: Gunicorn, url: str, seconds: int, connections: int) -> float:
    """Worker CPU seconds (user + system) per request, over one wrk run.

    Far steadier than requests/s on a shared 2-core VM, where wrk and the
    kernel's loopback copies move the wall-clock figures by 10% and more.
    """
    stat = Path(f"/proc/{server.worker_pid()}/stat")
    before = _cpu_ticks(stat)
    out = _wrk_output(url, seconds, connections)
    server.wait_idle()
    spent = (_cpu_ticks(stat) - before) / os.sysconf("SC_CLK_TCK")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return spent / requests


def _wrk_output(url: str, seconds: float, connections: int) -> str:
    return subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{int(seconds)}s", "--timeout", "30s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def wrk(url: str, seconds: float, connections: int = 1) -> tuple[float, float]:
    """Requests/s and bytes/s for ``connections`` connections hammering ``url``."""
    out = _wrk_output(url, seconds, connections)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    num, unit = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out).groups()  # type: ignore[union-attr]
    return rps, float(num) * UNITS[unit]


def run_scenario(
    sc: Scenario, rounds: int, seconds: float, query: str = "", env: dict[str, str] | None = None
) -> dict[str, float]:
    server = Gunicorn(sc.worker, env=env)
    try:
        results: dict[str, list[float]] = {c: [] for c in sc.contenders}
        for impl in sc.contenders:  # warm up
            wrk(f"http://127.0.0.1:{server.port}/{sc.key}/{impl}{query}", 1, sc.connections)
            server.wait_idle()
        for _ in range(rounds):
            for impl in sc.contenders:
                url = f"http://127.0.0.1:{server.port}/{sc.key}/{impl}{query}"
                rps, bps = wrk(url, seconds, sc.connections)
                server.wait_idle()
                results[impl].append(bps if sc.metric == "bytes" else rps)
        return {impl: statistics.median(v) for impl, v in results.items()}
    finally:
        server.stop()


def limiter_overhead(rounds: int, seconds: int) -> list[str]:
    """Requests/s of a small stream: undecorated, and behind each limiter scope."""
    sc = Scenario("limited", "", "gthread", "requests", ("none", "process", "host"))
    res = run_scenario(sc, rounds, seconds)
    server = Gunicorn("gthread")
    cpu: dict[str, list[float]] = {impl: [] for impl in sc.contenders}
    try:
        for _ in range(rounds):
            for impl in sc.contenders:
                url = f"http://127.0.0.1:{server.port}/limited/{impl}"
                cpu[impl].append(cpu_per_request(server, url, seconds, 4))
    finally:
        server.stop()
    base = statistics.median(cpu["none"])
    rows = []
    for scope, target in (("process", 2), ("host", 5)):
        cost = (1 - res[scope] / res["none"]) * 100
        mine = statistics.median(cpu[scope])
        rows.append(
            f"| limit_concurrency(scope={scope!r}) on 10 x 100 B, gthread "
            f"| {fmt(res['none'], 'requests')} undecorated | {fmt(res[scope], 'requests')} "
            f"| {cost:+.1f}% cost; worker CPU per request {base * 1e6:,.0f} -> "
            f"{mine * 1e6:,.0f} us ({(mine / base - 1) * 100:+.1f}%) | <= {target}% |"
        )
    return rows


def cluster_overhead(rounds: int, seconds: int) -> list[str]:
    """A small stream undecorated and behind a cluster-scope limit, on a local redis-server."""
    with redis_server() as (redis_url, client):
        env = {"BENCH_REDIS_URL": redis_url}
        sc = Scenario("limited", "", "gthread", "requests", ("none", "cluster"))
        res = run_scenario(sc, rounds, seconds, env=env)
        server = Gunicorn("gthread", env=env)
        try:
            url = f"http://127.0.0.1:{server.port}/limited/cluster"
            wrk(url, 1, 4)
            server.wait_idle()
            before, _ = redis_figures(client)
            out = _wrk_output(url, seconds, 4)
            after, _ = redis_figures(client)
            requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        finally:
            server.stop()
    ratio = res["cluster"] / res["none"]
    return [
        f"| limit_concurrency(scope='cluster') on 10 x 100 B, gthread, Redis on loopback "
        f"| {fmt(res['none'], 'requests')} undecorated | {fmt(res['cluster'], 'requests')} "
        f"| {ratio:.2f}x; {(after - before) / requests:.2f} Redis round trips per request "
        "| >= 0.85x, <= 2 round trips |"
    ]


def metrics_overhead(rounds: int, seconds: int) -> list[str]:
    """The same stream on twin servers, metrics on and off, interleaved."""
    rows = []
    for key, title, metric in (
        ("small", "10 x 100 B", "requests"),
        ("large", "256 x 64 KiB", "bytes"),
    ):
        on, off = Gunicorn("gthread"), Gunicorn("gthread", env={"BENCH_METRICS": "0"})
        connections = 4 if metric == "requests" else 1
        try:
            results: dict[str, list[float]] = {"on": [], "off": []}
            cpu: dict[str, list[float]] = {"on": [], "off": []}
            for _ in range(rounds + 1):  # the first round warms up
                for label, server in (("off", off), ("on", on)):
                    url = f"http://127.0.0.1:{server.port}/{key}/streamer"
                    rps, bps = wrk(url, seconds, connections)
                    server.wait_idle()
                    results[label].append(bps if metric == "bytes" else rps)
                    cpu[label].append(cpu_per_request(server, url, seconds, connections))
            on_v = statistics.median(results["on"][1:])
            off_v = statistics.median(results["off"][1:])
            on_cpu = statistics.median(cpu["on"][1:])
            off_cpu = statistics.median(cpu["off"][1:])
        finally:
            on.stop()
            off.stop()
        target = 2 if key == "small" else 1
        rows.append(
            f"| metrics on, {title}, gthread | {fmt(off_v, metric)} metrics off "
            f"| {fmt(on_v, metric)} | {(1 - on_v / off_v) * 100:+.1f}% cost; worker CPU per "
            f"request {off_cpu * 1e6:,.0f} -> {on_cpu * 1e6:,.0f} us "
            f"({(on_cpu / off_cpu - 1) * 100:+.1f}%) | <= {target}% |"
        )
    return rows


def fmt(value: float, metric: str) -> str:
    if metric == "bytes":
        return f"{value / (1 << 20):,.1f} MiB/s"
    return f"{value:,.0f} req/s"


def ttfb(rounds: int) -> list[str]:
    """A sync source (50 ms per item) under the asgi worker: time to first byte."""
    server = Gunicorn("asgi")
    try:
        firsts: dict[str, list[float]] = {"plain": [], "streamer": []}
        for _ in range(rounds):
            for impl in firsts:
                wire = fetch("127.0.0.1", server.port, f"/slow/{impl}")
                assert wire.complete and wire.first_byte is not None
                firsts[impl].append(wire.first_byte)
        plain, ours = (statistics.median(firsts[k]) for k in ("plain", "streamer"))
        return [
            "| sync source under asgi: time to first byte (20 items, 50 ms each) "
            f"| {plain * 1000:,.0f} ms | {ours * 1000:,.0f} ms | {plain / ours:.1f}x sooner "
            "| first item + flush_interval (150 ms) |"
        ]
    finally:
        server.stop()


def memory() -> list[str]:
    """Peak RSS growth of the worker while it streams 1 GiB."""
    server = Gunicorn("gthread")
    try:
        pid = server.worker_pid()
        fetch("127.0.0.1", server.port, "/small/streamer")  # import everything first
        before = _status(pid, "VmRSS")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak (VmHWM)
        wire = fetch("127.0.0.1", server.port, "/gib/streamer", timeout=120)
        assert wire.complete and len(wire.body) == 1 << 30
        peak = _status(pid, "VmHWM")
        grew = (peak - before) / 1024
        limit = (4 * 65536 + (8 << 20)) / (1 << 20)
        return [
            f"| streaming 1 GiB: worker peak RSS growth | | {grew:.1f} MiB | | < {limit:.2f} MiB |"
        ]
    finally:
        server.stop()


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])  # kB
    raise KeyError(field)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--only", default=None)
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    if args.sweep:
        sc = Scenario("tiny", "tiny rows, sync", "gthread", "bytes", ("streamer",))
        for chunk in (4096, 16384, 65536, 262144, 1 << 20):
            res = run_scenario(sc, args.rounds, args.seconds, f"?chunk={chunk}")
            print(f"chunk_size {chunk:>8}: {fmt(res['streamer'], 'bytes')}")
        return
    print("| scenario | plain Django | django-streamer | ratio | target |")
    print("|---|---|---|---|---|")
    for sc in SCENARIOS:
        if args.only and sc.key != args.only:
            continue
        res = run_scenario(sc, args.rounds, args.seconds)
        ratio = res["streamer"] / res["plain"]
        note = ""
        if "naive" in res:
            note = f" (naive rechunker: {res['naive'] / res['plain']:.1f}x)"
        if "anaive" in res:
            # The async twin of the naive rechunker; the target is >= 1.0x of it.
            note = f" (vs async naive rechunker: {res['streamer'] / res['anaive']:.2f}x, >= 1.0x)"
        if "whole" in res:
            note = f" (Path in one sendfile call, no progress: {res['whole'] / res['plain']:.2f}x)"
        if "ceiling" in res:
            note = f" (body pre-joined by hand: {res['ceiling'] / res['plain']:.2f}x)"
        print(
            f"| {sc.title}, {sc.worker} | {fmt(res['plain'], sc.metric)} "
            f"| {fmt(res['streamer'], sc.metric)} | {ratio:.2f}x{note} | >= {sc.target}x |",
            flush=True,
        )
    if not args.only or args.only == "metrics":
        print("\n".join(metrics_overhead(args.rounds, args.seconds)), flush=True)
    if not args.only or args.only == "limited":
        print("\n".join(limiter_overhead(args.rounds, args.seconds)), flush=True)
    if not args.only or args.only == "cluster":
        print("\n".join(cluster_overhead(args.rounds, args.seconds)), flush=True)
    if not args.only or args.only == "slow":
        print("\n".join(ttfb(args.rounds)), flush=True)
    if not args.only or args.only == "gib":
        print("\n".join(memory()), flush=True)


if __name__ == "__main__":
    main()
