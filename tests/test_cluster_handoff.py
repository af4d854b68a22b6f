"""Cluster leases handed on inside a process (no round trip), against a real redis-server.

A release still pending in this process can go to the next admission of the
same key, only while Redis's last reply for the key is younger than the reuse
window and saw nobody queued. No Django.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable

import pytest
import redis

from django_streamer.core.limiter.cluster.backend import ClusterBackend
from django_streamer.core.limiter.cluster.leases import ClusterLease
from django_streamer.core.limiter.cluster.releases import REUSE_WINDOW

from .forking import in_child
from .redisd import RedisServer, backend

pytestmark = pytest.mark.usefixtures("closing_backends")


def scripts_run(server: RedisServer) -> int:
    """Round trips of the backends: every script call (EVALSHA, or EVAL after NOSCRIPT)."""
    stats = redis.Redis.from_url(server.url).info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))


def cluster_lease(lease: object) -> ClusterLease:
    assert isinstance(lease, ClusterLease)
    return lease


class Clock:
    """An injectable clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_back_to_back_admissions_mostly_cost_no_round_trip_and_never_pass_the_limit(
    redis_server: RedisServer,
):
    b = backend(redis_server)
    limit, h = 2, b.keys("busy", "k").k("h")
    b.try_acquire("busy", "warm", 1).release()  # type: ignore[union-attr]
    b.flush()  # the scripts loaded: no NOSCRIPT retry to count
    lock, inside, peak, admitted = threading.Lock(), [0], [0], [0]
    done = threading.Event()
    redis_peak = [0]

    def sample() -> None:
        reader = redis.Redis.from_url(redis_server.url)
        while not done.is_set():
            redis_peak[0] = max(redis_peak[0], int(reader.zcard(h)))

    def work() -> None:
        for _ in range(400):
            lease = b.try_acquire("busy", "k", limit)
            if lease is None:
                time.sleep(0.001)
                continue
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
                admitted[0] += 1
            time.sleep(0)
            with lock:
                inside[0] -= 1
            lease.release()

    sampler = threading.Thread(target=sample)
    sampler.start()
    before = scripts_run(redis_server)
    workers = [threading.Thread(target=work) for _ in range(3)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    trips = scripts_run(redis_server) - before
    done.set()
    sampler.join()
    assert admitted[0] > 600
    assert trips / admitted[0] < 0.3, (trips, admitted[0], b.handoffs)
    assert peak[0] <= limit and redis_peak[0] <= limit
    b.flush()
    assert b.in_use("busy", "k", limit) == 0 and b.held() == 0


@pytest.mark.parametrize("loopers", [1, 2], ids=["window", "waiter-seen"])
def test_a_waiter_on_another_host_is_admitted_within_100_ms_while_this_host_loops_on_the_key(
    redis_server: RedisServer, loopers: int
):
    # One looper: only the window ends the hand-offs. Two: the second one's refused
    # ACQUIREs report the waiter, and must not be taken as a fresh quiet reply.
    host_a = backend(redis_server, release_delay=0.5)  # releases leave only with an ACQUIRE
    host_b = backend(redis_server)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            lease = host_a.try_acquire("fair", "k", 1)
            time.sleep(0.001)
            if lease is not None:
                lease.release()

    loops = [threading.Thread(target=loop) for _ in range(loopers)]
    for t in loops:
        t.start()
    latencies = []
    try:
        for _ in range(3):
            handed = host_a.handoffs
            deadline = time.monotonic() + 2
            while host_a.handoffs < handed + 20 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert host_a.handoffs >= handed + 20  # host A is handing its lease on
            started = time.monotonic()
            lease = host_b.acquire("fair", "k", 1, timeout=2)
            latencies.append(time.monotonic() - started)
            assert lease is not None, latencies
            time.sleep(0.01)
            lease.release()
    finally:
        stop.set()
        for t in loops:
            t.join()
    assert max(latencies) < 0.1, latencies


def test_no_hand_off_once_the_window_has_lapsed_and_one_within_it(redis_server: RedisServer):
    clock = Clock()
    b = backend(redis_server, clock=clock, release_delay=5.0)
    first = cluster_lease(b.try_acquire("win", "k", 2))
    first.release()
    before = scripts_run(redis_server)
    clock.now += REUSE_WINDOW * 0.9
    second = cluster_lease(b.try_acquire("win", "k", 2))
    assert second.ident == first.ident and scripts_run(redis_server) == before
    assert second.renewed == first.renewed and b.held() == 1 and b.handoffs == 1
    owner = redis.Redis.from_url(redis_server.url).smembers(b.owner_key())
    assert f"{second.keys.base}|{second.ident}".encode() in owner  # still this process's
    second.release()
    clock.now += REUSE_WINDOW * 0.1  # the window, counted from the ACQUIRE, has lapsed
    third = cluster_lease(b.try_acquire("win", "k", 2))
    assert third.ident != first.ident and scripts_run(redis_server) == before + 1
    assert b.handoffs == 1 and len(b.releases) == 0  # the release rode with the ACQUIRE
    assert b.in_use("win", "k", 2) == 1


def test_an_async_admission_takes_a_pending_release_back_too(redis_server: RedisServer):
    clock = Clock()
    b = backend(redis_server, clock=clock, release_delay=5.0)

    async def main() -> tuple[ClusterLease, ClusterLease]:
        first = cluster_lease(await b.aacquire("aio", "k", 1, timeout=0))
        first.release()
        return first, cluster_lease(await b.aacquire("aio", "k", 1, timeout=1))

    first, second = asyncio.run(main())
    assert second.ident == first.ident and b.handoffs == 1
    second.release()
    b.flush()
    assert b.in_use("aio", "k", 1) == 0


def pending_then_admit(
    b: ClusterBackend,
    before: Callable[[ClusterLease], None],
    after: Callable[[ClusterLease], None],
) -> tuple[ClusterLease, ClusterLease]:
    """A lease spoilt ``before`` and ``after`` its release, then an admission of its key."""
    old = cluster_lease(b.try_acquire("spoilt", "k", 10))
    before(old)
    fresh = cluster_lease(b.try_acquire("spoilt", "k", 10))  # from Redis: the window opens
    old.release()
    after(old)
    new = cluster_lease(b.try_acquire("spoilt", "k", 10))
    fresh.release()
    new.release()
    b.flush()  # nothing pending for the next round
    return old, new


def test_a_lost_or_stale_lease_is_never_handed_on(redis_server: RedisServer):
    clock = Clock()
    # A long lease: the heartbeat thread (every lease / 3) does not beat during the test.
    b = backend(redis_server, clock=clock, lease=30, release_delay=5.0)

    def lost_by_the_heartbeat(lease: ClusterLease) -> None:
        clock.now += 31
        b._beat()  # not renewed for a lease time: marked lost, so never even deferred
        assert lease.lost

    def stale(lease: ClusterLease) -> None:
        clock.now += 16  # half a lease without renewal: it could expire before the next

    def marked_lost(lease: ClusterLease) -> None:
        lease.lost = True  # while its release is pending

    def nothing(lease: ClusterLease) -> None:
        pass

    for before, after in (
        (lost_by_the_heartbeat, nothing),
        (stale, nothing),
        (nothing, marked_lost),
    ):
        old, new = pending_then_admit(b, before, after)
        assert new.ident != old.ident, (before.__name__, after.__name__)
    assert b.handoffs == 0
    old, new = pending_then_admit(b, nothing, nothing)  # the same, unspoilt
    assert new.ident == old.ident and b.handoffs == 1


def test_a_waiter_admitted_after_waiting_longer_than_a_lease_keeps_its_lease(
    redis_server: RedisServer,
):
    b = backend(redis_server, lease=1)
    holder = b.try_acquire("long", "k", 1)
    assert holder is not None
    got: list[ClusterLease] = []
    waiter = threading.Thread(
        target=lambda: got.append(cluster_lease(b.acquire("long", "k", 1, timeout=3)))
    )
    waiter.start()
    time.sleep(1.3)  # longer than a lease, kept by the heartbeat
    holder.release()
    waiter.join()
    time.sleep(0.5)  # a heartbeat after the admission
    assert not got[0].lost and b.held() == 1
    assert backend(redis_server).in_use("long", "k", 1) == 1


@pytest.mark.parametrize("quiet", [True, False])
def test_a_release_of_a_quiet_key_lingers_for_a_hand_off_then_goes_within_the_window(
    redis_server: RedisServer, quiet: bool
):
    # Sending a lone pending release every release_delay would cost a round
    # trip, and the next admission another (nothing left to take back).
    window = 1.0
    b = backend(redis_server, release_delay=0.01, reuse_window=window if quiet else 0)
    lease = b.try_acquire("p", "k", 5)  # Redis replies: nobody queued
    assert lease is not None
    started = time.monotonic()
    lease.release()
    time.sleep(0.2)  # past release_delay
    # Not yet 0.2 s later only if the machine stalled this thread that long.
    assert len(b.releases) == (1 if quiet else 0) or time.monotonic() - started > window
    while len(b.releases) and time.monotonic() - started < 2:
        time.sleep(0.005)
    assert len(b.releases) == 0
    assert time.monotonic() - started < window + 0.5  # sent by the window's end
    assert b.in_use("p", "k", 5) == 0


def test_no_hand_off_past_a_lowered_limit(redis_server: RedisServer):
    # Redis would refuse this admission (2 held, limit now 2): nor may a hand-off
    # keep 3 holders of the key (a rolling deploy lowering the limit, or a caller
    # of the core API).
    b = backend(redis_server, release_delay=5.0)
    held = [cluster_lease(b.try_acquire("lowered", "k", 3)) for _ in range(3)]
    held[0].release()
    assert b.try_acquire("lowered", "k", 2) is None
    assert b.handoffs == 0 and b.in_use("lowered", "k", 2) == 2
    held[1].release()  # Redis's last reply (2 held) is within the new limit
    again = cluster_lease(b.try_acquire("lowered", "k", 2))
    assert again.ident == held[1].ident and b.handoffs == 1
    assert b.in_use("lowered", "k", 2) == 2


def test_a_forked_child_never_releases_nor_reclaims_the_parent_s_leases(
    redis_server: RedisServer,
):
    b = backend(redis_server, release_delay=5.0)
    held = cluster_lease(b.try_acquire("forked", "k", 5))
    pending = cluster_lease(b.try_acquire("forked", "k", 5))
    pending.release()  # the parent's to send, or to hand on
    parent, releaser = os.getpid(), b.releases

    def child() -> int:
        held.release()  # the parent's lease, inherited: not the child's to give back
        b.flush()
        mine = cluster_lease(b.try_acquire("forked", "k", 5))
        releaser._at_exit(parent)  # what the parent's atexit hook does in a child that exits
        return 0 if mine.ident != pending.ident and b.handoffs == 0 else 1

    status = in_child(child)
    assert status == 0, os.waitstatus_to_exitcode(status)
    # Counted from elsewhere, the parent's pending release not sent yet: the
    # parent's held and pending ones, and the child's own.
    assert backend(redis_server).in_use("forked", "k", 5) == 3
    assert b.in_use("forked", "k", 5) == 2  # this flushes the parent's pending one
    held.release()
    assert b.in_use("forked", "k", 5) == 1


def test_a_lease_handed_on_while_its_late_renewal_was_in_flight_is_lost_by_its_new_holder(
    redis_server: RedisServer,
):
    # The heartbeat lists a lease; its holder releases it and the next admission
    # takes it over, all while the RENEW is on its way; the RENEW then finds it
    # expired in Redis and given to another host. The new holder has lost it.
    # A reuse window of 5 s: the hand-off must not depend on the machine's speed.
    b = backend(redis_server, lease=30, release_delay=5.0, reuse_window=5.0)
    lease = cluster_lease(b.try_acquire("late", "k", 1))
    admin = redis.Redis.from_url(redis_server.url)
    seconds, micros = admin.time()
    admin.zadd(lease.keys.k("h"), {lease.ident: seconds * 1000 + micros // 1000 - 1})
    other = backend(redis_server)
    assert other.try_acquire("late", "k", 1) is not None  # the expired slot, given on
    calls, taken = b.calls, list[ClusterLease]()

    def renew_after_a_hand_off(name: str, keys: list[str], args: list[object]) -> object:
        if name == "RENEW" and not taken:
            lease.release()
            taken.append(cluster_lease(b.try_acquire("late", "k", 1)))
            assert taken[0].ident == lease.ident  # a hand-off, no round trip
        return calls(name, keys=keys, args=args)

    b.calls = renew_after_a_hand_off  # type: ignore[assignment]
    try:
        b._beat()
    finally:
        b.calls = calls
    assert taken[0].lost and b.held() == 0
    assert b.try_acquire("late", "k", 1) is None  # the limit is the other host's
