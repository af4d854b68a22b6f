"""The Redis backend of cluster-scope pools, against a real redis-server. No Django."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
import time

import pytest
import redis

from django_streamer.core.limiter import ProcessBackend
from django_streamer.core.limiter.cluster import scripts as lua
from django_streamer.core.limiter.cluster.backend import OPEN_LEASE, ClusterBackend
from django_streamer.core.limiter.cluster.leases import ClusterLease

from .conftest import ROOT
from .redisd import RedisServer, backend, kill_holder, until

HAMMER = """
import sys, threading, time, redis
from django_streamer.core.limiter.cluster.backend import ClusterBackend
url, limit = sys.argv[1], int(sys.argv[2])
# Timeouts of 1 s, not 80 ms: 32 threads and Redis on two loaded cores are
# slow, and this test is about the count, not latency (an error would end it).
backend = ClusterBackend(url, lease=5, on_error="closed", timeout=1.0)
probe = redis.Redis.from_url(url)
peak, admitted = [0], [0]
def work(n):
    for i in range(15):
        wait = (n + i) % 2 == 0
        lease = backend.acquire("hammer", "k", limit, timeout=3 if wait else 0)
        if lease is None:
            continue
        inside = probe.incr("probe")
        peak[0] = max(peak[0], inside)
        admitted[0] += 1
        time.sleep(0.003)
        probe.decr("probe")
        lease.release()
threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
print(peak[0], admitted[0], backend.breaker.errors)
"""

pytestmark = pytest.mark.usefixtures("closing_backends")


def test_many_acquirers_in_four_processes_never_exceed_the_limit(redis_server: RedisServer):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HAMMER, redis_server.url, "3"],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    peaks = [int(r[0]) for r in results]
    assert max(peaks) == 3  # the limit was reached, and never passed
    assert sum(int(r[1]) for r in results) > 100
    assert all(r[2] == "0" for r in results)  # no Redis errors: the count is Redis's own
    # Every slot is free right after the exits, not after the 5 s lease: the
    # exit sends the pending releases, and no renewal brings a released lease
    # back (one did, after a refused first admission was taken for a restart:
    # test_a_refused_admission_from_before_the_first_lease_...).
    assert backend(redis_server).in_use("hammer", "k", 3) == 0


EXIT = """
import sys
from django_streamer.core.limiter.cluster.backend import ClusterBackend
backend = ClusterBackend(sys.argv[1], lease=30, on_error="closed")
leases = [backend.try_acquire("atexit", "k", 5) for _ in range(3)]
assert all(leases)
for lease in leases:
    lease.release()  # deferred: still pending when the script ends at once
"""


def test_a_process_that_exits_sends_its_pending_releases(redis_server: RedisServer):
    done = subprocess.run(
        [sys.executable, "-c", EXIT, redis_server.url],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert done.returncode == 0
    # Right after the exit, not after a 30 s lease: the exit hook sent them.
    assert backend(redis_server).in_use("atexit", "k", 5) == 0


def test_waiters_on_two_hosts_are_admitted_first_come_first_served(redis_server: RedisServer):
    host_a, host_b = backend(redis_server), backend(redis_server)
    first = host_a.try_acquire("fifo", "k", 1)
    assert first is not None
    order: list[str] = []

    def wait(name: str, b: ClusterBackend) -> None:
        lease = b.acquire("fifo", "k", 1, timeout=5)
        assert lease is not None
        order.append(name)
        time.sleep(0.05)
        lease.release()

    threads = []
    for name, b in [("a1", host_a), ("b1", host_b), ("a2", host_a), ("b2", host_b)]:
        threads.append(threading.Thread(target=wait, args=(name, b)))
        threads[-1].start()
        time.sleep(0.05)  # take tickets in this order
    assert host_a.try_acquire("fifo", "k", 1) is None  # a newcomer does not jump the queue
    first.release()
    for t in threads:
        t.join()
    assert order == ["a1", "b1", "a2", "b2"]


def test_a_waiter_on_another_host_is_admitted_within_100_ms_of_a_release(
    redis_server: RedisServer,
):
    host_a, host_b = backend(redis_server), backend(redis_server)
    latencies = []
    for _ in range(5):
        held = host_a.try_acquire("wake", "k", 1)
        assert held is not None
        got: list[float] = []

        def wait(got: list[float] = got) -> None:
            if host_b.acquire("wake", "k", 1, timeout=5):
                got.append(time.monotonic())

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.3)  # well inside the 1 s poll: only the wake-up can be fast
        released = time.monotonic()
        held.release()
        t.join()
        latencies.append(got[0] - released)
        host_b.release_owner(host_b.owner)
    assert max(latencies) < 0.1, latencies


def test_one_heartbeat_keeps_leases_alive_and_a_dead_host_s_expire_within_the_lease(
    redis_server: RedisServer,
):
    alive = backend(redis_server, lease=1.5)
    lease = alive.try_acquire("beat", "k", 5)
    assert lease is not None
    reader = backend(redis_server)
    kill_holder(redis_server, 1.5)  # the whole "host": no child_exit hook
    killed = time.monotonic()
    assert reader.in_use("held", "k", 5) == 2
    until(lambda: reader.in_use("held", "k", 5) == 0, timeout=2.5)
    assert time.monotonic() - killed <= 1.5 + 1
    time.sleep(max(0.0, 3.2 - (time.monotonic() - killed)))  # two lease times in all
    assert reader.in_use("beat", "k", 5) == 1  # renewed by the heartbeat all along
    lease.release()  # deferred: another host sees it within the release delay
    until(lambda: reader.in_use("beat", "k", 5) == 0, timeout=0.1)


def test_release_owner_frees_a_killed_process_s_leases_at_once(redis_server: RedisServer):
    pid = kill_holder(redis_server, 30)
    reader = backend(redis_server)
    host = reader.owner.rsplit(":", 1)[0]
    assert reader.in_use("held", "k", 5) == 2
    assert reader.release_owner(f"{host}:{pid}") == 2
    assert reader.in_use("held", "k", 5) == 0


@pytest.mark.parametrize("failure", ["hang", "stop"])
@pytest.mark.parametrize("mode", ["local", "open", "closed"])
def test_outage_decides_within_100_ms_applies_on_error_and_recovers(
    redis_server: RedisServer, mode: str, failure: str, caplog: pytest.LogCaptureFixture
):
    local = ProcessBackend()
    b = backend(redis_server, lease=3, on_error=mode, fallback=lambda: local)
    assert b.try_acquire("out", "k", 1) is not None
    getattr(redis_server, failure)()
    caplog.set_level(logging.WARNING, logger="django_streamer.cluster")
    decisions = []
    for _ in range(5):
        started = time.monotonic()
        lease = b.try_acquire("out", "k", 1)
        decisions.append(time.monotonic() - started)
        if mode == "open":
            assert lease is OPEN_LEASE
        elif mode == "closed":
            assert lease is None
    assert max(decisions) < 0.1, decisions
    if mode == "local":  # a host pool of the same limit: one admitted, then full
        assert local.in_use("out", "k", 1) == 1
    assert b.errors["out"] == 1  # the first call failed; the breaker kept the rest off Redis
    if failure == "hang":
        redis_server.resume()
    else:
        redis_server.start()
    until(lambda: not b.breaker.is_open, timeout=5)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("reachable again" in m for m in messages) == 1
    # The lease taken before the outage is in Redis again (kept, or re-registered
    # by the heartbeat after an empty restart): the cluster limit holds.
    until(lambda: b.in_use("out", "k", 1) == 1, timeout=2)
    assert b.try_acquire("out", "k", 1) is None


def lease_args(lease: ClusterLease) -> list[str]:
    return [lease.keys.base, lease.ident, lease.epoch]


def test_a_renewal_racing_a_release_does_not_bring_the_lease_back(redis_server: RedisServer):
    b = backend(redis_server, lease=30)
    lease = b.try_acquire("race", "k", 1)
    assert isinstance(lease, ClusterLease)
    renew = redis.Redis.from_url(redis_server.url).register_script(lua.RENEW)
    owner = f"streamer:owner:{b.owner}"
    lease.release()  # ...while the heartbeat had already listed it for renewal
    b.flush()  # the release reaches Redis before the renewal does
    renew(keys=[owner, *b.epoch_keys()], args=[30000, 90000, *lease_args(lease)])
    assert b.in_use("race", "k", 1) == 0
    assert b.try_acquire("race", "k", 1) is not None


def test_a_renewal_that_reaches_redis_after_the_lease_expired_does_not_bring_it_back(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
):
    # The heartbeat lists a lease renewed just under a lease ago; its RENEW runs
    # in Redis later (a slow network, a paused Redis that buffered it), after
    # the lease expired there and another host took the slot.
    caplog.set_level(logging.WARNING, logger="django_streamer.cluster")
    b = backend(redis_server, lease=30)
    lease = b.try_acquire("late", "k", 1)
    assert isinstance(lease, ClusterLease)
    admin = redis.Redis.from_url(redis_server.url)
    seconds, micros = admin.time()
    admin.zadd(lease.keys.k("h"), {lease.ident: seconds * 1000 + micros // 1000 - 1})
    other = backend(redis_server)
    assert other.try_acquire("late", "k", 1) is not None  # the expired slot, given on
    b._beat()  # what the heartbeat does at its next beat
    assert other.in_use("late", "k", 1) == 1
    assert lease.lost and b.held() == 0  # lost here too: logged once, never renewed again
    assert sum("lost" in r.getMessage() for r in caplog.records) == 1


def test_a_lease_not_renewed_in_time_is_lost_logged_once_and_not_added_back(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, logger="django_streamer.cluster")
    b = backend(redis_server, lease=1)
    lease = b.try_acquire("lost", "k", 5)
    assert lease is not None
    redis_server.hang()
    time.sleep(1.6)
    redis_server.resume()
    until(lambda: not b.breaker.is_open, timeout=5)
    time.sleep(0.5)  # a heartbeat after recovery
    assert backend(redis_server).in_use("lost", "k", 5) == 0
    assert sum("lost" in r.getMessage() for r in caplog.records) == 1
    assert b.held() == 0


def test_async_waiters_do_not_block_the_loop_and_a_cancelled_one_gives_up_its_place(
    redis_server: RedisServer,
):
    b = backend(redis_server)
    reader = redis.Redis.from_url(redis_server.url)
    queue = b.keys("aw", "k").k("q")

    async def main() -> None:
        held = await b.aacquire("aw", "k", 1, timeout=0)
        assert held is not None
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        quitter = asyncio.create_task(b.aacquire("aw", "k", 1, timeout=5))
        await asyncio.sleep(0.05)
        stayer = asyncio.create_task(b.aacquire("aw", "k", 1, timeout=5))
        await asyncio.sleep(0.2)
        assert reader.zcard(queue) == 2
        quitter.cancel()
        await asyncio.sleep(0.1)
        assert reader.zcard(queue) == 1  # the cancelled waiter left the queue
        held.release()
        started = time.monotonic()
        lease = await stayer
        assert lease is not None and time.monotonic() - started < 0.1
        lease.release()
        ticker.cancel()
        assert ticks >= 20  # the loop kept running while they waited

    asyncio.run(main())


def evalsha_calls(server: RedisServer) -> int:
    stats = redis.Redis.from_url(server.url).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_deferred_releases_go_in_one_round_trip_within_the_delay_with_no_admission_after(
    redis_server: RedisServer,
):
    b = backend(redis_server, release_delay=0.02)
    held = redis.Redis.from_url(redis_server.url)
    h = b.keys("defer", "k").k("h")
    b.try_acquire("defer", "warm", 1).release()  # type: ignore[union-attr]
    b.flush()  # both scripts loaded: a first call's NOSCRIPT is no round trip to count
    leases = [b.try_acquire("defer", "k", 5) for _ in range(5)]
    assert all(leases) and held.zcard(h) == 5
    before = evalsha_calls(redis_server)
    released = time.monotonic()
    for lease in leases:
        lease.release()  # type: ignore[union-attr]
    assert len(b.releases) == 5  # not sent yet: they wait for an admission to ride with
    until(lambda: held.zcard(h) == 0, timeout=0.5, step=0.002)
    assert time.monotonic() - released < 0.1
    assert evalsha_calls(redis_server) - before == 1  # five releases, one RELEASE call
    assert len(b.releases) == 0
    assert held.smembers(f"streamer:owner:{b.owner}") == {b"*"}


def test_a_release_carried_by_the_next_admission_is_counted_and_wakes_other_hosts(
    redis_server: RedisServer,
):
    # Only an admission sends releases, and never hands one on: this is about carrying.
    host_a = backend(redis_server, release_delay=5.0, reuse_window=0)
    host_b = backend(redis_server)
    lease = host_a.try_acquire("carry", "k", 1)
    assert lease is not None
    lease.release()
    before = evalsha_calls(redis_server)
    again = host_a.try_acquire("carry", "k", 1)  # fits only if the release went first
    assert again is not None
    assert evalsha_calls(redis_server) - before == 1  # release + admission: one round trip
    assert len(host_a.releases) == 0
    assert host_b.in_use("carry", "k", 1) == 1
    # A waiter elsewhere is woken by a release that rode with another key's admission.
    got: list[float] = []

    def wait() -> None:
        if host_b.acquire("carry", "k", 1, timeout=5):
            got.append(time.monotonic())

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.3)
    again.release()
    released = time.monotonic()
    assert host_a.try_acquire("carry", "other", 1) is not None
    t.join()
    assert got and got[0] - released < 0.1


def test_calls_survive_a_flushed_script_cache_and_connections_closed_while_idle(
    redis_server: RedisServer,
):
    b = backend(redis_server)
    first = b.try_acquire("calls", "k", 2)
    assert first is not None
    admin = redis.Redis.from_url(redis_server.url)
    admin.script_flush()  # as after a restart: EVALSHA answers NOSCRIPT
    admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")  # idle timeout
    second = b.try_acquire("calls", "k", 2)
    assert second is not None
    assert not b.breaker.is_open and b.breaker.errors == 0
    assert b.try_acquire("calls", "k", 2) is None  # the count is right: 2 held
    first.release()
    second.release()
    b.flush()
    assert admin.zcard(b.keys("calls", "k").k("h")) == 0


def test_an_acquire_run_twice_for_one_id_admits_once_and_does_not_refuse_itself(
    redis_server: RedisServer,
):
    # calls.py retries a call once on a connection closed while idle; if the
    # first attempt did run, the retry must not count its own lease against it.
    b = backend(redis_server)
    keys = b.keys("retry", "k")
    ident = b.new_ident()
    call = b.acquire_call(keys, ident, 1, False)
    assert b.calls("ACQUIRE", **call)[0] == 1
    assert b.calls("ACQUIRE", **call)[0] == 1  # the same id again: still admitted
    admin = redis.Redis.from_url(redis_server.url)
    assert admin.zcard(keys.k("h")) == 1
    assert b.calls("ACQUIRE", **b.acquire_call(keys, b.new_ident(), 1, False))[0] == 0


def test_releases_carried_by_a_cancelled_async_admission_are_sent_again(
    redis_server: RedisServer,
):
    # Releases wait for an admission to carry them; that admission's task is
    # cancelled while its ACQUIRE is held up in Redis (CLIENT PAUSE): Redis may
    # never run it, so the releases must still reach Redis (not wait a lease out).
    b = backend(redis_server, release_delay=0.5, reuse_window=0, lease=30.0)
    admin = redis.Redis.from_url(redis_server.url)
    h = b.keys("cancel", "k").k("h")
    b.try_acquire("cancel", "warm", 1).release()  # type: ignore[union-attr]
    b.flush()  # scripts loaded: the paused call is the ACQUIRE itself
    lease = b.try_acquire("cancel", "k", 1)
    assert lease is not None and admin.zcard(h) == 1
    lease.release()
    assert len(b.releases) == 1

    async def main() -> None:
        # Shorter than the backend's 0.1 s timeouts: no outage, only a slow reply.
        admin.execute_command("CLIENT", "PAUSE", "80", "ALL")
        carrier = asyncio.create_task(b.aacquire("cancel", "other", 1, timeout=0))
        await asyncio.sleep(0.03)
        assert len(b.releases) == 0  # taken by the carrier's ACQUIRE, in flight
        carrier.cancel()
        await asyncio.gather(carrier, return_exceptions=True)

    asyncio.run(main())
    # Within the pause, the release delay and a margin, not the 30 s lease.
    until(lambda: admin.zcard(h) == 0, timeout=2.0)


def test_a_refused_admission_from_before_the_first_lease_does_not_resurrect_released_leases(
    redis_server: RedisServer,
):
    # The four-process hammer's leak: a thread's ACQUIRE runs in Redis before
    # this process has any lease (so it finds no owner set) and is refused; its
    # reply is read after another thread's admission. That is no restart, and
    # the next renewal must not add back a lease released meanwhile.
    kill_holder(redis_server, 30)  # another process: ("held", "k") holds 2
    b = backend(redis_server, lease=30)
    keys = b.keys("held", "k")
    ident, sent = b.new_ident(), b.clock()
    refused = b.calls("ACQUIRE", **b.acquire_call(keys, ident, 2, False))
    lease = b.try_acquire("busy", "k", 5)
    assert refused[0] == 0 and lease is not None
    calls, renewed = b.calls, threading.Event()

    def release_first(name: str, keys: list[str], args: list[object]) -> object:
        if name == "RENEW" and not renewed.is_set():
            lease.release()  # it was listed; its release reaches Redis first
            b.flush()
            renewed.set()
        return calls(name, keys=keys, args=args)

    b.calls = release_first  # type: ignore[assignment]
    try:
        turn = b.turn(refused, keys, ident, sent, sent)
        assert isinstance(turn, float) and turn <= 0  # refused, at its deadline
        time.sleep(0.2)  # the heartbeat, had the reply woken it
        b._beat()  # the next heartbeat in any case
    finally:
        b.calls = calls
    assert renewed.is_set()
    assert backend(redis_server).in_use("busy", "k", 5) == 0
