"""The figures added in layout versions 3 and 5: ``drained``, ``bytes_(un)compressed``.

Against the real store in real (forked, SIGKILLed) processes, without Django.
"""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from unittest import mock

import pytest

from django_streamer.core.metrics import OUTCOMES, Store, StreamMetrics
from django_streamer.core.metrics.layout import VERSION, Geometry
from django_streamer.core.recorder import Outcome, Recorders, StreamRecorder

from .forking import killed_child


def compressed_stream(
    store: Store, name: str, chunks: list[tuple[int, int]], outcome: Outcome
) -> None:
    """A stream whose compression stage reports (source bytes, wire bytes) per chunk."""
    rec = StreamMetrics(store, name, "/z", publish_interval=60.0)
    rec.start()
    for source, wire in chunks:
        rec.uncompressed(source)
        rec.chunk(wire)
    rec.finish(outcome)


def test_outcomes_are_every_way_a_stream_ends():
    assert OUTCOMES == ("completed", "aborted", "failed", "lost", "drained")
    assert VERSION == 5


def test_a_drained_stream_is_its_own_outcome_and_keeps_the_identity(tmp_path: Path):
    store = Store(str(tmp_path))
    for outcome in (Outcome.DRAINED, Outcome.DRAINED, Outcome.COMPLETED):
        compressed_stream(store, "feed", [(10, 10)], outcome)
    held = StreamMetrics(store, "feed", "/held")
    held.start()
    e = store.snapshot().streams["feed"]
    assert (e["started"], e["drained"], e["completed"], e["active"]) == (4, 2, 1, 1)
    assert e["started"] == sum(e[o] for o in OUTCOMES) + e["active"]  # type: ignore[misc, operator]
    held.finish(Outcome.DRAINED)


def test_uncompressed_bytes_are_published_with_the_chunks_even_between_publishes(tmp_path: Path):
    # publish_interval=60: only the first chunk and finish() publish, so the
    # last chunks' uncompressed bytes must be carried by finish().
    store = Store(str(tmp_path))
    compressed_stream(store, "gz", [(1000, 100), (3000, 300), (6000, 600)], Outcome.COMPLETED)
    e = store.snapshot().streams["gz"]
    assert (e["bytes_uncompressed"], e["bytes"]) == (10_000, 1000)


def test_uncompressed_reported_after_the_last_chunk_is_still_published(tmp_path: Path):
    # A compressor's flush at the end can report source bytes with no new chunk.
    store = Store(str(tmp_path))
    rec = StreamMetrics(store, "late", "/")
    rec.start()
    rec.chunk(5)
    rec.uncompressed(500)
    rec.finish(Outcome.COMPLETED)
    assert store.snapshot().streams["late"]["bytes_uncompressed"] == 500


def test_the_ratio_counts_only_the_compressed_streams_of_a_name(tmp_path: Path):
    # Issue 19: one stream compressed 10x and three sent as they are read
    # 0.31x; the ratio is the compressed stream's alone.
    store = Store(str(tmp_path))
    compressed_stream(store, "mixed", [(10_000, 1000)], Outcome.COMPLETED)
    for _ in range(3):
        compressed_stream(store, "mixed", [(0, 10_000)], Outcome.COMPLETED)
    e = store.snapshot().streams["mixed"]
    assert (e["bytes"], e["bytes_uncompressed"], e["bytes_compressed"]) == (31_000, 10_000, 1000)


def test_a_chunk_before_the_first_uncompressed_report_counts_as_compressed(tmp_path: Path):
    store = Store(str(tmp_path))
    rec = StreamMetrics(store, "late", "/")
    rec.start()
    rec.chunk(20)  # published at once, before the stream is known to be compressed
    rec.uncompressed(500)
    rec.chunk(30)
    rec.finish(Outcome.COMPLETED)
    assert store.snapshot().streams["late"]["bytes_compressed"] == 50


def test_an_uncompressed_stream_reports_no_uncompressed_bytes(tmp_path: Path):
    store = Store(str(tmp_path))
    rec = StreamMetrics(store, "plain", "/")
    rec.start()
    rec.chunk(123)
    rec.finish(Outcome.COMPLETED)
    assert store.snapshot().streams["plain"]["bytes_uncompressed"] == 0
    assert store.snapshot().streams["plain"]["bytes_compressed"] == 0


def test_the_recorders_fan_out_passes_uncompressed_bytes_on(tmp_path: Path):
    store = Store(str(tmp_path))
    both = Recorders([StreamMetrics(store, "a", "/"), StreamMetrics(store, "b", "/")])
    both.start()
    both.uncompressed(70)
    both.chunk(7)
    both.finish(Outcome.COMPLETED)
    streams = store.snapshot().streams
    assert streams["a"]["bytes_uncompressed"] == streams["b"]["bytes_uncompressed"] == 70


def test_the_fan_out_reaches_recorders_whose_chunk_is_not_on_their_class():
    # A test double (its methods made per instance) and a recorder whose chunk()
    # is set on the instance hear every chunk, as a StreamRecorder subclass does.
    class Counting(StreamRecorder):
        pass

    counting = Counting()
    seen: list[int] = []
    counting.chunk = seen.append  # type: ignore[method-assign, assignment]
    double = mock.Mock(spec=StreamRecorder)
    fan = Recorders([double])
    fan.add(counting)
    fan.start()
    fan.uncompressed(70)
    fan.chunk(7)
    fan.finish(Outcome.COMPLETED)
    assert seen == [7]
    double.chunk.assert_called_once_with(7)
    double.uncompressed.assert_called_once_with(70)
    double.finish.assert_called_once_with(Outcome.COMPLETED)


def test_the_fan_out_decides_per_instance_after_the_class_was_seen():
    # What a class listens to is remembered per class; a chunk() set on one
    # instance still counts for that instance only.
    class Quiet(StreamRecorder):
        pass

    first, second, third = Quiet(), Quiet(), Quiet()
    seen: list[int] = []
    second.chunk = seen.append  # type: ignore[method-assign, assignment]
    fan = Recorders([first, second, third])
    fan.chunk(5)
    assert seen == [5]
    assert fan._chunk == [second]  # the quiet ones cost nothing per chunk


def test_a_sigkilled_process_keeps_uncompressed_and_drained_and_loses_its_active(tmp_path: Path):
    def hold() -> None:
        child = Store(str(tmp_path))
        compressed_stream(child, "s", [(900, 90)], Outcome.DRAINED)
        held = StreamMetrics(child, "s", "/held")
        held.start()
        held.uncompressed(400)
        held.chunk(40)  # the first chunk publishes at once

    with killed_child(hold):
        pass
    e = Store(str(tmp_path)).snapshot().streams["s"]
    assert (e["started"], e["drained"], e["lost"], e["active"]) == (2, 1, 1, 0)
    assert (e["bytes_uncompressed"], e["bytes"]) == (1300, 130)
    assert e["started"] == sum(e[o] for o in OUTCOMES) + e["active"]  # type: ignore[misc, operator]


def test_a_file_of_the_previous_layout_version_is_quarantined_not_summed(tmp_path: Path, caplog):
    store = Store(str(tmp_path))
    compressed_stream(store, "s", [(50, 5)], Outcome.COMPLETED)
    geometry = Geometry(2, 1)
    old = bytearray(geometry.header(1, 0.0).ljust(geometry.size, b"\0"))
    struct.pack_into("<I", old, 4, 2)  # what a worker of the previous release wrote
    path = tmp_path / "p-1-old.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, bytes(old))
    os.close(fd)
    with caplog.at_level(logging.ERROR, logger="django_streamer"):
        snap = store.snapshot()
    assert snap.streams["s"]["bytes"] == 5 and not path.exists()
    assert any("version 2" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("figure", ["drained", "bytes_uncompressed"])
def test_the_new_figures_are_folded_into_the_archive(tmp_path: Path, figure: str):
    pid = os.fork()
    if pid == 0:
        try:
            compressed_stream(Store(str(tmp_path)), "s", [(64, 8)], Outcome.DRAINED)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    store = Store(str(tmp_path))
    assert store.compact() == 1
    assert store.snapshot().streams["s"][figure] == {"drained": 1, "bytes_uncompressed": 64}[figure]
