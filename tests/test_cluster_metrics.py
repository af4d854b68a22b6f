"""Cluster pools on the Prometheus endpoint: the cluster-wide count, errors and fallback."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse
from django.test import Client, RequestFactory, override_settings
from prometheus_client.parser import text_string_to_metric_families

from django_streamer import limit_concurrency
from django_streamer.cluster import get_backend
from django_streamer.conf import redis_prefix
from django_streamer.core.limiter.cluster.backend import ClusterBackend
from django_streamer.metrics import get_store
from django_streamer.metrics.wiring import backend_error

from .redisd import RedisServer, running_redis

# The test client reconnects Django's close_old_connections, so closing a held
# response after a scrape checks the database connection.
pytestmark = pytest.mark.django_db


@pytest.fixture
def redis_server(tmp_path: Path, settings: Any) -> Iterator[RedisServer]:
    settings.STREAMER_METRICS_DIR = str(tmp_path / "metrics")
    for server in running_redis(tmp_path):
        settings.STREAMER_REDIS_URL = server.url
        yield server


def cluster_view(limit: int) -> Any:
    @limit_concurrency(limit, scope="cluster", name="m" + uuid.uuid4().hex[:8])
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    return view


def scraped(pool: str) -> dict[str, float]:
    """The endpoint's pool samples for ``pool``: family name -> value."""
    body = Client().get("/streaming/metrics/").content.decode()
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.labels.get("limiter") == pool and not sample.name.endswith(
                ("_bucket", "_sum", "_count", "_created")
            ):
                found[sample.name] = sample.value
    return found


def scraped_soon(pool: str, *, in_use: float) -> None:
    """The scrape shows ``in_use`` within 100 ms (another host's release is deferred)."""
    deadline = time.monotonic() + 0.1
    while scraped(pool)["django_streamer_limiter_in_use"] != in_use:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_in_use_is_cluster_wide_and_errors_and_fallback_are_zero(redis_server: RedisServer):
    view = cluster_view(3)
    held = view(RequestFactory().get("/"))
    assert held.status_code == 200
    other_host = ClusterBackend(redis_server.url, on_error="closed", prefix=redis_prefix())
    try:
        lease = other_host.try_acquire(view.limit_pool_name, "", 3)  # held elsewhere
        assert lease is not None
        figures = scraped(view.limit_pool_name)
        assert figures["django_streamer_limiter_in_use"] == 2  # this host holds 1
        assert figures["django_streamer_limiter_fallback"] == 0
        assert figures["django_streamer_limiter_backend_errors_total"] == 0
        lease.release()  # deferred: seen here within the release delay
        held.close()
        scraped_soon(view.limit_pool_name, in_use=0)
    finally:
        other_host.close()


def test_redis_down_counts_backend_errors_and_shows_the_fallback(redis_server: RedisServer):
    view = cluster_view(2)
    view(RequestFactory().get("/")).close()
    get_backend().flush()  # else the next admission is handed that pending release
    redis_server.stop()
    with override_settings(STREAMER_CLUSTER_ON_ERROR="local"):
        response = view(RequestFactory().get("/"))
        assert response.status_code == 200  # the host pool admitted it
        figures = scraped(view.limit_pool_name)
        response.close()
    assert figures["django_streamer_limiter_backend_errors_total"] == 1
    assert figures["django_streamer_limiter_fallback"] == 1
    assert figures["django_streamer_limiter_in_use"] == 1  # the host's own count


def test_backend_errors_are_counted_host_wide_not_per_process(redis_server: RedisServer):
    name = "m" + uuid.uuid4().hex[:8]
    view = cluster_view(1)
    view(RequestFactory().get("/")).close()  # a cluster pool this host knows
    get_store().file()  # the parent's file exists before the fork
    pid = os.fork()
    if pid == 0:  # another worker of this host: two errors, then it dies
        code = 1
        try:
            backend_error(name)
            backend_error(name)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    backend_error(name)
    assert scraped(name)["django_streamer_limiter_backend_errors_total"] == 3


def test_a_keyed_pool_s_in_use_counts_every_key_cluster_wide(redis_server: RedisServer):
    name = "k" + uuid.uuid4().hex[:8]

    @limit_concurrency(1, scope="cluster", name=name, key=lambda r: r.GET["who"])
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    held = [view(RequestFactory().get("/", {"who": who})) for who in ("ann", "bob")]
    assert [r.status_code for r in held] == [200, 200]
    other_host = ClusterBackend(redis_server.url, on_error="closed", prefix=redis_prefix())
    try:
        lease = other_host.try_acquire(name, "cy", 1)
        assert lease is not None
        figures = scraped(name)
        assert figures["django_streamer_limiter_in_use"] == 3  # this host holds 2
        # Issue 19: "in use 3, limit 1" read as over-admission; the limit is per key.
        assert figures["django_streamer_limiter_busiest_key_in_use"] == 1
        lease.release()  # deferred: seen here within the release delay
        for response in held:
            response.close()
        scraped_soon(name, in_use=0)
        # Each admission drops the (two) oldest keys nothing holds from the index.
        for _ in range(2):
            other_host.try_acquire(name, "dee", 1).release()  # type: ignore[union-attr]
            other_host.flush()
        dee = other_host.keys(name, "dee")
        assert other_host.client.zrange(dee.index, 0, -1) == [dee.base.encode()]
    finally:
        other_host.close()


def test_a_keyed_pool_s_index_keeps_at_most_its_cap(redis_server: RedisServer):
    # One entry per client (key="ip" over IPv6): the oldest go past the cap.
    b = ClusterBackend(redis_server.url, on_error="closed", index_cap=20)
    try:
        leases = [b.try_acquire("ips", f"2001:db8::{i:x}", 1) for i in range(60)]
        assert all(leases)  # all held: none of them is dropped as unused
        assert b.client.zcard(b.index("ips")) == 20
        assert b.in_use_many(["ips"]) == {"ips": (20, 1)}  # the count covers the indexed keys
    finally:
        b.close()


def test_pruning_and_counting_a_huge_index_holds_redis_up_for_no_call(
    redis_server: RedisServer,
):
    # An index grown large (by an earlier version, or a cap raised and lowered):
    # no single script may walk all of it; 300,000 took 1.56 s in one call.
    b = ClusterBackend(redis_server.url, on_error="closed", index_cap=1000)
    admin = b.client.__class__.from_url(redis_server.url)
    try:
        index = b.index("huge")
        for first in range(0, 200_000, 20_000):
            admin.zadd(index, {f"streamer:{{gone{i}}}": i for i in range(first, first + 20_000)})
        admin.config_set("slowlog-log-slower-than", 20_000)  # microseconds
        admin.slowlog_reset()
        for _ in range(3):
            b.try_acquire("huge", "k", 1).release()  # type: ignore[union-attr]
            b.flush()
        assert b.in_use_many(["huge"]) == {"huge": (0, 0)}
        assert admin.slowlog_len() == 0, admin.slowlog_get()  # no call took 20 ms
        # Each admission dropped at most 100 past the cap (and two unused).
        assert 200_000 - 3 * 102 <= admin.zcard(index) < 200_000
    finally:
        admin.close()
        b.close()
