"""Cluster pools when Redis restarts empty, stalls or is away, against a real redis-server.

After an empty restart nothing new is admitted for one lease while every process
adds its leases back; what a stall or an outage left in Redis (releases that
could not be sent, admissions it ran after their callers gave up) is undone as
soon as it answers. See docs/cluster-recovery.md. No Django.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest
import redis

from django_streamer.core.limiter import Lease

from .forking import in_child
from .redisd import RedisServer, backend, holding, kill_holder, until

pytestmark = pytest.mark.usefixtures("closing_backends")


def test_a_worker_forked_after_the_arbiter_released_a_dead_one_knows_an_empty_restart(
    redis_server: RedisServer,
):
    # gunicorn's arbiter never admits; it releases a dead worker's leases, and
    # its backend is what the workers it forks next start with. A recycled
    # worker that is the first to reach an empty Redis must still open the window.
    pid = kill_holder(redis_server, 30)
    arbiter = backend(redis_server)
    assert arbiter.release_owner(f"{arbiter.owner.rsplit(':', 1)[0]}:{pid}") == 2
    redis_server.restart_empty()
    status = in_child(lambda: 0 if arbiter.try_acquire("recycled", "k", 1) is None else 1)
    assert os.waitstatus_to_exitcode(status) == 0  # refused: the recovery window


def test_redis_restarted_empty_gets_the_held_leases_back(redis_server: RedisServer):
    b = backend(redis_server, lease=1.5)
    leases = [b.try_acquire("again", "k", 5) for _ in range(3)]
    assert all(leases)
    redis_server.restart_empty()
    reader = backend(redis_server)
    until(lambda: reader.in_use("again", "k", 5) == 3, timeout=2)  # a heartbeat: lease / 3
    leases[0].release()  # type: ignore[union-attr]
    until(lambda: reader.in_use("again", "k", 5) == 2, timeout=1)


def test_after_an_empty_restart_nothing_new_is_admitted_until_the_held_are_back(
    redis_server: RedisServer,
):
    # The holder is another process: nothing in this one knows of its leases.
    # Before its next heartbeat (lease / 3 = 1 s), the empty Redis would admit
    # two newcomers next to its two streams.
    with holding(redis_server, 3.0):
        newcomer = backend(redis_server, lease=3.0)
        newcomer.try_acquire("warm", "k", 1).release()  # type: ignore[union-attr]
        assert newcomer.try_acquire("held", "k", 2) is None
        redis_server.restart_empty()
        restarted = time.monotonic()
        admitted = []
        while time.monotonic() - restarted < 2.0:  # two heartbeats of the holder
            admitted.append(newcomer.try_acquire("held", "k", 2))
            time.sleep(0.02)
        assert admitted and not any(admitted)  # never more than its 2 holders
        assert newcomer.in_use("held", "k", 2) == 2  # they are back
    # The window lasts one lease: then a key nobody held admits again.
    until(lambda: newcomer.try_acquire("other", "k", 1) is not None, timeout=3.0)
    assert time.monotonic() - restarted < 3.0 + 1.5


def test_an_admission_after_an_empty_restart_brings_this_process_s_leases_back_at_once(
    redis_server: RedisServer,
):
    b = backend(redis_server, lease=6.0)  # a heartbeat every 2 s
    leases = [b.try_acquire("again", "k", 3) for _ in range(3)]
    assert all(leases)
    redis_server.restart_empty()
    restarted = time.monotonic()
    assert b.try_acquire("again", "k", 3) is None  # full: its own 3 hold
    assert b.try_acquire("other", "k", 5) is None  # the recovery window
    reader = backend(redis_server)
    until(lambda: reader.in_use("again", "k", 3) == 3, timeout=1.5)  # not the heartbeat
    assert time.monotonic() - restarted < 1.5


def test_a_renewal_listed_before_an_empty_restart_adds_the_leases_back_itself(
    redis_server: RedisServer,
):
    # Re-registration used to hang on a flag that request threads set and the
    # heartbeat read and cleared without a lock. Now each lease carries the
    # epoch it is counted in: whatever ran in between, the RENEW that reaches
    # the new Redis adds back every lease of the old one.
    b = backend(redis_server, lease=30)
    leases = [b.try_acquire("listed", "k", 5) for _ in range(3)]
    assert all(leases)
    calls, restarted = b.calls, threading.Event()

    def restart_first(name: str, keys: list[str], args: list[object]) -> object:
        if name == "RENEW" and not restarted.is_set():
            restarted.set()  # listed already; Redis restarts, an admission runs
            redis_server.restart_empty()
            assert calls("ACQUIRE", **b.acquire_call(b.keys("x", "k"), b.new_ident(), 5, False))
        return calls(name, keys=keys, args=args)

    b.calls = restart_first  # type: ignore[assignment]
    try:
        b._beat()
    finally:
        b.calls = calls
    assert restarted.is_set()
    assert backend(redis_server).in_use("listed", "k", 5) == 3


def test_a_release_during_an_outage_frees_its_slot_once_redis_answers_not_a_lease_later(
    redis_server: RedisServer,
):
    b = backend(redis_server, lease=10.0)
    other = backend(redis_server)
    lease = b.try_acquire("stall", "k", 1)
    assert lease is not None
    redis_server.hang()  # a 1 s stall
    assert b.try_acquire("stall", "other", 1) is None  # times out: the breaker opens
    assert b.breaker.is_open
    lease.release()  # while Redis cannot be reached
    time.sleep(1.0)
    redis_server.resume()
    until(lambda: not b.breaker.is_open, timeout=3)  # the heartbeat's probe
    # The slot is free as soon as Redis answers, not when the lease runs out.
    until(lambda: other.try_acquire("stall", "k", 1) is not None, timeout=1.0)


@pytest.mark.parametrize("side", ["sync", "async"])
def test_an_admission_that_timed_out_in_a_stall_leaves_no_slot_held_once_redis_answers(
    redis_server: RedisServer, side: str
):
    # A stalled Redis still runs the ACQUIRE it had received, after the caller
    # gave up on it: that lease belongs to nobody.
    b = backend(redis_server, lease=10.0)
    other = backend(redis_server)

    async def in_a_stall() -> Lease | None:
        (await b.aacquire("ghost", "warm", 1, timeout=0)).release()  # type: ignore[union-attr]
        b.flush()  # the loop's client is connected, its scripts loaded
        redis_server.hang()
        return await b.aacquire("ghost", "k", 1, timeout=0)

    if side == "sync":
        b.try_acquire("ghost", "warm", 1).release()  # type: ignore[union-attr]
        b.flush()
        redis_server.hang()
        assert b.try_acquire("ghost", "k", 1) is None  # timed out: on_error="closed"
    else:
        assert asyncio.run(in_a_stall()) is None
    time.sleep(0.5)
    redis_server.resume()
    until(lambda: not b.breaker.is_open, timeout=3)
    until(lambda: other.try_acquire("ghost", "k", 1) is not None, timeout=1.0)


def test_an_async_admission_cancelled_in_flight_leaves_no_slot_held(redis_server: RedisServer):
    # The client went away while its ACQUIRE was on its way: Redis ran it later
    # and admitted a lease that nobody holds.
    b = backend(redis_server, release_delay=0.05, lease=30.0)
    admin = redis.Redis.from_url(redis_server.url)
    h = b.keys("cancelled", "k").k("h")

    async def main() -> None:
        (await b.aacquire("cancelled", "warm", 1, timeout=0)).release()  # type: ignore[union-attr]
        b.flush()  # the loop's client is connected, its scripts loaded
        redis_server.hang()  # cancelled within the 80 ms timeout: no outage
        admission = asyncio.create_task(b.aacquire("cancelled", "k", 1, timeout=0))
        await asyncio.sleep(0.02)
        admission.cancel()
        await asyncio.gather(admission, return_exceptions=True)
        redis_server.resume()

    asyncio.run(main())
    assert not b.breaker.is_open
    # Within the pause, the release delay and a margin, not the 30 s lease.
    until(lambda: admin.zcard(h) == 0, timeout=2.0)


def test_a_wait_that_timed_out_in_a_stall_leaves_no_place_in_the_queue(
    redis_server: RedisServer,
):
    # The stalled Redis queues the waiter after it gave up: a request that does
    # not wait would count it ahead of itself until its place expires (a lease).
    b = backend(redis_server, lease=10.0)
    other = backend(redis_server, lease=10.0)
    held = other.try_acquire("queue", "k", 1)
    assert held is not None
    b.try_acquire("queue", "warm", 1).release()  # type: ignore[union-attr]
    b.flush()
    redis_server.hang()
    assert b.acquire("queue", "k", 1, timeout=5) is None  # timed out: on_error="closed"
    time.sleep(0.5)
    redis_server.resume()
    until(lambda: not b.breaker.is_open, timeout=3)
    held.release()
    other.flush()
    until(lambda: other.try_acquire("queue", "k", 1) is not None, timeout=1.0)
