"""@limit_concurrency(scope="host") under a real gunicorn with 3 workers."""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from django_streamer.core.limiter import HostBackend
from django_streamer.testing import WireResponse, fetch

from .conftest import Server, start_gunicorn, stop_gunicorn

pytestmark = pytest.mark.server
ROW = b"x" * 32 + b"\n"


@pytest.fixture(params=["gthread", "asgi"])
def three_workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    server = start_gunicorn(tmp_path, request.param, workers=3)
    yield server
    stop_gunicorn(server)


@pytest.fixture
def three_gthread(tmp_path: Path) -> Iterator[Server]:
    server = start_gunicorn(tmp_path, "gthread", workers=3)
    yield server
    stop_gunicorn(server)


def in_use(server: Server, pool: str, limit: int) -> int:
    return HostBackend(str(server.limiter_dir)).in_use(pool, "", limit)


def concurrently(server: Server, paths: list[str], stagger: float = 0.0) -> list[WireResponse]:
    def one(i_path: tuple[int, str]) -> WireResponse:
        i, path = i_path
        time.sleep(i * stagger)
        return fetch(server.host, server.port, path, timeout=60)

    with ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(one, enumerate(paths)))


def tag() -> str:
    return "t" + uuid.uuid4().hex[:10]


def slow(base: str, seconds: float = 1.0) -> str:
    # 5 rows spread over ``seconds``, each sent as it comes.
    return f"{base}?kind=sync&items=5&delay={seconds / 5}&flush=0&tag={tag()}"


def test_host_limit_of_2_serves_exactly_2_of_6_and_rejects_4(three_workers: Server):
    results = concurrently(three_workers, [slow("/limited/reject/", 1.5)] * 6, stagger=0.02)
    served = [r for r in results if r.status == 200]
    rejected = [r for r in results if r.status == 503]
    assert len(served) == 2, [r.status for r in results]
    assert len(rejected) == 4
    assert all(r.complete and r.body == ROW * 5 for r in served)
    assert all(r.headers.get("retry-after") == "5" for r in rejected)
    # Once the two are done, new requests are admitted.
    deadline = time.monotonic() + 5
    while in_use(three_workers, "e2e-reject", 2) and time.monotonic() < deadline:
        time.sleep(0.02)
    again = concurrently(three_workers, [slow("/limited/reject/", 0.2)] * 2)
    assert [r.status for r in again] == [200, 200]


def test_wait_mode_serves_all_6_at_most_2_at_a_time(three_workers: Server):
    results = concurrently(three_workers, [slow("/limited/wait/", 0.6)] * 6, stagger=0.02)
    assert [r.status for r in results] == [200] * 6
    assert all(r.complete and r.body == ROW * 5 for r in results)
    # Client-side timestamps: from first byte to last byte, a stream holds a
    # slot. Shrink each interval by 20 ms to forgive the loopback's latency.
    edges = []
    for r in results:
        assert r.first_byte is not None and r.finished_at is not None
        edges.append((r.started_at + r.first_byte + 0.02, 1))
        edges.append((r.finished_at - 0.02, -1))
    running = peak = 0
    for _, step in sorted(edges):
        running += step
        peak = max(peak, running)
    assert peak == 2
    # Three rounds of 0.6 s each: waiting really happened.
    ends = [r.finished_at for r in results if r.finished_at is not None]
    assert max(ends) - min(r.started_at for r in results) > 1.6


def test_2000_aborted_streams_leave_the_pool_empty_and_no_fds_behind(three_gthread: Server):
    server = three_gthread
    workers = server.worker_pids()
    assert len(workers) == 3
    # Warm every worker up (imports, pool files) before counting descriptors.
    concurrently(server, ["/limited/abort/?kind=sync&items=10"] * 12)
    time.sleep(0.5)
    fds_before = {pid: len(os.listdir(f"/proc/{pid}/fd")) for pid in workers}
    rng = random.Random(2000)
    body = 400 * 33
    paths = [
        ("/limited/abort/?kind=sync&items=400&flush=0&delay=0.0002", rng.randrange(1, body))
        for _ in range(2000)
    ]
    statuses: list[int] = []

    def one(path_abort: tuple[str, int]) -> None:
        path, abort_after = path_abort
        wire = fetch(server.host, server.port, path, abort_after=abort_after, timeout=30)
        statuses.append(wire.status)

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, paths))
    assert time.monotonic() - started < 120
    assert statuses.count(200) + statuses.count(503) == 2000
    assert statuses.count(200) > 1000
    deadline = time.monotonic() + 10
    while in_use(server, "e2e-abort", 8) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert in_use(server, "e2e-abort", 8) == 0
    assert server.worker_pids() == workers  # nobody crashed or was recycled
    time.sleep(0.5)
    fds_after = {pid: len(os.listdir(f"/proc/{pid}/fd")) for pid in workers}
    # A worker keeps the descriptors of released slots for reuse, at most one
    # per slot it held at once: 8 of the view's pool, and 4 (its threads) of the
    # stream cap's host pool ("streams"); beyond that, nothing accumulates.
    assert all(fds_before[pid] <= fds_after[pid] <= fds_before[pid] + 8 + 4 for pid in workers)


def test_a_sigkilled_worker_gives_its_slot_back_within_a_second(three_gthread: Server):
    server = three_gthread
    t = tag()
    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(
            fetch,
            server.host,
            server.port,
            f"/limited/kill/?kind=sync&items=1000&delay=0.05&flush=0&tag={t}",
            timeout=60,
        )
        ev = server.wait_for_event("serving", t)
        pid = int(ev[0])
        assert in_use(server, "e2e-kill", 1) == 1
        blocked = fetch(server.host, server.port, "/limited/kill/?kind=sync&items=1")
        assert blocked.status == 503
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)  # what gunicorn's timeout does to a stuck worker
        while in_use(server, "e2e-kill", 1) and time.monotonic() - killed_at < 5:
            time.sleep(0.005)
        freed_after = time.monotonic() - killed_at
        assert freed_after < 1.0
        assert not holder.result().complete
    admitted = fetch(server.host, server.port, "/limited/kill/?kind=sync&items=1")
    assert admitted.status == 200 and admitted.complete


@pytest.mark.parametrize(("trusted", "second"), [("10.0.0.0/8", 503), (None, 200)])
def test_a_forged_forwarded_for_from_an_untrusted_peer_gets_no_key_of_its_own(
    tmp_path: Path, trusted: str | None, second: int
):
    # Issue 20: X-Forwarded-For was believed from any peer, so each request
    # could name a fresh address and key="ip" limited nothing. Here the peer
    # (127.0.0.1) is a trusted proxy only by the default.
    env = {"STREAMER_TEST_IP_HEADER": "HTTP_X_FORWARDED_FOR"}
    if trusted is not None:
        env["STREAMER_TEST_TRUSTED_PROXIES"] = trusted
    server = start_gunicorn(tmp_path, "gthread", workers=2, env=env)
    try:
        path = "/limited/ip/?kind=sync&items=30&delay=0.1&flush=0&tag="
        held = tag()
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(
                fetch, server.host, server.port, path + held, headers={"X-Forwarded-For": "1.1.1.1"}
            )
            server.wait_for_event("serving", held)  # admitted: its slot is held for 3 s
            other = fetch(
                server.host, server.port, path + tag(), headers={"X-Forwarded-For": "2.2.2.2"}
            )
            assert other.status == second
            assert first.result().status == 200
    finally:
        stop_gunicorn(server)
