"""The shipped gunicorn hooks in a ``startproject``-shaped project.

``startproject`` sets ``DJANGO_SETTINGS_MODULE`` in ``wsgi.py`` (``tests/wsgi.py``
does the same), which only the workers import; the arbiter's environment has no
such variable. The hooks must work there all the same.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from django_streamer.conf import redis_prefix
from django_streamer.core.limiter.cluster.backend import ClusterBackend
from django_streamer.testing import fetch

from .conftest import start_gunicorn, stop_gunicorn
from .redisd import running_redis

pytestmark = pytest.mark.server
# Long, so that only the arbiter's child_exit can give the slot back in time.
LEASE = 20.0


def test_a_sigkilled_workers_cluster_slot_is_back_at_once_without_the_variable(
    tmp_path: Path,
) -> None:
    for redis in running_redis(tmp_path):
        env = {
            "STREAMER_TEST_REDIS_URL": redis.url,
            "STREAMER_TEST_CLUSTER_LEASE": str(LEASE),
            "STREAMER_TEST_URLCONF": "tests.cluster_views",
        }
        config = ["-c", "python:django_streamer.gunicorn_config", "--threads", "8"]
        server = start_gunicorn(
            tmp_path, "gthread", workers=2, extra=config, env=env, unset=("DJANGO_SETTINGS_MODULE",)
        )
        reader = ClusterBackend(redis.url, on_error="closed", prefix=redis_prefix())
        try:
            t = "t" + uuid.uuid4().hex[:10]
            with ThreadPoolExecutor(1) as pool:
                path = f"/cluster/reject/?items=1000&delay=0.05&tag={t}"
                holder = pool.submit(fetch, server.host, server.port, path, timeout=60)
                pid = int(server.wait_for_event("admitted", t)[0])
                assert reader.in_use("c-reject", "", 3) == 1
                killed = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                while reader.in_use("c-reject", "", 3) and time.monotonic() - killed < LEASE:
                    time.sleep(0.01)
                took = time.monotonic() - killed
                assert not holder.result().complete
            print(f"slot back {took:.2f} s after SIGKILL")
            assert took < 5.0, (took, server.log())  # the lease alone: 20 s
            assert "could not" not in server.log()
        finally:
            reader.close()
            stop_gunicorn(server)


@pytest.mark.parametrize(("graceful", "warned"), [(3, True), (8, False)])
def test_w005_compares_the_drain_spread_with_the_real_graceful_timeout(
    tmp_path: Path, graceful: int, warned: bool
) -> None:
    # graceful_timeout from the command line, as a deployment sets it: the
    # process running `manage.py check` never sees it; the worker does.
    config = ["-c", "python:django_streamer.gunicorn_config", "--graceful-timeout", str(graceful)]
    server = start_gunicorn(
        tmp_path, "gthread", extra=config, env={"STREAMER_TEST_DRAIN_TIMEOUT": "5"}
    )
    try:
        deadline = time.monotonic() + 10
        while "Booting worker" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        fetch(server.host, server.port, "/stream/?kind=sync&items=1")  # the worker is up
    finally:
        stop_gunicorn(server)
    log = server.log()
    expected = (
        f"django_streamer.W005: STREAMER_DRAIN_SPREAD (5.0 s) is not shorter than "
        f"gunicorn's graceful_timeout ({graceful} s)"
    )
    assert (expected in log) is warned, log


def test_a_stopped_workers_metrics_file_is_folded_without_the_variable(tmp_path: Path) -> None:
    # SIGTTOU: the arbiter stops one worker and starts none in its place, and
    # nothing reads the metrics, so only its child_exit hook can fold the file.
    config = ["-c", "python:django_streamer.gunicorn_config", "--threads", "4"]
    server = start_gunicorn(
        tmp_path, "gthread", workers=2, extra=config, unset=("DJANGO_SETTINGS_MODULE",)
    )
    metrics = tmp_path / f"metrics-{server.port}"
    try:
        pids = server.worker_pids()
        deadline = time.monotonic() + 20
        while any(not list(metrics.rglob(f"p-{pid}-*.bin")) for pid in pids):
            assert time.monotonic() < deadline, "not every worker served a stream"
            fetch(server.host, server.port, "/stream/?kind=sync&items=1")
        os.kill(server.proc.pid, signal.SIGTTOU)
        deadline = time.monotonic() + 10
        while len(server.worker_pids()) == 2:
            assert time.monotonic() < deadline, "no worker stopped"
            time.sleep(0.05)
        (stopped,) = set(pids) - set(server.worker_pids())
        deadline = time.monotonic() + 5
        while list(metrics.rglob(f"p-{stopped}-*.bin")):
            assert time.monotonic() < deadline, (sorted(metrics.rglob("*.bin")), server.log())
            time.sleep(0.05)
    finally:
        stop_gunicorn(server)
