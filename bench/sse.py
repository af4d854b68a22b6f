"""SSE rows: idle connections (memory, ping CPU) and fan-out latency, one asgi worker.

    .venv/bin/python -m bench.sse                 # 1,000 idle, 500 fan-out
    .venv/bin/python -m bench.sse --idle 20 --fanout 20 --seconds 2   # a smoke run

Targets (issue 13): under 50 KiB of worker memory per idle connection, near-zero CPU
between pings; the spread (p50/p99) of one event's arrival at 500 clients.
"""

from __future__ import annotations

import argparse
import resource
import selectors
import socket
import statistics
import time
from pathlib import Path

from bench.run import Gunicorn, _cpu_ticks, _status
from django_streamer.testing import fetch

CLK_TCK = 100  # /proc stat ticks per second on Linux


def open_streams(port: int, path: str, count: int) -> list[socket.socket]:
    """``count`` SSE connections, each read up to its opening comment."""
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode()
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        socks.append(sock)
    return socks


def idle_row(count: int, seconds: float, ping: float) -> list[str]:
    server = Gunicorn("asgi")
    try:
        pid = server.worker_pid()
        fetch("127.0.0.1", server.port, f"/sse/idle?ping={ping}", abort_after=1)  # warm up
        time.sleep(0.5)
        before = _status(pid, "VmRSS")
        socks = open_streams(server.port, f"/sse/idle?ping={ping}", count)
        time.sleep(1)
        per_conn = (_status(pid, "VmRSS") - before) / count
        stat = Path(f"/proc/{pid}/stat")
        ticks = _cpu_ticks(stat)
        time.sleep(seconds)
        cpu = (_cpu_ticks(stat) - ticks) / CLK_TCK / seconds * 100
        for sock in socks:
            sock.close()
        return [
            f"| {count} idle SSE connections (asgi): worker RSS per connection "
            f"| {per_conn:.1f} KiB | < 50 KiB |",
            f"| the same, worker CPU with a ping every {ping:g} s | {cpu:.2f} % of a core | ~0 |",
        ]
    finally:
        server.stop()


def fanout_row(count: int) -> list[str]:
    server = Gunicorn("asgi")
    try:
        socks = open_streams(server.port, "/sse/fanout", count)
        selector = selectors.DefaultSelector()
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, bytearray())
        time.sleep(0.5)
        published = fetch("127.0.0.1", server.port, "/sse/publish").body.decode()
        assert int(published) == count, published
        delays: list[float] = []
        deadline = time.monotonic() + 30
        while len(delays) < count and time.monotonic() < deadline:
            for key, _ in selector.select(1):
                buf = key.data
                buf += key.fileobj.recv(65536)  # type: ignore[union-attr]
                if b"data: " in buf and b"\n\n" in buf.split(b"data: ", 1)[1]:
                    stamp = float(buf.split(b"data: ", 1)[1].split(b"\n", 1)[0])
                    delays.append(time.time() - stamp)
                    selector.unregister(key.fileobj)
        for sock in socks:
            sock.close()
        ms = sorted(d * 1000 for d in delays)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        return [
            f"| one event to {count} SSE clients (asgi): arrival p50 / p99 / max "
            f"| {statistics.median(ms):.1f} / {p99:.1f} / {ms[-1]:.1f} ms | |"
        ]
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--fanout", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--ping", type=float, default=15)
    args = parser.parse_args()
    # Both ends hold one descriptor per connection; gunicorn inherits the limit.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print("| SSE | measured | target |\n|---|---|---|")
    for line in idle_row(args.idle, args.seconds, args.ping) + fanout_row(args.fanout):
        print(line)


if __name__ == "__main__":
    main()
