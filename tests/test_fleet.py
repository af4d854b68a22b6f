"""The fleet view in one process: merging hosts, expiry, Redis away, election, settings."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core.checks import run_checks

from django_streamer.core.recorder import Outcome
from django_streamer.metrics import fleet, get_store, snapshot_json
from django_streamer.metrics.dashboard import RateTracker
from django_streamer.metrics.wiring import stream_recorder

from .conftest import free_port
from .redisd import RedisServer


class _Named:
    def __init__(self, name: str) -> None:
        self.name, self.path = name, "/x/"


def stream(name: str, nbytes: int, *, finish: bool = True) -> Any:
    rec = stream_recorder(_Named(name))  # type: ignore[arg-type]
    assert rec is not None
    rec.start()
    rec.chunk(nbytes)
    if finish:
        rec.finish(Outcome.COMPLETED)
    return rec


def as_host(settings: Any, tmp_path: Path, host: str) -> None:
    settings.STREAMER_METRICS_DIR = str(tmp_path / f"metrics-{host}")
    settings.STREAMER_FLEET_HOST = host
    settings.STREAMER_FLEET = True


def fleet_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "django-streamer-fleet"]


def test_without_redis_the_json_is_this_host_s_as_before(settings: Any, tmp_path: Path):
    settings.STREAMER_METRICS_DIR = str(tmp_path / "m")
    settings.STREAMER_REDIS_URL = None
    stream("solo", 10)
    data = snapshot_json()
    assert "hosts" not in data and "fleet" not in data
    assert data["streams"]["solo"]["bytes"] == 10


def test_hosts_are_listed_and_their_figures_summed(
    settings: Any, tmp_path: Path, redis_server: RedisServer
):
    settings.STREAMER_REDIS_URL = redis_server.url
    name = "s" + uuid.uuid4().hex[:6]
    as_host(settings, tmp_path, "other")
    stream(name, 100)
    running = stream(name, 7, finish=False)
    fleet.publish(redis_server.url, RateTracker())
    as_host(settings, tmp_path, "me")
    stream(name, 1000)
    data = snapshot_json()
    assert data["fleet"] is None
    assert [(h["host"], h["active"]) for h in data["hosts"]] == [("me", 0), ("other", 1)]
    figures = data["streams"][name]
    assert (figures["started"], figures["completed"], figures["active"]) == (3, 2, 1)
    assert figures["bytes"] == 1107 and figures["chunk_size_max"] == 1000
    assert [(a["host"], a["bytes"]) for a in data["active"]] == [("other", 7)]
    running.finish(Outcome.COMPLETED)


def test_a_host_unheard_for_the_expiry_drops_out(
    settings: Any, tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(fleet, "EXPIRY", 0.3)
    settings.STREAMER_REDIS_URL = redis_server.url
    as_host(settings, tmp_path, "gone")
    fleet.publish(redis_server.url, RateTracker())
    as_host(settings, tmp_path, "me")
    assert [h["host"] for h in snapshot_json()["hosts"]] == ["me", "gone"]
    time.sleep(0.4)
    assert [h["host"] for h in snapshot_json()["hosts"]] == ["me"]


GOOD = {"processes": 1, "streams": {}, "pools": {}, "active_hidden": 0, "store_errors": 0}
# What a buggy or older publisher may write (issue 20): each must be skipped, not fail the page.
BAD_SNAPSHOTS: dict[str, str | bytes] = {
    "wrong-type": json.dumps({**GOOD, "processes": "3"}),
    "missing-key": json.dumps(GOOD),  # no "active"
    "nan": json.dumps({**GOOD, "active": [], "streams": {"s": {"bytes": float("nan")}}}),
    "bool": json.dumps({**GOOD, "active": [], "store_errors": True}),
    "list-figure": json.dumps({**GOOD, "active": [], "streams": {"s": {"bytes": [1]}}}),
    "buckets": json.dumps({**GOOD, "active": [], "streams": {"s": {"ttfb_buckets": [1, 2]}}}),
    "active": json.dumps({**GOOD, "active": [{"stream": "s", "pid": 1}]}),
    "not-a-dict": json.dumps([1, 2, 3]),
    "not-json": "{processes: 1",
    "not-utf8": b"\xff\xfe",
}


def plant(url: str, host: str, body: str | bytes) -> None:
    """Write ``body`` as ``host``'s snapshot, as a publisher would."""
    keep = int(fleet.EXPIRY * 1000 * 12)
    fleet._client(url).eval(fleet.PUBLISH, 2, *fleet.keys(), host, body, keep)


def test_malformed_snapshots_are_skipped_and_named(
    settings: Any, tmp_path: Path, redis_server: RedisServer
):
    settings.STREAMER_REDIS_URL = redis_server.url
    name = "s" + uuid.uuid4().hex[:6]
    as_host(settings, tmp_path, "good")
    stream(name, 100)
    fleet.publish(redis_server.url, RateTracker())
    for host, body in BAD_SNAPSHOTS.items():
        plant(redis_server.url, host, body)
    as_host(settings, tmp_path, "me")
    stream(name, 1000)
    data = snapshot_json()
    assert [h["host"] for h in data["hosts"]] == ["me", "good"]
    assert data["unreadable"] == sorted(BAD_SNAPSHOTS)
    assert data["streams"][name]["bytes"] == 1100
    json.dumps(data, allow_nan=False)  # what the page parses: no NaN


def test_the_fleet_is_off_by_default_though_cluster_pools_use_redis(
    settings: Any, tmp_path: Path, redis_server: RedisServer
):
    # Issue 19: setting STREAMER_REDIS_URL for the limiter started a publisher.
    settings.STREAMER_REDIS_URL = redis_server.url
    settings.STREAMER_METRICS_DIR = str(tmp_path / "m")
    stream("quiet", 10)
    fleet.publisher.ensure()
    data = snapshot_json()
    assert "hosts" not in data and fleet_threads() == []
    time.sleep(fleet.INTERVAL * 1.5)  # a publisher would have written by now
    assert redis.Redis.from_url(redis_server.url).dbsize() == 0


def test_the_fleet_without_a_url_says_so_on_the_page_and_in_checks(settings: Any, tmp_path: Path):
    as_host(settings, tmp_path, "me")
    settings.STREAMER_REDIS_URL = None
    data = snapshot_json()
    assert [h["host"] for h in data["hosts"]] == ["me"]
    assert "STREAMER_REDIS_URL is not set" in data["fleet"]
    assert [m.id for m in run_checks() if m.id == "django_streamer.E029"] == [
        "django_streamer.E029"
    ]
    settings.STREAMER_FLEET = "yes"
    assert "django_streamer.E028" in [m.id for m in run_checks()]


def test_deployments_with_different_secret_keys_do_not_merge_their_fleets(
    settings: Any, tmp_path: Path, redis_server: RedisServer
):
    settings.STREAMER_REDIS_URL = redis_server.url
    settings.SECRET_KEY = "production-" + "p" * 50
    as_host(settings, tmp_path, "prod-1")
    stream("p", 10)
    fleet.publish(redis_server.url, RateTracker())
    settings.SECRET_KEY = "staging-" + "s" * 50
    as_host(settings, tmp_path, "staging-1")
    fleet.publish(redis_server.url, RateTracker())
    assert [h["host"] for h in snapshot_json()["hosts"]] == ["staging-1"]
    settings.STREAMER_REDIS_PREFIX = "shared:"  # one deployment whose hosts differ in key
    fleet.publish(redis_server.url, RateTracker())
    settings.SECRET_KEY = "production-" + "p" * 50
    as_host(settings, tmp_path, "prod-1")
    assert [h["host"] for h in snapshot_json()["hosts"]] == ["prod-1", "staging-1"]


def test_redis_unreachable_shows_this_host_and_says_why(settings: Any, tmp_path: Path):
    settings.STREAMER_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens
    as_host(settings, tmp_path, "me")
    stream("here", 5)
    started = time.monotonic()
    data = snapshot_json()
    assert time.monotonic() - started < 0.5
    assert [h["host"] for h in data["hosts"]] == ["me"]
    assert data["fleet"].startswith("unavailable: ConnectionError")
    assert data["streams"]["here"]["bytes"] == 5


def test_one_lock_holder_per_metrics_directory(settings: Any, tmp_path: Path):
    settings.STREAMER_METRICS_DIR = str(tmp_path / "m")
    first, second = fleet.open_lock(), fleet.open_lock()
    try:
        assert fleet.elect(first) and not fleet.elect(second)
        os.close(first)  # the publisher's process exits
        assert fleet.elect(second)
        assert os.stat(os.path.join(get_store().directory, ".fleet.lock")).st_mode & 0o077 == 0
    finally:
        os.close(second)


def test_a_bad_host_name_is_check_error_e024(settings: Any):
    settings.STREAMER_FLEET_HOST = 5
    errors = [m for m in run_checks() if m.id == "django_streamer.E025"]
    assert len(errors) == 1 and "STREAMER_FLEET_HOST" in errors[0].msg


@pytest.fixture(autouse=True)
def _stop_the_publisher() -> Iterator[None]:
    """A publisher thread started here must not read later tests' settings."""
    yield
    fleet.publisher.reset()


def test_reset_stops_the_thread_and_the_next_stream_starts_one(
    settings: Any, tmp_path: Path, redis_server: RedisServer
):
    settings.STREAMER_REDIS_URL = redis_server.url
    as_host(settings, tmp_path, "me")
    stream("t", 1)
    alive = lambda: [t for t in threading.enumerate() if t.name == "django-streamer-fleet"]  # noqa: E731
    assert len(alive()) == 1
    fleet.publisher.reset()
    deadline = time.monotonic() + 3
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive() == []
    stream("t", 1)
    assert len(alive()) == 1


def test_a_redis_url_set_after_the_first_stream_starts_the_publisher(
    settings: Any, tmp_path: Path, redis_server: RedisServer
):
    """The process looked once (no Redis then); a changed setting makes it look again."""
    as_host(settings, tmp_path, "me")
    settings.STREAMER_REDIS_URL = None
    stream("t", 1)
    alive = lambda: [t for t in threading.enumerate() if t.name == "django-streamer-fleet"]  # noqa: E731
    assert alive() == []
    settings.STREAMER_REDIS_URL = redis_server.url
    stream("t", 1)
    assert len(alive()) == 1
