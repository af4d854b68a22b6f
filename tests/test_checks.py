"""One test per system check id, their registration, and ``manage.py check`` failing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core import checks
from django.test import override_settings

from django_streamer.checks import check_configuration, check_security, check_settings

ROOT = Path(__file__).resolve().parent.parent


def ids(**settings_kw: object) -> list[str]:
    with override_settings(**settings_kw):
        messages = check_settings()
    assert all(m.hint for m in messages), messages
    return [m.id for m in messages if m.id is not None]


def only(check_id: str, **settings_kw: object) -> str:
    with override_settings(**settings_kw):
        messages = check_settings()
    assert [m.id for m in messages] == [check_id], messages
    assert messages[0].hint
    return str(messages[0].msg)


def test_good_settings_give_no_message():
    assert ids() == []


def test_e001_chunk_size():
    assert "STREAMER_CHUNK_SIZE must be a positive int, not str '64k'" in only(
        "django_streamer.E001", STREAMER_CHUNK_SIZE="64k"
    )


def test_e002_flush_interval():
    only("django_streamer.E002", STREAMER_FLUSH_INTERVAL=float("nan"))


def test_e003_x_accel_buffering():
    only("django_streamer.E003", STREAMER_X_ACCEL_BUFFERING="no")


def test_e004_limiter_dir_wrong_type_unwritable_or_unsafe(tmp_path):
    only("django_streamer.E004", STREAMER_LIMITER_DIR=42)
    only("django_streamer.E004", STREAMER_LIMITER_DIR="/proc/not-writable/x")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    assert "group and other users must have no access" in only(
        "django_streamer.E004", STREAMER_LIMITER_DIR=str(shared)
    )


def test_e005_limit_handler():
    only("django_streamer.E005", STREAMER_LIMIT_HANDLER="tests.nowhere.handler")


def test_e006_retry_after():
    only("django_streamer.E006", STREAMER_RETRY_AFTER=True)


def test_e007_metrics_max_names():
    only("django_streamer.E007", STREAMER_METRICS_MAX_NAMES=0)


def test_e008_metrics_dir():
    only("django_streamer.E008", STREAMER_METRICS_DIR="/proc/nope/metrics")


def test_e009_metrics_allow_is_a_list_of_networks():
    message = only("django_streamer.E009", STREAMER_METRICS_ALLOW="10.0.0.0/8")
    assert "STREAMER_METRICS_ALLOW must be a list of networks" in message
    assert "not str '10.0.0.0/8'" in message
    assert "'not-an-ip'" in only("django_streamer.E009", STREAMER_METRICS_ALLOW=["not-an-ip"])


def test_e010_dashboard_permission():
    only("django_streamer.E010", STREAMER_DASHBOARD_PERMISSION="tests.nowhere.check")


def test_e011_routed_endpoint_without_prometheus_client(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import -> ImportError
    assert "prometheus_client is not installed" in only("django_streamer.E011")


def test_e012_metrics_switch():
    only("django_streamer.E012", STREAMER_METRICS="yes")


def test_e031_ranges_switch():
    only("django_streamer.E031", STREAMER_RANGES="no")


def test_e013_ip_header_type():
    only("django_streamer.E013", STREAMER_IP_HEADER=["HTTP_X_FORWARDED_FOR"])


def test_e026_trusted_proxies():
    message = only("django_streamer.E026", STREAMER_TRUSTED_PROXIES=["10.0.0.0/8", "lb.internal"])
    assert "STREAMER_TRUSTED_PROXIES" in message and "'lb.internal'" in message
    only("django_streamer.E026", STREAMER_TRUSTED_PROXIES="10.0.0.0/8")  # a str, not a list


def test_e014_metrics_token_type():
    only("django_streamer.E014", STREAMER_METRICS_TOKEN="")


def test_w001_fires_on_the_chunk_size_not_on_asgi_application():
    from django.core.handlers.asgi import ASGIHandler

    limit = ASGIHandler.chunk_size
    # startproject sets no ASGI_APPLICATION; the cost is the same without it.
    only("django_streamer.W001", STREAMER_CHUNK_SIZE=limit + 1)
    assert ids(STREAMER_CHUNK_SIZE=limit) == []


def test_w002_flush_interval_long():
    only("django_streamer.W002", STREAMER_FLUSH_INTERVAL=30)


def test_w003_ip_header_shape():
    only("django_streamer.W003", STREAMER_IP_HEADER="X-Real-IP")


def test_w004_open_endpoint_is_a_security_warning():
    only("django_streamer.W004", STREAMER_METRICS_ALLOW=None, STREAMER_METRICS_TOKEN=None)
    with override_settings(STREAMER_METRICS_ALLOW=None, DEBUG=True):
        assert check_security() == []


def test_checks_are_registered_in_ready_with_their_tags():
    registered: list[Any] = list(checks.registry.registry.get_checks())
    assert check_configuration in registered
    assert check_security in registered
    tags: Any = check_security
    assert checks.Tags.security in tags.tags
    tags = check_configuration
    assert checks.Tags.compatibility in tags.tags


def test_checks_create_nothing(tmp_path):
    missing = tmp_path / "a" / "b" / "metrics"
    assert ids(STREAMER_METRICS_DIR=str(missing), STREAMER_LIMITER_DIR=str(missing)) == []
    assert not (tmp_path / "a").exists()


def test_manage_py_check_fails_on_an_error(tmp_path):
    (tmp_path / "bad_settings.py").write_text(
        "from tests.settings import *\nSTREAMER_CHUNK_SIZE = '64k'\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bad_settings",
        "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}",
    }
    run = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "django_streamer.E001" in run.stderr
    assert "setting STREAMER_CHUNK_SIZE must be a positive int" in run.stderr


@pytest.mark.parametrize("value", [0, -1, 1.5, "64k", True])
def test_every_bad_chunk_size_is_e001(value):
    assert ids(STREAMER_CHUNK_SIZE=value) == ["django_streamer.E001"]
