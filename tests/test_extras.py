"""A missing optional dependency names the extra that installs it (issue 19).

Each test makes the module unimportable the way a machine without the extra
has it (``sys.modules[name] = None`` makes ``import name`` raise ImportError).
"""

from __future__ import annotations

import importlib
import re
import sys
import types
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import Client

from django_streamer import extras
from django_streamer.core.compression import codecs
from django_streamer.metrics import fleet, snapshot_json

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_stream_zip_without_the_zip_extra_names_it(monkeypatch: pytest.MonkeyPatch):
    without(monkeypatch, "zipstream")
    monkeypatch.delitem(sys.modules, "django_streamer.archive", raising=False)
    with pytest.raises(ImportError, match=re.escape('pip install "django-streamer[zip]"')):
        from django_streamer import stream_zip  # noqa: F401
    with pytest.raises(ImportError, match="stream_zip needs zipstream-ng is not installed"):
        importlib.import_module("django_streamer.archive")


def test_the_other_project_named_zipstream_is_told_apart(monkeypatch: pytest.MonkeyPatch):
    # `pip install zipstream` gives a module of that name from another distribution.
    monkeypatch.setitem(sys.modules, "zipstream", types.ModuleType("zipstream"))
    real = metadata.distribution

    def only_the_impostor(name: str) -> Any:
        if name == "zipstream-ng":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "distribution", only_the_impostor)
    problem = extras.missing("zipstream")
    assert problem is not None and "not zipstream-ng's" in problem
    assert 'pip install "django-streamer[zip]"' in problem
    assert extras.missing("redis") is None  # not a contested name: no metadata look-up


def test_the_metrics_endpoint_without_prometheus_says_which_extra(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    without(monkeypatch, "prometheus_client")
    response = Client().get("/streaming/metrics/")
    assert response.status_code == 500
    body = response.content.decode()
    assert "prometheus-client is not installed" in body
    assert 'pip install "django-streamer[prometheus]"' in body
    assert any("django-streamer[prometheus]" in r.getMessage() for r in caplog.records)
    assert "django_streamer.E011" in [m.id for m in run_checks()]


def test_the_fleet_view_without_redis_says_which_extra(
    monkeypatch: pytest.MonkeyPatch, settings: Any, tmp_path: Path
):
    without(monkeypatch, "redis")
    settings.STREAMER_METRICS_DIR = str(tmp_path / "m")
    settings.STREAMER_FLEET = True
    settings.STREAMER_REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # a URL no client has
    try:
        data = snapshot_json()
    finally:
        fleet.publisher.reset()
    assert 'pip install "django-streamer[redis]"' in data["fleet"]
    assert "django_streamer.E022" in [m.id for m in run_checks()]


@pytest.fixture
def fresh_codings() -> Iterator[None]:
    codecs.available_codings.cache_clear()
    codecs.zstd_backend.cache_clear()
    yield
    codecs.available_codings.cache_clear()
    codecs.zstd_backend.cache_clear()


def test_compression_without_its_extra_is_warning_w007(
    monkeypatch: pytest.MonkeyPatch, settings: Any, fresh_codings: None
):
    settings.STREAMER_COMPRESSION = True
    assert "django_streamer.W009" not in [m.id for m in run_checks()]
    without(monkeypatch, "brotli", "zstandard", "backports.zstd", "compression.zstd")
    codecs.available_codings.cache_clear()
    codecs.zstd_backend.cache_clear()
    warnings = [m for m in run_checks() if m.id == "django_streamer.W009"]
    assert len(warnings) == 1 and "zstd and br" in warnings[0].msg
    assert "django-streamer[compression]" in str(warnings[0].hint)
    settings.STREAMER_COMPRESSION = False
    assert "django_streamer.W009" not in [m.id for m in run_checks()]


def test_the_all_extra_installs_every_other_runtime_extra():
    pyproject = (ROOT / "pyproject.toml").read_text()
    extras_table = pyproject.split("[project.optional-dependencies]")[1].split("\n[")[0]
    names = set(re.findall(r"^([a-z]+) = ", extras_table, flags=re.M)) - {
        "all",
        "dev",
        "docs",
        "bench",
    }
    listed = re.search(r'^all = \["django-streamer\[([a-z,]+)\]"\]', extras_table, flags=re.M)
    assert listed is not None and set(listed.group(1).split(",")) == names
    readme = (ROOT / "README.md").read_text()
    assert 'pip install "django-streamer[all]"' in readme
    assert 'pip install "django-streamer[gunicorn]"' in readme
