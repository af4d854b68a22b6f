"""A real redis-server for the cluster tests, on a free port, with no persistence.

A missing redis-server fails the test (tests/run.sh installs it): the cluster
scope is only proven against a real Redis.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from django_streamer.core.limiter.cluster.backend import ClusterBackend

from .conftest import ROOT, free_port


class RedisServer:
    def __init__(self, directory: Path, *, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start empty (no RDB, no AOF) and wait until it answers."""
        log = open(self.directory / f"redis-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.directory)),
                *(("--requirepass", self.password) if self.password else ()),
            ],
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):  # up, asks for a password
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """Refuse connections from now on."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def hang(self) -> None:
        """Accept connections but answer nothing (SIGSTOP)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def restart_empty(self) -> None:
        self.stop()
        self.start()


def running_redis(directory: Path, *, password: str | None = None) -> Iterator[RedisServer]:
    """The body of a ``redis_server`` fixture: a server, stopped afterwards."""
    server = RedisServer(directory, password=password)
    yield server
    if server.proc is not None:
        server.resume()
        server.stop()


made_backends: list[ClusterBackend] = []  # closed by conftest's closing_backends


def backend(server: RedisServer, **options: object) -> ClusterBackend:
    """A cluster backend on ``server`` (``on_error="closed"`` unless given); a test
    module using it marks itself ``usefixtures("closing_backends")``."""
    options.setdefault("on_error", "closed")
    made = ClusterBackend(server.url, **options)  # type: ignore[arg-type]
    made_backends.append(made)
    return made


HOLD = """
import sys, time
from django_streamer.core.limiter.cluster.backend import ClusterBackend
backend = ClusterBackend(sys.argv[1], lease=float(sys.argv[2]), on_error="closed")
leases = [backend.try_acquire("held", "k", 5) for _ in range(2)]
assert all(leases)
print("held", flush=True)
time.sleep(60)
"""


@contextmanager
def holding(server: RedisServer, lease: float) -> Iterator[int]:
    """Another process holding two leases of ("held", "k") while the block runs
    (its heartbeat renewing them); its pid. SIGKILLed at the end: no release."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLD, server.url, str(lease)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "held\n"
            yield proc.pid
        finally:
            proc.kill()


def kill_holder(server: RedisServer, lease: float) -> int:
    """Start a process holding two leases of ("held", "k"), SIGKILL it, return its pid."""
    with holding(server, lease) as pid:
        return pid


def until(condition: Callable[[], object], timeout: float, step: float = 0.01) -> float:
    """Seconds until ``condition()`` holds; fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(step)
    return time.monotonic() - started
