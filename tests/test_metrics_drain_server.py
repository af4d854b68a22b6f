"""A drained stream is counted as ``drained`` under real gunicorn, and the books balance."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import pytest

from django_streamer.core.metrics import OUTCOMES, Store
from django_streamer.testing import WireResponse, fetch

from .conftest import start_gunicorn, stop_gunicorn

pytestmark = pytest.mark.server


Streams = dict[str, dict[str, float]]


@pytest.fixture(scope="module")
def drained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Streams, str, str]:
    """One SSE and one finite stream under gthread, SIGTERMed mid-stream; the figures after."""
    tmp_path = tmp_path_factory.mktemp("drain")
    extra = ["-c", "python:django_streamer.gunicorn_config", "--threads", "8"]
    extra += ["--graceful-timeout", "8"]
    srv = start_gunicorn(
        tmp_path, "gthread", extra=extra, env={"STREAMER_TEST_DRAIN_TIMEOUT": "0.5"}
    )
    run = "m" + uuid.uuid4().hex[:8]
    sse, finite = f"{run}-sse", f"{run}-finite"
    plan = {sse: f"/sse/ticks/?interval=0.1&tag={sse}"}
    plan[finite] = f"/stream/?items=20&delay=0.1&flush=0&tag={finite}"
    results: dict[str, WireResponse] = {}

    def get(name: str, path: str) -> None:
        results[name] = fetch(srv.host, srv.port, path, timeout=15)

    threads = [threading.Thread(target=get, args=item) for item in plan.items()]
    try:
        for thread in threads:
            thread.start()
        for name in plan:
            srv.wait_for_event("serving", name, timeout=15)
        time.sleep(0.3)  # a few events on the wire before the signal
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(12)
        for thread in threads:
            thread.join(5)
    finally:
        stop_gunicorn(srv)
    assert results[sse].complete and results[finite].complete
    snap = Store(str(tmp_path / f"metrics-{srv.port}")).snapshot()
    return snap.streams, sse, finite  # type: ignore[return-value]


def test_after_a_drain_every_started_stream_has_exactly_one_outcome(
    drained: tuple[Streams, str, str],
):
    streams, sse, finite = drained
    s, f = streams[sse], streams[finite]
    assert (s["started"], s["active"], f["started"], f["active"]) == (1, 0, 1, 0)
    assert f["completed"] == 1  # a finite stream runs on to its end
    for entry in (s, f):
        assert entry["started"] == sum(entry[o] for o in OUTCOMES) + entry["active"]


def test_an_sse_stream_ended_by_the_drain_counts_as_drained(drained: tuple[Streams, str, str]):
    streams, sse, _ = drained
    assert (streams[sse]["drained"], streams[sse]["completed"]) == (1, 0)
