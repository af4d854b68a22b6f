"""The Django-side metrics package: its shape, its caches' owners, its docs, its new figures."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import override_settings
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from django_streamer import metrics
from django_streamer.core.metrics import Snapshot, StreamMetrics
from django_streamer.core.recorder import Outcome
from django_streamer.metrics.dashboard import rates
from django_streamer.metrics.mirror import mirror
from django_streamer.metrics.store import stores
from django_streamer.metrics.wiring import stream_recorder

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "django_streamer" / "metrics"
README = (ROOT / "docs" / "metrics.md").read_text()  # the Prometheus names table


@pytest.fixture
def metrics_dir(tmp_path, settings):
    settings.STREAMER_METRICS_DIR = str(tmp_path / "metrics")
    return tmp_path / "metrics"


def served(*, openmetrics: bool = False) -> dict[str, dict[str, float]]:
    """The endpoint's body, parsed: family name -> {sample with labels: value}."""
    body, _ = metrics.render(openmetrics)
    parse = openmetrics_families if openmetrics else text_string_to_metric_families
    families = {}
    for family in parse(body.decode()):
        families[family.name] = {
            f"{s.name}{{{','.join(f'{k}={v}' for k, v in sorted(s.labels.items()))}}}": s.value
            for s in family.samples
        }
    return families


# -- shape ---------------------------------------------------------------------------


def test_each_module_is_short_and_each_function_under_50_lines():
    for path in sorted(PACKAGE.glob("*.py")):
        source = path.read_text()
        assert source.count("\n") < 300, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or 0) - node.lineno + 1
                assert length <= 50, f"{path.name}:{node.name} is {length} lines"


def test_no_module_reads_another_modules_private_names():
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
            dunder = node.attr.endswith("__") if isinstance(node, ast.Attribute) else False
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not dunder:
                owner = node.value
                assert isinstance(owner, ast.Name) and owner.id == "self", (
                    f"{path.name}:{node.lineno} reads .{node.attr} of something not its own"
                )


def test_what_other_modules_import_is_still_exported():
    for name in metrics.__all__:
        assert getattr(metrics, name) is not None, name


def test_importing_the_package_opens_no_file_and_starts_no_thread():
    code = (
        "import os, threading, django; from django.conf import settings;"
        "settings.configure(INSTALLED_APPS=[]); django.setup();"
        "before = (len(os.listdir('/proc/self/fd')), threading.active_count());"
        "import django_streamer.metrics;"
        "after = (len(os.listdir('/proc/self/fd')), threading.active_count());"
        "assert before == after, (before, after); print('clean')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "clean", out.stderr


# -- one owner per cache, with reset() ---------------------------------------------------


def test_the_store_cache_follows_the_settings_and_resets(tmp_path, metrics_dir):
    first = metrics.get_store()
    assert metrics.get_store() is first
    with override_settings(STREAMER_METRICS_DIR=str(tmp_path / "other")):
        other = metrics.get_store()
        assert other is not first and other.directory == str(tmp_path / "other")
    assert metrics.get_store() is first
    stores.reset()
    again = metrics.get_store()
    assert again is not first and again.directory == first.directory


class _Named:
    def __init__(self, name: object) -> None:
        self.name, self.path = name, "/x"


def test_the_stream_recorder_follows_a_store_reset(metrics_dir):
    # It reads the store cache's current entry itself: a reset must still reach it.
    assert stream_recorder(_Named("ok")) is not None  # type: ignore[arg-type]
    first = metrics.get_store()
    stores.reset()
    stream_recorder(_Named("a\nb"))  # type: ignore[arg-type]
    again = metrics.get_store()
    assert again is not first
    assert again.errors == {"stream name": 1} and first.errors == {}


def test_a_bad_stream_name_is_reported_every_time_and_counted_as_other(metrics_dir):
    # Good names are checked once per process; bad ones are never taken as checked.
    for name in ("fine", "a\nb", "fine", "a\nb", 7, ""):
        rec = stream_recorder(_Named(name))  # type: ignore[arg-type]
        assert rec is not None
        rec.start()
        rec.chunk(10)
        rec.finish(Outcome.COMPLETED)
    store = metrics.get_store()
    assert store.errors == {"stream name": 4}
    streams = store.snapshot().streams
    assert streams["fine"]["bytes"] == 20 and streams["other"]["bytes"] == 40


def test_the_stream_recorder_starts_the_elected_threads_again_after_a_reset_or_a_setting(
    monkeypatch, metrics_dir
):
    from django_streamer.metrics.fleet import publisher

    calls = []
    monkeypatch.setattr(mirror, "target", lambda: calls.append("mirror"))
    monkeypatch.setattr(publisher, "target", lambda: calls.append("publisher"))
    mirror.reset()
    publisher.reset()
    for _ in range(2):
        stream_recorder(_Named("s"))  # type: ignore[arg-type]
    assert calls == ["mirror", "publisher"]  # looked once, per setting generation
    mirror.reset()
    stream_recorder(_Named("s"))  # type: ignore[arg-type]
    assert calls[2:] == ["mirror"]
    with override_settings(STREAMER_FLEET_HOST="h"):
        stream_recorder(_Named("s"))  # type: ignore[arg-type]
    assert calls[3:] == ["mirror", "publisher"]


def test_the_rate_tracker_resets_to_whole_life_rates():
    def snap(at: float, sent: float) -> Snapshot:
        entry = {"stream": "s", "path": "/", "pid": 1, "started": 100.0, "bytes": sent}
        return Snapshot(streams={"s": {"active": 1.0}}, active=[entry], taken_at=at)

    rates.reset()
    assert metrics.active_rates(snap(101.0, 1000.0))[0]["bytes_per_second"] == 1000.0
    assert metrics.active_rates(snap(102.0, 1500.0))[0]["bytes_per_second"] == 500.0
    rates.reset()  # forgotten: measured over the stream's whole life again
    assert metrics.active_rates(snap(102.0, 1500.0))[0]["bytes_per_second"] == 750.0


def test_the_mirror_looks_for_the_mode_again_after_reset(monkeypatch, metrics_dir):
    calls = []
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(mirror, "ensure", lambda: calls.append(1))
    mirror.reset()
    mirror.start_once()
    assert calls == [1]


def test_the_collector_is_registered_once_and_reset_takes_it_out(metrics_dir):
    from prometheus_client import REGISTRY, generate_latest

    from django_streamer.metrics.collector import registration

    def count() -> int:
        return generate_latest(REGISTRY).decode().count("# TYPE django_streamer_bytes_total ")

    metrics.register_with_prometheus()  # ready() already did: a no-op
    assert count() == 1
    registration.reset()
    assert count() == 0
    metrics.register_with_prometheus()
    assert count() == 1


# -- the new figures, end to end through the collector and the JSON ----------------------


def record(name: str, *, source: int, wire: int, outcome: Outcome) -> None:
    rec = StreamMetrics(metrics.get_store(), name, "/x")
    rec.start()
    if source:
        rec.uncompressed(source)
    rec.chunk(wire)
    rec.finish(outcome)


def test_the_endpoint_serves_drained_lost_and_uncompressed_bytes(metrics_dir):
    record("gz", source=9000, wire=3000, outcome=Outcome.DRAINED)
    record("gz", source=0, wire=10, outcome=Outcome.COMPLETED)
    for openmetrics in (False, True):
        families = served(openmetrics=openmetrics)
        finished = families["django_streamer_streams_finished"]
        for outcome, count in [("completed", 1), ("drained", 1), ("lost", 0), ("failed", 0)]:
            key = f"django_streamer_streams_finished_total{{outcome={outcome},stream=gz}}"
            assert finished[key] == count, (openmetrics, key)
        uncompressed = families["django_streamer_bytes_uncompressed"]
        assert uncompressed["django_streamer_bytes_uncompressed_total{stream=gz}"] == 9000
        compressed = families["django_streamer_bytes_compressed"]
        assert compressed["django_streamer_bytes_compressed_total{stream=gz}"] == 3000


def test_every_served_family_is_in_the_readme_table_and_back(metrics_dir):
    record("docs", source=1, wire=1, outcome=Outcome.COMPLETED)
    documented = set(re.findall(r"^\| `(django_streamer_\w+)` \|", README, flags=re.M))
    names = set()
    for family in text_string_to_metric_families(metrics.render(False)[0].decode()):
        counter = family.type == "counter"
        names.add(family.name + "_total" if counter else family.name)
    assert names == documented


def test_the_json_has_every_outcome_the_ratio_hidden_actives_and_store_errors():
    figures = {"started": 7, "active": 1, "completed": 1, "aborted": 1, "failed": 1, "lost": 1}
    figures |= {"drained": 2, "bytes": 2000, "bytes_uncompressed": 5000, "chunks": 4}
    figures |= {"bytes_compressed": 2000}
    entry: dict[str, float | list[float]] = {k: float(v) for k, v in figures.items()}
    snap = Snapshot(
        streams={"gz": entry, "plain": {"started": 1.0, "completed": 1.0, "bytes": 10.0}},
        active_hidden=3,
        store_errors=2,
        taken_at=1.0,
    )
    data = metrics.snapshot_json(snap)
    gz, plain = data["streams"]["gz"], data["streams"]["plain"]
    outcomes = ("completed", "aborted", "failed", "lost", "drained")
    assert gz["started"] == sum(gz[o] for o in outcomes) + gz["active"]
    assert (gz["drained"], gz["bytes_uncompressed"], gz["compression_ratio"]) == (2, 5000, 2.5)
    assert (plain["bytes_uncompressed"], plain["compression_ratio"]) == (0, None)
    assert (data["active_hidden"], data["store_errors"]) == (3, 2)


def test_the_json_ratio_leaves_out_the_streams_that_were_not_compressed():
    # Issue 19: the dashboard showed 0.31x for a name only partly compressed.
    entry: dict[str, float | list[float]] = {"bytes": 31_000.0, "bytes_uncompressed": 10_000.0}
    entry["bytes_compressed"] = 1000.0
    data = metrics.snapshot_json(Snapshot(streams={"mixed": entry}, taken_at=1.0))
    assert data["streams"]["mixed"]["compression_ratio"] == 10.0
