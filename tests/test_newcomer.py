"""A newcomer's first hour: errors where users look, under the servers they use."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings

import django_streamer
from django_streamer import conf as conf_module
from django_streamer.conf import conf, warn_if_not_installed
from django_streamer.testing import fetch

from .conftest import ROOT, Server, free_port, start_gunicorn, stop_gunicorn

WITHOUT_APP = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]


# -- settings read at run time --------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("STREAMER_CHUNK_SIZE", "64k", "setting STREAMER_CHUNK_SIZE must be a positive int"),
        ("STREAMER_FLUSH_INTERVAL", -1, "setting STREAMER_FLUSH_INTERVAL must be a number"),
        ("STREAMER_METRICS_ALLOW", "10.0.0.0/8", "must be a list of networks"),
        ("STREAMER_METRICS_MAX_NAMES", "100", "setting STREAMER_METRICS_MAX_NAMES must be"),
        ("STREAMER_X_ACCEL_BUFFERING", "no", "STREAMER_X_ACCEL_BUFFERING must be True or False"),
    ],
)
def test_a_bad_setting_read_at_run_time_names_the_setting(name, value, says):
    with override_settings(**{name: value}), pytest.raises(ImproperlyConfigured, match=says):
        getattr(conf, name)


def test_a_stream_with_a_bad_chunk_size_setting_is_a_clear_error():
    from django_streamer import stream_response

    with (
        override_settings(STREAMER_CHUNK_SIZE="64k"),
        pytest.raises(ImproperlyConfigured, match="STREAMER_CHUNK_SIZE"),
    ):
        stream_response([b"x"])


def test_the_endpoint_with_allow_as_a_str_is_a_clear_error():
    with (
        override_settings(STREAMER_METRICS_ALLOW="10.0.0.0/8"),
        pytest.raises(ImproperlyConfigured, match=r"list of networks.*, not str '10\.0\.0\.0/8'"),
    ):
        Client().get("/streaming/metrics/", REMOTE_ADDR="127.0.0.1")


def test_each_value_is_validated_once_until_a_setting_changes(monkeypatch):
    calls = []
    real = conf_module.VALIDATORS["STREAMER_CHUNK_SIZE"]

    def counting(value, *, what):
        calls.append(value)
        return real(value, what=what)

    monkeypatch.setitem(conf_module.VALIDATORS, "STREAMER_CHUNK_SIZE", counting)
    with override_settings(STREAMER_CHUNK_SIZE=1234):
        assert [conf.STREAMER_CHUNK_SIZE for _ in range(100)] == [1234] * 100
        assert calls == [1234]
    assert conf.STREAMER_CHUNK_SIZE == 65536  # the change back empties the memo
    assert calls == [1234, 65536]


# -- the app missing from INSTALLED_APPS -------------------------------------------


def test_the_metrics_view_says_the_app_must_be_installed():
    with (
        override_settings(INSTALLED_APPS=WITHOUT_APP),
        pytest.raises(ImproperlyConfigured, match="django_streamer must be in INSTALLED_APPS"),
    ):
        Client().get("/streaming/metrics/", REMOTE_ADDR="127.0.0.1")
    assert Client().get("/streaming/metrics/", REMOTE_ADDR="127.0.0.1").status_code == 200


def test_warn_if_not_installed_logs_one_line_per_process(caplog):
    caplog.set_level(logging.WARNING, logger="django_streamer")
    with override_settings(INSTALLED_APPS=WITHOUT_APP):
        assert [warn_if_not_installed() for _ in range(5)] == [False] * 5
    lines = [r for r in caplog.records if "INSTALLED_APPS" in r.getMessage()]
    assert len(lines) == 1
    assert "django_streamer must be in INSTALLED_APPS" in lines[0].getMessage()
    assert warn_if_not_installed() is True  # installed again: the cache was cleared


def test_the_first_stream_response_of_a_process_warns_once_without_the_app(caplog):
    from django_streamer import stream_response

    caplog.set_level(logging.WARNING, logger="django_streamer")
    with override_settings(INSTALLED_APPS=WITHOUT_APP):
        for _ in range(3):
            response = stream_response([b"x"], name="newcomer")
            assert b"".join(response) == b"x"
    lines = [r for r in caplog.records if "INSTALLED_APPS" in r.getMessage()]
    assert len(lines) == 1


@pytest.mark.parametrize("bad", ["exp\rort", "a\x1cb", "line\u2028sep"])
def test_names_with_control_characters_are_refused_where_they_enter(bad):
    from django_streamer import limit_concurrency, stream_response

    name = bad.encode().decode("unicode_escape")
    with pytest.raises(ValueError, match="name"):
        stream_response([b"x"], name=name)
    with pytest.raises(ValueError, match="limit_concurrency: pool name"):
        limit_concurrency(1, name=name)(lambda request: None)


# -- the public API -------------------------------------------------------------------


def test_stream_source_error_and_stream_recorder_are_exported():
    from django_streamer.core.chunking import StreamSourceError
    from django_streamer.core.recorder import StreamRecorder

    assert django_streamer.StreamSourceError is StreamSourceError
    assert django_streamer.StreamRecorder is StreamRecorder
    assert {"StreamSourceError", "StreamRecorder"} <= set(django_streamer.__all__)
    for name in django_streamer.__all__:
        assert getattr(django_streamer, name) is not None


# -- real servers ------------------------------------------------------------------------


def settings_module(tmp_path: Path, name: str, body: str) -> dict[str, str]:
    (tmp_path / f"{name}.py").write_text("from tests.settings import *\n" + body)
    return {"DJANGO_SETTINGS_MODULE": name, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}


def raw_get(server: Server, path: str, headers: bytes = b"") -> bytes:
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(
            b"GET "
            + path.encode()
            + b" HTTP/1.1\r\nHost: x\r\n"
            + headers
            + b"Connection: close\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


@pytest.mark.server
def test_a_non_ascii_token_is_compared_as_utf8_on_the_wire(tmp_path):
    env = settings_module(tmp_path, "token_settings", "STREAMER_METRICS_TOKEN = 'pässwörd-ключ'\n")
    server = start_gunicorn(tmp_path, "gthread", env=env)
    try:
        good = "Bearer pässwörd-ключ".encode()
        assert raw_get(
            server, "/streaming/metrics/", b"Authorization: " + good + b"\r\n"
        ).startswith(b"HTTP/1.1 200")
        bad = "Bearer pässwörd-ключи".encode()
        assert raw_get(
            server, "/streaming/metrics/", b"Authorization: " + bad + b"\r\n"
        ).startswith(b"HTTP/1.1 401")
        assert raw_get(server, "/streaming/metrics/").startswith(b"HTTP/1.1 401")
    finally:
        stop_gunicorn(server)


@pytest.mark.server
def test_without_the_app_the_endpoint_fails_loudly_under_gunicorn(tmp_path):
    body = f"INSTALLED_APPS = {WITHOUT_APP!r}\nDEBUG = True\n"
    server = start_gunicorn(tmp_path, "gthread", env=settings_module(tmp_path, "no_app", body))
    try:
        wire = fetch(server.host, server.port, "/streaming/metrics/")
        assert wire.status == 500
        assert b"django_streamer must be in INSTALLED_APPS" in b"".join(wire.chunks)
    finally:
        stop_gunicorn(server)


@pytest.mark.server
@pytest.mark.parametrize("worker", ["asgi", "gthread"])
def test_the_gunicorn_config_sets_only_what_the_worker_uses(tmp_path, worker):
    port = free_port()
    log = tmp_path / "gunicorn.log"
    app = "tests.asgi:application" if worker == "asgi" else "tests.wsgi:application"
    env = {
        **os.environ,
        "GUNICORN_WORKER_CLASS": worker,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "1",
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "gunicorn", "-c", "python:django_streamer.gunicorn_config", app]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                wire = fetch("127.0.0.1", port, "/stream/?kind=sync&items=3", timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        assert wire.status == 200 and wire.complete
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    text = log.read_text()
    assert f"Using worker: {worker}" in text
    assert "does not use threads" not in text
    assert "[WARNING]" not in text and "[ERROR]" not in text, text


# -- the dashboard's "throughput now" ---------------------------------------------------


def test_throughput_now_is_the_recent_rate_of_active_streams_and_0_when_still():
    from django_streamer.core.metrics import Snapshot
    from django_streamer.metrics import snapshot_json

    def snap(at: float, sent: float | None) -> Snapshot:
        entry = {"stream": "s", "path": "/x", "pid": 1, "started": 100.0, "bytes": sent}
        return Snapshot(
            streams={"s": {"active": 0.0 if sent is None else 1.0, "bytes": sent or 5000.0}},
            active=[] if sent is None else [entry],
            processes=1,
            taken_at=at,
        )

    assert snapshot_json(snap(102.0, 2000.0))["streams"]["s"]["bytes_per_second"] == 1000.0
    # Since the previous snapshot, not since the start: 3000 more bytes in 1 s.
    data = snapshot_json(snap(103.0, 5000.0))
    assert data["streams"]["s"]["bytes_per_second"] == 3000.0
    assert data["active"][0]["bytes_per_second"] == 3000.0
    # A stalled stream reads 0, and so does a name with nothing active.
    assert snapshot_json(snap(104.0, 5000.0))["streams"]["s"]["bytes_per_second"] == 0.0
    assert snapshot_json(snap(105.0, None))["streams"]["s"]["bytes_per_second"] == 0.0
