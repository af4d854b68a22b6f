"""The dashboard's fleet view over two gunicorn masters that share nothing but Redis.

Each master has its own state directories, database and fleet host name; the
JSON and the page of either show both hosts, and the totals are their sums.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from django_streamer.testing import fetch

from .conftest import Server, Session, make_database, start_gunicorn, stop_gunicorn
from .redisd import RedisServer, running_redis
from .test_dashboard_browser import log_in, page  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.server]
DATA = "/admin/streaming/data.json"


@dataclass
class Fleet:
    redis: RedisServer
    a: Server
    b: Server


def start_host(tmp_path: Path, redis: RedisServer, name: str) -> Server:
    home = tmp_path / name
    home.mkdir()
    env = {
        "STREAMER_TEST_REDIS_URL": redis.url,
        "STREAMER_TEST_FLEET": "1",
        "STREAMER_TEST_FLEET_HOST": name,
        "STREAMER_TEST_DB": str(make_database(home)),
    }
    config = ["-c", "python:django_streamer.gunicorn_config", "--threads", "8"]
    return start_gunicorn(home, "gthread", workers=2, extra=config, env=env)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    for redis in running_redis(tmp_path):
        a = start_host(tmp_path, redis, "host-a")
        b = start_host(tmp_path, redis, "host-b")
        try:
            yield Fleet(redis, a, b)
        finally:
            stop_gunicorn(a)
            if b.proc.poll() is None:
                stop_gunicorn(b)


def slow_streams(server: Server, tags: list[str], seconds: float) -> list[threading.Thread]:
    """One slow stream per tag (the test view names its stream after the tag)."""
    threads = []
    for tag in tags:
        path = f"/stream/?kind=sync&items={int(seconds * 10)}&delay=0.1&flush=0&tag={tag}"
        t = threading.Thread(target=fetch, args=(server.host, server.port, path), daemon=True)
        t.start()
        threads.append(t)
    return threads


def tags(n: int) -> list[str]:
    return ["f" + uuid.uuid4().hex[:8] for _ in range(n)]


def until(condition: Any, timeout: float) -> float:
    started = time.monotonic()
    while True:
        value = condition()
        if value:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.1)


def started_on(server: Server, names: list[str]) -> float:
    """``streams_started_total`` of these streams, from this host's own endpoint."""
    body = fetch(server.host, server.port, "/streaming/metrics/").body.decode()
    total = 0.0
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "django_streamer_streams_started_total":
                total += sample.value if sample.labels["stream"] in names else 0.0
    return total


def test_the_json_shows_both_hosts_and_fleet_totals_are_their_sums(fleet: Fleet):
    session = Session(fleet.a)
    on_a, on_b = tags(2), tags(1)
    threads = [*slow_streams(fleet.a, on_a, 4), *slow_streams(fleet.b, on_b, 4)]
    data: dict[str, Any] = {}

    def both_streaming() -> bool:
        data.update(json.loads(session.get(DATA)))
        active = {h["host"]: h["active"] for h in data.get("hosts", [])}
        return active == {"host-a": 2, "host-b": 1}

    until(both_streaming, timeout=5)
    assert data["fleet"] is None
    hosts = {h["host"]: h for h in data["hosts"]}
    assert hosts["host-a"]["last_seen"] == 0.0  # read now, not from Redis
    assert 0 <= hosts["host-b"]["last_seen"] < 2
    assert data["processes"] == sum(h["processes"] for h in data["hosts"]) >= 2
    streams = data["streams"]
    assert [streams[t]["active"] for t in on_a + on_b] == [1, 1, 1]
    assert sorted((a["host"], a["stream"]) for a in data["active"]) == sorted(
        [("host-a", on_a[0]), ("host-a", on_a[1]), ("host-b", on_b[0])]
    )
    assert sum(streams[t]["bytes_per_second"] for t in on_a + on_b) == pytest.approx(
        sum(h["bytes_per_second"] for h in data["hosts"])
    )
    for t in threads:
        t.join(10)
    # Prometheus stays per host: the fleet's started is the sum of the two endpoints.
    everyone = on_a + on_b
    assert (started_on(fleet.a, everyone), started_on(fleet.b, everyone)) == (2, 1)

    def totals() -> list[int]:
        streams = json.loads(session.get(DATA))["streams"]
        return [streams[t]["started"] + streams[t]["completed"] for t in everyone]

    until(lambda: totals() == [2, 2, 2], timeout=3)  # b's figures reach Redis within 1 s
    # Host b's own dashboard sees the fleet too.
    other = json.loads(Session(fleet.b).get(DATA))
    assert sorted(h["host"] for h in other["hosts"]) == ["host-a", "host-b"]


def test_a_killed_master_drops_out_within_10_s(fleet: Fleet):
    session = Session(fleet.a)
    names = lambda: sorted(h["host"] for h in json.loads(session.get(DATA))["hosts"])  # noqa: E731
    until(lambda: names() == ["host-a", "host-b"], timeout=5)
    killed = time.monotonic()
    for pid in [fleet.b.proc.pid, *fleet.b.worker_pids()]:
        os.kill(pid, signal.SIGKILL)
    fleet.b.proc.wait()
    until(lambda: names() == ["host-a"], timeout=10)
    took = time.monotonic() - killed
    assert took < 10
    print(f"host-b dropped out of the fleet {took:.2f} s after SIGKILL")


def test_redis_down_shows_this_host_and_says_the_fleet_is_unavailable(fleet: Fleet):
    session = Session(fleet.a)
    until(lambda: len(json.loads(session.get(DATA))["hosts"]) == 2, timeout=5)
    fleet.redis.stop()
    started = time.monotonic()
    data = json.loads(session.get(DATA))  # a 500 would raise here
    assert time.monotonic() - started < 2
    assert [h["host"] for h in data["hosts"]] == ["host-a"]
    assert data["fleet"].startswith("unavailable")


def test_the_fleet_dashboard_in_chromium_shows_both_hosts(fleet: Fleet, page):  # noqa: F811
    threads = slow_streams(fleet.b, tags(1), 4)
    base = f"http://{fleet.a.host}:{fleet.a.port}"
    log_in(page, base)
    page.goto(f"{base}/admin/streaming/")
    page.wait_for_selector("#streamer-hosts [data-host='host-b']", timeout=8000)
    page.wait_for_function(
        "document.querySelector(\"[data-host-active='host-b']\")?.textContent === '1'",
        timeout=8000,
    )
    hosts = page.locator("#streamer-hosts td[data-host]").all_text_contents()
    assert sorted(hosts) == ["host-a", "host-b"]
    assert page.locator("#streamer-scope").text_content() == "Fleet-wide over 2 host(s)"
    assert "host-b:" in page.locator("#streamer-active").text_content()
    os.makedirs(Path(__file__).parent / "artifacts", exist_ok=True)
    page.screenshot(path=str(Path(__file__).parent / "artifacts" / "fleet.png"), full_page=True)
    for t in threads:
        t.join(10)


def test_a_malformed_snapshot_is_skipped_and_the_page_says_so(fleet: Fleet, page):  # noqa: F811
    # Issue 20: one host's bad snapshot made data.json a 500 on every host, and
    # a NaN made it invalid JSON that froze the page.
    from .test_fleet import plant

    with override_settings(STREAMER_REDIS_URL=fleet.redis.url):
        plant(fleet.redis.url, "host-old", json.dumps({"processes": 2, "streams": []}))
        plant(fleet.redis.url, "host-nan", '{"processes": NaN}')
    session = Session(fleet.a)
    until(lambda: len(json.loads(session.get(DATA))["hosts"]) == 2, timeout=5)
    data = json.loads(session.get(DATA), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert sorted(h["host"] for h in data["hosts"]) == ["host-a", "host-b"]
    assert data["unreadable"] == ["host-nan", "host-old"]
    base = f"http://{fleet.a.host}:{fleet.a.port}"
    log_in(page, base)
    page.goto(f"{base}/admin/streaming/")
    line = page.locator("#streamer-unreadable")
    line.wait_for(state="visible", timeout=8000)
    assert line.text_content() == (
        "2 hosts' snapshots were unreadable (host-nan, host-old): not counted."
    )
    page.wait_for_selector("#streamer-hosts [data-host='host-b']", timeout=8000)
