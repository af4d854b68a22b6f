"""The metrics store across real processes, without Django."""

from __future__ import annotations

import os
from pathlib import Path

from django_streamer.core.metrics import (
    Store,
    StreamMetrics,
    record_admitted,
    record_rejected,
    record_released,
)
from django_streamer.core.recorder import Outcome

from .forking import in_child, killed_child, stream


def test_one_process_figures(tmp_path: Path):
    store = Store(str(tmp_path))
    stream(store, "export", [100, 100, 50], Outcome.COMPLETED)
    stream(store, "export", [10], Outcome.ABORTED)
    stream(store, "export", [], Outcome.FAILED)
    record_rejected(store, "export", "export")
    e = store.snapshot().streams["export"]
    assert (e["started"], e["completed"], e["aborted"], e["failed"]) == (3, 1, 1, 1)
    assert (e["bytes"], e["chunks"], e["chunk_max"], e["rejected"]) == (260, 4, 100, 1)
    assert e["active"] == 0
    assert e["ttfb_count"] == 2 and e["duration_count"] == 3
    assert sum(e["duration_buckets"]) == 3  # type: ignore[arg-type]


def test_figures_are_summed_over_processes_and_survive_their_exit(tmp_path: Path):
    store = Store(str(tmp_path))
    for _ in range(3):
        in_child(lambda: stream(Store(str(tmp_path)), "s", [1000] * 5, Outcome.COMPLETED))
    stream(store, "s", [7], Outcome.COMPLETED)
    e = store.snapshot().streams["s"]
    assert (e["started"], e["bytes"], e["chunks"]) == (4, 15007, 16)
    # The children's files were folded into the archive and removed.
    files = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".bin")
    assert files == ["archive.bin", "names.bin"] + [n for n in files if n.startswith("p-")]
    assert len([n for n in files if n.startswith("p-")]) == 1


def test_a_sigkilled_process_keeps_its_totals_and_loses_its_gauges(tmp_path: Path):
    store = Store(str(tmp_path))

    def hold() -> None:
        child = Store(str(tmp_path))
        stream(child, "s", [500], Outcome.COMPLETED)
        held = StreamMetrics(child, "s", "/held")  # active when killed
        held.start()
        held.chunk(300)
        record_admitted(child, "pool", 4, 0.0)  # a slot held when killed

    with killed_child(hold):
        live = store.snapshot()
        assert live.streams["s"]["active"] == 1 and live.pools["pool"]["in_use"] == 1
        assert [a["path"] for a in live.active] == ["/held"]
    dead = store.snapshot()
    e = dead.streams["s"]
    assert (e["started"], e["bytes"], e["completed"]) == (2, 800, 1)
    assert e["active"] == 0
    assert dead.pools["pool"]["in_use"] == 0
    assert dead.pools["pool"]["admitted"] == 1
    assert dead.pools["pool"]["limit"] == 4
    assert dead.active == []


def test_300_recycled_processes_leave_one_file_each_live_and_exact_totals(tmp_path: Path):
    def work() -> None:
        s = Store(str(tmp_path))
        stream(s, "a", [100], Outcome.COMPLETED)
        stream(s, "b", [3], Outcome.ABORTED)

    for _ in range(300):
        in_child(work)
    store = Store(str(tmp_path))
    snap = store.snapshot()
    assert snap.streams["a"]["bytes"] == 30000 and snap.streams["a"]["started"] == 300
    assert snap.streams["b"]["aborted"] == 300
    assert len(list(tmp_path.glob("p-*.bin"))) <= 1  # only this process's, if any
    assert len(list(tmp_path.iterdir())) <= 5


def test_names_past_the_cap_count_as_other(tmp_path: Path):
    store = Store(str(tmp_path), max_names=3)
    for i in range(6):
        stream(store, f"s{i}", [10], Outcome.COMPLETED)
    # Another process sees the same assignment.
    in_child(lambda: stream(Store(str(tmp_path), max_names=3), "s5", [1], Outcome.COMPLETED))
    snap = store.snapshot()
    assert sorted(snap.streams) == ["other", "s0", "s1", "s2"]
    assert snap.streams["other"]["bytes"] == 31
    assert snap.streams["other"]["started"] == 4


def test_limiter_figures(tmp_path: Path):
    store = Store(str(tmp_path))
    record_admitted(store, "p", 2, 0.003)
    record_admitted(store, "p", 2, 0.2)
    record_released(store, "p")
    record_rejected(store, "view", "p")
    p = store.snapshot().pools["p"]
    assert (p["admitted"], p["in_use"], p["limit"], p["rejected"]) == (2, 1, 2, 1)
    assert abs(p["wait_sum"] - 0.203) < 1e-9  # type: ignore[operator]


def test_a_chunk_costs_no_more_than_a_few_stores(tmp_path: Path):
    # Not a speed target (those live in bench/): a guard that recording a
    # chunk stays in memory, with no I/O per call.
    store = Store(str(tmp_path))
    rec = StreamMetrics(store, "hot", "/")
    rec.start()
    before = os.times()
    for _ in range(100_000):
        rec.chunk(65536)
    spent = os.times()
    rec.finish(Outcome.COMPLETED)
    assert spent.system - before.system < 0.2  # no syscalls per chunk
    assert store.snapshot().streams["hot"]["chunks"] == 100_000


def test_the_recorders_bucket_rule_is_layouts():
    # The recorder finds buckets with bisect_left (in C); layout.bucket is the
    # rule the readers document: the first bound the value is <= to.
    from bisect import bisect_left

    from django_streamer.core.metrics import layout

    for buckets in (layout.TTFB_BUCKETS, layout.DURATION_BUCKETS, layout.WAIT_BUCKETS):
        values = [0.0, *buckets, *(b * 0.999 for b in buckets), *(b * 1.001 for b in buckets), 1e9]
        for value in values:
            assert bisect_left(buckets, value) == layout.bucket(value, buckets), value
