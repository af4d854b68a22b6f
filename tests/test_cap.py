"""The caps every stream counts toward (STREAMER_MAX_STREAMS, STREAMER_WSGI_MAX_FEEDS), in-process.

The servers' side (gthread and asgi workers, the raw socket) is tests/test_cap_server.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import override_settings

from django_streamer import sse_response, stream_response, stream_writer
from django_streamer.cap import warn_at_worker_start
from django_streamer.checks import check_cluster, check_settings
from django_streamer.core.sse.threads import SOURCE_THREADS
from django_streamer.extensions import extensions
from django_streamer.slots import LimiterRecorder

from .conftest import ServingRequestFactory

rf = ServingRequestFactory()


def counted(started: list[str], tag: str) -> Iterator[bytes]:
    started.append(tag)  # runs only when the source starts
    yield b"data\n"


class Spy(LimiterRecorder):
    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []

    def admitted(self, pool: Any, lease: Any) -> None:
        self.events.append(("admitted", pool.name, pool.limit))

    def rejected(self, pool: Any, rejection: Any) -> None:
        self.events.append(("rejected", pool.name, rejection.limit))

    def released(self, pool: Any, lease: Any) -> None:
        self.events.append(("released", pool.name, pool.limit))


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Spy:
    recorder = Spy()
    monkeypatch.setattr(extensions, "limiter_recorders", (recorder,))
    return recorder


@override_settings(STREAMER_MAX_STREAMS=2, STREAMER_MAX_STREAMS_SCOPE="process")
def test_a_stream_over_the_cap_is_503_before_its_source_starts(spy: Spy) -> None:
    started: list[str] = []
    rf.get("/")
    first = stream_response(counted(started, "a"))
    second = stream_response(counted(started, "b"))
    refused = stream_response(counted(started, "c"))
    assert (first.status_code, second.status_code, refused.status_code) == (200, 200, 503)
    assert refused["Retry-After"] == "5"
    assert b"Too many streams" in b"".join(refused)
    assert started == []  # the refused source never ran (nor did the others, yet)
    assert b"".join(first) == b"data\n"
    first.close()
    # The first stream is done: its slot is back.
    again = stream_response(counted(started, "d"))
    assert again.status_code == 200
    for response in (second, refused, again):
        response.close()
    assert started == ["a"]
    assert spy.events.count(("rejected", "streams", 2)) == 1
    admitted = [e for e in spy.events if e[0] == "admitted"]
    released = [e for e in spy.events if e[0] == "released"]
    assert len(admitted) == len(released) == 3  # the refusal took no slot


@override_settings(STREAMER_MAX_STREAMS=1, STREAMER_MAX_STREAMS_SCOPE="host")
def test_the_host_cap_and_a_failed_build_giving_its_slot_back() -> None:
    held = stream_response(iter([b"x"]))
    refused = stream_response(iter([b"x"]))
    assert refused.status_code == 503
    refused.close()
    held.close()
    with pytest.raises(ValueError, match="newlines"):
        stream_response(iter([b"x"]), headers={"Bad\nName": "v"})
    ok = stream_response(iter([b"x"]))  # the failed one gave its slot back
    assert ok.status_code == 200
    ok.close()


@override_settings(STREAMER_MAX_STREAMS=1, STREAMER_MAX_STREAMS_SCOPE="process")
def test_a_refused_writer_never_starts_its_producer_thread() -> None:
    calls: list[object] = []
    held = stream_response(iter([b"x"]))
    refused = stream_writer(calls.append)
    assert refused.status_code == 503
    assert b"".join(refused) == b"Too many streams on this server; try again later.\n"
    assert calls == []
    held.close()
    refused.close()


def test_none_turns_the_cap_off(spy: Spy) -> None:
    with override_settings(STREAMER_MAX_STREAMS=None):
        responses = [stream_response(iter([b"x"])) for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 200]
        for response in responses:
            response.close()
    assert spy.events == []


def test_by_default_every_stream_takes_a_host_slot_of_1000(spy: Spy) -> None:
    response = stream_response(iter([b"x"]))
    assert spy.events == [("admitted", "streams", 1000)]
    response.close()
    assert spy.events[-1] == ("released", "streams", 1000)


def idle_feed() -> Iterator[object]:
    yield "hello"


@override_settings(STREAMER_WSGI_MAX_FEEDS=1)
def test_feeds_under_wsgi_have_their_own_cap(caplog: pytest.LogCaptureFixture) -> None:
    rf.get("/feed/")  # a WSGIRequest: a thread-per-request server
    held_threads = SOURCE_THREADS.held
    with caplog.at_level(logging.WARNING, logger="django_streamer"):
        feed = sse_response(idle_feed())
        refused = sse_response(idle_feed())
    assert feed.status_code == 200
    assert refused.status_code == 503
    assert refused["Retry-After"] == "5"
    assert SOURCE_THREADS.held == held_threads + 1  # the refused feed took no thread
    feed.close()
    again = sse_response(idle_feed())
    assert again.status_code == 200
    again.close()
    refused.close()
    assert SOURCE_THREADS.held == held_threads
    # W011 is logged once per process at most (another test may have logged it).
    assert sum("W011" in r.getMessage() for r in caplog.records) <= 1


@override_settings(STREAMER_WSGI_MAX_FEEDS=1)
def test_feeds_outside_wsgi_are_not_held_to_the_feed_cap() -> None:
    # No request (a management command), or an ASGI request: feeds are tasks there.
    first, second = sse_response(idle_feed()), sse_response(idle_feed())
    assert (first.status_code, second.status_code) == (200, 200)
    first.close()
    second.close()


@pytest.mark.django_db
def test_the_asgi_handler_does_not_hold_feeds_to_the_wsgi_cap() -> None:
    from .conftest import call_asgi

    with override_settings(STREAMER_WSGI_MAX_FEEDS=1):

        async def two() -> list[int]:
            results = await asyncio.gather(
                call_asgi("/sse/frames/?kind=async&tag=cap-a"),
                call_asgi("/sse/frames/?kind=async&tag=cap-b"),
            )
            return [r.status for r in results]

        assert asyncio.run(two()) == [200, 200]


@pytest.mark.parametrize(
    ("setting", "value", "check_id"),
    [
        ("STREAMER_MAX_STREAMS", 0, "django_streamer.E032"),
        ("STREAMER_MAX_STREAMS", "1000", "django_streamer.E032"),
        ("STREAMER_MAX_STREAMS_SCOPE", "site", "django_streamer.E033"),
        ("STREAMER_WSGI_MAX_FEEDS", True, "django_streamer.E034"),
    ],
)
def test_bad_values_are_check_errors_naming_the_setting(
    setting: str, value: object, check_id: str
) -> None:
    with override_settings(**{setting: value}):
        messages = check_settings()
    assert [m.id for m in messages] == [check_id]
    assert setting in str(messages[0].msg) and messages[0].hint


def test_e034_a_cluster_cap_without_redis() -> None:
    with override_settings(STREAMER_MAX_STREAMS_SCOPE="cluster", STREAMER_REDIS_URL=None):
        assert [m.id for m in check_cluster()] == ["django_streamer.E035"]
    with override_settings(
        STREAMER_MAX_STREAMS_SCOPE="cluster", STREAMER_MAX_STREAMS=None, STREAMER_REDIS_URL=None
    ):
        assert check_cluster() == []


def worker(kind: str, *, workers: int = 2, threads: int = 16) -> Any:
    said: list[str] = []
    cfg = SimpleNamespace(
        worker_class_str=kind, workers=workers, threads=threads, worker_connections=1000
    )
    log = SimpleNamespace(warning=lambda msg, *args: said.append(msg % args))
    return SimpleNamespace(cfg=cfg, log=log, said=said)


def test_worker_start_warnings_against_the_real_threads() -> None:
    # The defaults on the shipped gthread config (2 x 16): nothing to say.
    assert warn_at_worker_start(worker("gthread")) == []
    with override_settings(STREAMER_MAX_STREAMS=100):
        assert warn_at_worker_start(worker("gthread")) == ["W010"]  # above 2 x 16
        assert warn_at_worker_start(worker("asgi")) == []  # its capacity is unknown
    with override_settings(STREAMER_MAX_STREAMS=32):
        assert warn_at_worker_start(worker("gthread")) == []
    with override_settings(STREAMER_MAX_STREAMS=20, STREAMER_MAX_STREAMS_SCOPE="process"):
        assert warn_at_worker_start(worker("gthread")) == ["W010"]  # above 16
    sync = worker("sync", threads=1)
    assert warn_at_worker_start(sync) == ["W012"]  # 4 feeds, 1 thread
    assert "STREAMER_WSGI_MAX_FEEDS (4)" in sync.said[0]
