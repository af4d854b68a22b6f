"""Cluster scope through Django: settings, checks, the decorator (sync and async), real Redis."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from django.core import checks
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings

from django_streamer import cluster, limit_concurrency
from django_streamer.checks import check_cluster
from django_streamer.conf import redis_prefix

from .redisd import RedisServer, running_redis


def ids(messages: list[checks.CheckMessage]) -> list[str]:
    return [m.id for m in messages if m.id]


def view(scope_limit: int = 1, **options: Any) -> Any:
    name = "t" + uuid.uuid4().hex[:8]

    @limit_concurrency(scope_limit, scope="cluster", name=name, **options)
    def sync_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    return sync_view


def aview(**options: Any) -> Any:
    @limit_concurrency(1, scope="cluster", name="a" + uuid.uuid4().hex[:8], **options)
    async def async_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    return async_view


def get() -> HttpRequest:
    return RequestFactory().get("/")


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("STREAMER_CLUSTER_LEASE", 0),
        ("STREAMER_CLUSTER_LEASE", "10"),
        ("STREAMER_CLUSTER_ON_ERROR", "fail"),
        ("STREAMER_REDIS_URL", "127.0.0.1:6379"),
    ],
)
def test_bad_cluster_settings_are_check_errors_naming_the_setting(setting: str, value: Any):
    with override_settings(**{setting: value}):
        assert check_cluster() == []  # the value checks report it, once
        errors = [
            m
            for m in run_checks()
            if m.id in ("django_streamer.E019", "django_streamer.E020", "django_streamer.E021")
        ]
    assert len(errors) == 1
    assert setting in errors[0].msg


def test_e022_when_the_url_is_set_but_redis_py_is_missing(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # import redis -> ImportError
    with override_settings(STREAMER_REDIS_URL="redis://127.0.0.1:6379/0"):
        assert ids(check_cluster()) == ["django_streamer.E022"]


def test_e023_when_a_routed_view_is_cluster_scoped_without_a_url():
    with override_settings(ROOT_URLCONF="tests.cluster_views", STREAMER_REDIS_URL=None):
        errors = check_cluster()
    assert ids(errors) == ["django_streamer.E023"]
    assert "c-reject" in errors[0].msg and "c-wait" in errors[0].msg
    with override_settings(ROOT_URLCONF="tests.urls", STREAMER_REDIS_URL=None):
        assert check_cluster() == []


def test_a_cluster_view_without_a_url_fails_clearly_at_first_use():
    limited = view()
    with (
        override_settings(STREAMER_REDIS_URL=None),
        pytest.raises(ImproperlyConfigured, match="STREAMER_REDIS_URL"),
    ):
        limited(get())


def test_sync_view_rejects_with_retry_after_and_admits_after_release(redis_server: RedisServer):
    limited = view(2, retry_after=7)
    with override_settings(STREAMER_REDIS_URL=redis_server.url):
        first, second = limited(get()), limited(get())
        third = limited(get())
        assert [first.status_code, second.status_code, third.status_code] == [200, 200, 503]
        assert third["Retry-After"] == "7"
        assert cluster.figures()[limited.limit_pool_name] == {
            "in_use": 2,
            "backend_errors": 0,
            "fallback": 0,
        }
        first.close()  # the server closes the response: the slot is released
        assert limited(get()).status_code == 200


def test_async_view_waits_for_a_release_without_blocking_the_loop(redis_server: RedisServer):
    limited = aview(on_limit="wait", timeout=5)

    async def main() -> None:
        first = await limited(get())
        waiter = asyncio.create_task(limited(get()))
        await asyncio.sleep(0.2)
        assert not waiter.done()
        released = time.monotonic()
        first.close()  # in the loop: the release goes out as a task
        second = await waiter
        assert second.status_code == 200 and time.monotonic() - released < 0.1
        second.close()
        await asyncio.sleep(0.05)

    with override_settings(STREAMER_REDIS_URL=redis_server.url):
        asyncio.run(main())


@pytest.mark.parametrize(
    ("mode", "statuses"),
    [("open", [200] * 3), ("closed", [503] * 3), ("local", [200, 503, 503])],
)
def test_redis_down_each_mode_answers_within_100_ms(
    redis_server: RedisServer, mode: str, statuses: list[int]
):
    limited = view(1)
    with override_settings(STREAMER_REDIS_URL=redis_server.url, STREAMER_CLUSTER_ON_ERROR=mode):
        limited(get()).close()  # first use: the backend, its scripts, the host pool's file
        if mode == "local":
            cluster.get_backend().fallback.try_acquire("warm", "", 1).release()  # type: ignore[union-attr]
        cluster.get_backend().flush()  # else the next admission is handed that pending release
        redis_server.stop()
        took, responses = [], []
        for _ in range(3):
            started = time.monotonic()
            responses.append(limited(get()))
            took.append(time.monotonic() - started)
        assert [r.status_code for r in responses] == statuses  # local: a host pool of 1
        assert max(took) < 0.1, took
        figures = cluster.figures()[limited.limit_pool_name]
        assert figures["fallback"] == 1 and figures["backend_errors"] == 1
        assert figures["in_use"] == (1 if mode == "local" else 0)  # the fallback's count
        for response in responses:
            response.close()


def test_a_password_in_the_url_works_and_a_wrong_one_is_an_outage(tmp_path: Path):
    for server in running_redis(tmp_path, password="s3cret"):
        limited = view(1)
        with override_settings(STREAMER_REDIS_URL=server.url, STREAMER_CLUSTER_ON_ERROR="closed"):
            held = limited(get())
            assert (
                held.status_code == 200
                and cluster.get_backend().in_use(limited.limit_pool_name, "", 1) == 1
            )
            assert limited(get()).status_code == 503
            held.close()
        wrong = server.url.replace("s3cret", "wrong")
        with override_settings(STREAMER_REDIS_URL=wrong, STREAMER_CLUSTER_ON_ERROR="closed"):
            refused = view(1)(get())
        assert refused.status_code == 503  # authentication failed: handled as an outage


def test_release_dead_worker_drops_that_pid_s_leases(redis_server: RedisServer):
    with override_settings(STREAMER_REDIS_URL=redis_server.url):
        backend = cluster.get_backend()
        lease = backend.try_acquire("dead", "k", 3)
        assert lease is not None and backend.in_use("dead", "k", 3) == 1
        pid = int(backend.owner.rsplit(":", 1)[1])
        assert cluster.release_dead_worker(pid) == 1
        assert backend.in_use("dead", "k", 3) == 0


# -- the Redis prefix (issue 19): deployments sharing one Redis share nothing ----------


def test_the_default_prefix_is_a_digest_of_the_secret_key_never_the_key():
    with override_settings(SECRET_KEY="production-" + "x" * 50):
        production = redis_prefix()
    with override_settings(SECRET_KEY="staging-" + "y" * 50):
        staging = redis_prefix()
    assert production != staging
    assert all(p.startswith("streamer:") and len(p) == 22 for p in (production, staging))
    assert "production" not in production and "x" * 8 not in production
    with override_settings(STREAMER_REDIS_PREFIX="shop-prod:"):
        assert redis_prefix() == "shop-prod:"


@pytest.mark.parametrize("value", ["", "a b:", "{tag}:", "x" * 65, 5])
def test_a_bad_prefix_is_check_error_e027_and_fails_at_first_use(value: Any):
    with override_settings(STREAMER_REDIS_PREFIX=value, STREAMER_REDIS_URL="redis://h:6379/0"):
        errors = [m for m in run_checks() if m.id == "django_streamer.E027"]
        assert len(errors) == 1 and "STREAMER_REDIS_PREFIX" in errors[0].msg
        with pytest.raises(ImproperlyConfigured, match="STREAMER_REDIS_PREFIX"):
            cluster.get_backend()


def test_two_secret_keys_on_one_redis_share_no_pool_key_or_channel(redis_server: RedisServer):
    prefixes = []
    for secret in ("a" * 50, "b" * 50):
        with override_settings(STREAMER_REDIS_URL=redis_server.url, SECRET_KEY=secret):
            backend = cluster.get_backend()
            prefixes.append(redis_prefix())
            assert backend.try_acquire("export", "user:1", 1) is not None  # the other's is free
            assert cluster.get_backend().try_acquire("export", "user:1", 1) is None
            # A waiter subscribes to the wake-up channel (and times out: the slot is held).
            assert backend.acquire("export", "user:1", 1, timeout=0.3) is None
    assert prefixes[0] != prefixes[1]
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    names = [str(k) for k in client.scan_iter()] + [str(c) for c in client.pubsub_channels()]
    assert names and all(n.startswith(tuple(prefixes)) for n in names), names
    assert {p + "wake" for p in prefixes} <= set(names)
    # gunicorn's child_exit: a dead worker's leases, in its own deployment only.
    pid = int(backend.owner.rsplit(":", 1)[1])
    with override_settings(STREAMER_REDIS_URL=redis_server.url, SECRET_KEY="a" * 50):
        assert cluster.release_dead_worker(pid) == 1
    with override_settings(STREAMER_REDIS_URL=redis_server.url, SECRET_KEY="b" * 50):
        assert cluster.get_backend().in_use("export", "user:1", 1) == 1
