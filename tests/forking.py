"""Forked processes for the metrics-store tests: one that exits, one killed while it holds."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django_streamer.core.metrics import Store, StreamMetrics
from django_streamer.core.recorder import Outcome


def stream(store: Store, name: str, chunks: list[int], outcome: Outcome, path: str = "/x") -> None:
    """One whole stream recorded in ``store``."""
    rec = StreamMetrics(store, name, path)
    rec.start()
    for n in chunks:
        rec.chunk(n)
    rec.finish(outcome)


def in_child(target: Callable[..., Any], *args: Any) -> int:
    """Run ``target(*args)`` in a forked child until it exits; its wait status
    (the exit code ``target`` returns, or 99 if it raised)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            code = target(*args) or 0
        except BaseException:
            code = 99
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


@contextmanager
def killed_child(setup: Callable[[], Any]) -> Iterator[int]:
    """Run ``setup()`` in a forked child that then waits; yield its pid while it
    lives, and SIGKILL it (and reap it) when the block ends."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            setup()
            os.write(write, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"x", "the child failed before it was ready"
        yield pid
    finally:
        os.close(read)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
