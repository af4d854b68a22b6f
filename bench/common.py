"""What the benches share: a free port, a private redis-server and its figures, Django
in-process (a WSGI request timed, contenders interleaved) and a fake ASGI client."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any
from wsgiref.util import setup_testing_defaults

# Commands that only the limiter's Lua scripts run: counted in commandstats,
# but no round trip (a client of ours never sends them itself).
LUA_ONLY = frozenset({
    "time", "zremrangebyscore", "zrangebyscore", "zcard", "zscore", "zadd", "zrem", "zrank",
    "incr", "pexpire", "sadd", "srem", "sismember", "smembers", "exists", "publish", "del",
})  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, Any]]:
    """A private redis-server on loopback, without persistence: its URL and a client."""
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed")
    port = free_port()
    directory = tempfile.mkdtemp(prefix="bench-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=directory,
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        else:
            raise RuntimeError("redis-server did not start")
        yield f"redis://127.0.0.1:{port}/0", client
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(directory, ignore_errors=True)


def redis_figures(client: Any) -> tuple[int, float]:
    """(round trips, server usec) so far; INFO and CONFIG, the bench's own, left out."""
    trips, usec = 0, 0.0
    for name, v in client.info("commandstats").items():
        cmd = name.removeprefix("cmdstat_")
        if cmd in ("info", "config|resetstat", "config") or cmd in LUA_ONLY:
            continue
        trips += v["calls"]
        usec += v["usec"]  # a script's usec includes the commands it ran
    return trips, usec


def setup_django() -> None:
    """Django on ``bench.settings``, its limiter and metrics state in fresh directories."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django
    from django.conf import settings

    django.setup()
    settings.STREAMER_LIMITER_DIR = tempfile.mkdtemp(prefix="bench-pools-")
    settings.STREAMER_METRICS_DIR = tempfile.mkdtemp(prefix="bench-metrics-")


def wsgi_request(handler: Any, path: str, clock: Callable[[], float] = time.thread_time) -> float:
    """``clock`` seconds for one GET of ``path`` through ``handler``, body read and closed."""
    environ: dict[str, Any] = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    started = clock()
    body = handler(environ, lambda status, headers, exc_info=None: lambda data: None)
    for _ in body:
        pass
    body.close()
    return clock() - started


def interleaved_medians(
    contenders: Mapping[str, Callable[[], float]], *, rounds: int, warm: int
) -> dict[str, float]:
    """Each contender's median in microseconds: ``warm`` untimed rounds, then ``rounds``,
    one call of each contender per round, so a drift of the machine hits all alike."""
    for _ in range(warm):
        for run in contenders.values():
            run()
    times: dict[str, list[float]] = {label: [] for label in contenders}
    for _ in range(rounds):
        for label, run in contenders.items():
            times[label].append(run())
    return {label: statistics.median(v) * 1e6 for label, v in times.items()}


def asgi_scope(path: str, *, headers: Sequence[tuple[bytes, bytes]] = ()) -> dict[str, Any]:
    """The HTTP scope an ASGI server would hand Django for ``GET path`` (query included)."""
    path, _, query = path.partition("?")
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"bench"), *headers],
        "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 80),
    }  # fmt: skip


def asgi_receive(gone: asyncio.Event) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI ``receive``: the request (no body), then a disconnect once ``gone`` is set."""
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    return receive
