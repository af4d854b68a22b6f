"""Pools and backends, without Django."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_streamer.core.limiter import HostBackend, Pool, ProcessBackend


@pytest.fixture(params=["process", "host"])
def backend(request, tmp_path):
    if request.param == "process":
        return ProcessBackend()
    return HostBackend(str(tmp_path / "pools"))


def test_limit_is_enforced_and_release_frees(backend):
    pool = Pool(name="p", limit=2, backend=backend)
    a, b = pool.try_acquire(), pool.try_acquire()
    assert a is not None and b is not None
    assert pool.try_acquire() is None
    assert pool.in_use() == 2
    a.release()
    a.release()  # idempotent: frees one slot, not two
    assert pool.in_use() == 1
    c = pool.try_acquire()
    assert c is not None
    assert pool.try_acquire() is None
    b.release()
    c.release()
    assert pool.in_use() == 0


def test_keys_have_their_own_slots(backend):
    pool = Pool(name="p", limit=1, backend=backend)
    alice, bob = pool.try_acquire("alice"), pool.try_acquire("bob")
    assert alice is not None and bob is not None
    assert pool.try_acquire("alice") is None
    alice.release()
    bob.release()


def test_process_memory_follows_held_keys_only():
    backend = ProcessBackend()
    pool = Pool(name="p", limit=1, backend=backend)
    for i in range(10_000):
        pool.try_acquire(f"key-{i}").release()  # type: ignore[union-attr]
    assert backend._counts == {}
    assert pool._queues == {}


def test_threads_never_exceed_the_limit(backend):
    pool = Pool(name="p", limit=3, backend=backend)
    inside = 0
    peak = 0
    lock = threading.Lock()
    served = []

    def worker():
        nonlocal inside, peak
        for _ in range(20):
            lease = pool.acquire(timeout=10)
            assert lease is not None
            with lock:
                inside += 1
                peak = max(peak, inside)
            time.sleep(0.001)
            with lock:
                inside -= 1
            lease.release()
            served.append(1)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(served) == 160
    assert peak == 3
    assert pool.in_use() == 0


def test_asyncio_tasks_never_exceed_the_limit(backend):
    pool = Pool(name="p", limit=2, backend=backend)
    inside = 0
    peak = 0

    async def task():
        nonlocal inside, peak
        for _ in range(10):
            lease = await pool.aacquire(timeout=10)
            assert lease is not None
            inside += 1
            peak = max(peak, inside)
            await asyncio.sleep(0.001)
            inside -= 1
            lease.release()

    async def main():
        await asyncio.gather(*(task() for _ in range(6)))

    asyncio.run(main())
    assert peak == 2
    assert pool.in_use() == 0


def test_waiters_are_served_first_come_first_served():
    pool = Pool(name="p", limit=1, backend=ProcessBackend())
    first = pool.try_acquire()
    assert first is not None
    order: list[int] = []

    def waiter(i):
        lease = pool.acquire(timeout=10)
        assert lease is not None
        order.append(i)
        time.sleep(0.01)
        lease.release()

    threads = []
    for i in range(5):
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        threads.append(t)
        time.sleep(0.05)  # queue them in a known order
    first.release()
    for t in threads:
        t.join()
    assert order == [0, 1, 2, 3, 4]


def test_a_wait_times_out_and_leaves_no_trace(backend):
    pool = Pool(name="p", limit=1, backend=backend)
    held = pool.try_acquire()
    started = time.monotonic()
    assert pool.acquire(timeout=0.2) is None
    assert 0.19 <= time.monotonic() - started < 2
    assert pool._queues == {}
    held.release()  # type: ignore[union-attr]


def test_a_sync_wait_does_not_spin_the_cpu():
    pool = Pool(name="p", limit=1, backend=ProcessBackend())
    held = pool.try_acquire()
    cpu = time.thread_time()
    assert pool.acquire(timeout=0.5) is None
    assert time.thread_time() - cpu < 0.05
    held.release()  # type: ignore[union-attr]


def test_a_cancelled_async_waiter_gives_up_its_place():
    pool = Pool(name="p", limit=1, backend=ProcessBackend())

    async def main():
        held = pool.try_acquire()
        first = asyncio.ensure_future(pool.aacquire(timeout=10))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(pool.aacquire(timeout=10))
        await asyncio.sleep(0.05)
        first.cancel()  # the client went away
        await asyncio.sleep(0.05)
        held.release()  # type: ignore[union-attr]
        lease = await asyncio.wait_for(second, 2)
        assert lease is not None
        lease.release()
        assert pool._queues == {}

    asyncio.run(main())


def test_an_async_wait_does_not_block_the_loop():
    pool = Pool(name="p", limit=1, backend=ProcessBackend())

    async def main():
        held = pool.try_acquire()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.ensure_future(ticker())
        assert await pool.aacquire(timeout=0.3) is None
        t.cancel()
        held.release()  # type: ignore[union-attr]
        return ticks

    assert asyncio.run(main()) >= 10


def test_a_host_release_in_another_process_wakes_a_waiter(tmp_path):
    directory = str(tmp_path / "pools")
    pool = Pool(name="p", limit=1, backend=HostBackend(directory))
    with _holder(directory, "p", "", 1) as holder:
        assert pool.try_acquire() is None
        started = time.monotonic()
        holder.stdin.write(b"release\n")  # type: ignore[union-attr]
        holder.stdin.flush()  # type: ignore[union-attr]
        lease = pool.acquire(timeout=5)
        assert lease is not None
        assert time.monotonic() - started < 1
        lease.release()


@pytest.mark.parametrize("limit", [1, 3])
def test_host_slots_of_a_sigkilled_process_are_free_at_once(tmp_path, limit):
    directory = str(tmp_path / "pools")
    backend = HostBackend(directory)
    pool = Pool(name="p", limit=limit, backend=backend)
    with _holder(directory, "p", "", limit) as holder:
        assert pool.in_use() == limit
        assert pool.try_acquire() is None
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    deadline = time.monotonic() + 1.0
    while pool.in_use() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert pool.in_use() == 0
    leases = [pool.try_acquire() for _ in range(limit)]
    assert all(leases)
    for lease in leases:
        lease.release()  # type: ignore[union-attr]


def test_host_pools_are_shared_between_backends_of_one_directory(tmp_path):
    a = Pool(name="p", limit=1, backend=HostBackend(str(tmp_path)))
    b = Pool(name="p", limit=1, backend=HostBackend(str(tmp_path)))
    lease = a.try_acquire()
    assert lease is not None
    assert b.try_acquire() is None
    lease.release()
    assert b.try_acquire() is not None


def test_host_descriptors_stay_bounded_however_many_keys(tmp_path):
    backend = HostBackend(str(tmp_path), spare=16)
    pool = Pool(name="p", limit=2, backend=backend)
    before = len(os.listdir("/proc/self/fd"))
    for i in range(1000):
        leases = [pool.try_acquire(f"k{i % 200}") for _ in range(3)]
        assert leases[2] is None  # a refused try keeps nothing locked either
        for lease in leases[:2]:
            lease.release()  # type: ignore[union-attr]
    # Released descriptors are reused, at most ``spare`` of them kept.
    assert len(os.listdir("/proc/self/fd")) - before <= 16
    assert backend._spare_count <= 16
    assert pool.in_use("k7") == 0


def test_bad_limits_are_refused():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="limit must be a positive int"):
            Pool(name="p", limit=bad, backend=ProcessBackend())  # type: ignore[arg-type]


@contextlib.contextmanager
def _holder(directory: str, pool: str, key: str, count: int) -> Iterator[subprocess.Popen[bytes]]:
    """Another process that takes ``count`` slots and holds them until told."""
    code = textwrap.dedent(
        f"""
        import sys
        from django_streamer.core.limiter import HostBackend, Pool
        pool = Pool(name={pool!r}, limit={count}, backend=HostBackend({directory!r}))
        leases = [pool.try_acquire({key!r}) for _ in range({count})]
        assert all(leases)
        print("held", flush=True)
        sys.stdin.readline()
        for lease in leases:
            lease.release()
        print("released", flush=True)
        sys.stdin.readline()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    with proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"held\n"
        try:
            yield proc
        finally:
            proc.kill()


def test_busiest_counts_the_most_held_key_of_one_pool_across_backends(tmp_path: Path):
    # Two processes' worth of backends on one directory: a key's slots add up across them.
    a, b = HostBackend(str(tmp_path)), HostBackend(str(tmp_path))
    held = [a.try_acquire("p", "ann", 3), b.try_acquire("p", "ann", 3), a.try_acquire("p", "bo", 3)]
    held.append(a.try_acquire("other", "x", 3))
    held += [b.try_acquire("other", "x", 3) for _ in range(2)]
    assert all(lease is not None for lease in held)
    assert (a.busiest("p", 3), b.busiest("other", 3), a.busiest("none", 3)) == (2, 3, 0)
    for lease in held:
        assert lease is not None
        lease.release()
    assert a.busiest("p", 3) == 0
