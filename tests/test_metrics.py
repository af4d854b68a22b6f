"""The metrics endpoint, the dashboard and its JSON, in-process."""

from __future__ import annotations

import sys
import uuid

import pytest
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.test import Client, RequestFactory, override_settings
from prometheus_client.parser import text_string_to_metric_families

from django_streamer import limit_concurrency
from django_streamer.checks import check_settings

rf = RequestFactory()


@pytest.fixture
def metrics_dir(tmp_path, settings):
    settings.STREAMER_METRICS_DIR = str(tmp_path / "metrics")
    return tmp_path / "metrics"


def scrape(client: Client, **extra) -> dict[str, float]:
    response = client.get("/streaming/metrics/", REMOTE_ADDR="127.0.0.1", **extra)
    assert response.status_code == 200, response.content
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return samples


def stream(client: Client, query: str) -> bytes:
    return b"".join(client.get(f"/stream/?{query}"))


def test_every_documented_metric_is_served(metrics_dir):
    client = Client()
    stream(client, "kind=sync&items=100&tag=m1")
    samples = scrape(client)
    for name in (
        "django_streamer_streams_started_total{stream=m1}",
        "django_streamer_streams_active{stream=m1}",
        "django_streamer_streams_finished_total{outcome=completed,stream=m1}",
        "django_streamer_streams_finished_total{outcome=aborted,stream=m1}",
        "django_streamer_streams_finished_total{outcome=failed,stream=m1}",
        "django_streamer_streams_finished_total{outcome=lost,stream=m1}",
        "django_streamer_streams_finished_total{outcome=drained,stream=m1}",
        "django_streamer_streams_rejected_total{stream=m1}",
        "django_streamer_bytes_total{stream=m1}",
        "django_streamer_bytes_uncompressed_total{stream=m1}",
        "django_streamer_chunks_total{stream=m1}",
        "django_streamer_chunk_size_max_bytes{stream=m1}",
        "django_streamer_time_to_first_byte_seconds_count{stream=m1}",
        "django_streamer_stream_duration_seconds_bucket{le=+Inf,stream=m1}",
    ):
        assert name in samples, name
    assert samples["django_streamer_bytes_total{stream=m1}"] == 3300


def test_openmetrics_when_asked(metrics_dir):
    client = Client()
    stream(client, "kind=sync&items=1&tag=om")
    response = client.get(
        "/streaming/metrics/", REMOTE_ADDR="127.0.0.1", HTTP_ACCEPT="application/openmetrics-text"
    )
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.rstrip().endswith(b"# EOF")


@pytest.mark.parametrize(
    ("settings_kw", "addr", "auth", "status"),
    [
        ({"STREAMER_METRICS_TOKEN": "s3cret", "STREAMER_METRICS_ALLOW": None}, "10.1.1.1", "", 401),
        (
            {"STREAMER_METRICS_TOKEN": "s3cret", "STREAMER_METRICS_ALLOW": None},
            "10.1.1.1",
            "Bearer wrong",
            401,
        ),
        (
            {"STREAMER_METRICS_TOKEN": "s3cret", "STREAMER_METRICS_ALLOW": None},
            "10.1.1.1",
            "Bearer s3cret",
            200,
        ),
        ({"STREAMER_METRICS_ALLOW": ["10.0.0.0/8"]}, "10.1.1.1", "", 200),
        ({"STREAMER_METRICS_ALLOW": ["10.0.0.0/8"]}, "192.0.2.1", "", 403),
        (
            {"STREAMER_METRICS_TOKEN": "s3cret", "STREAMER_METRICS_ALLOW": ["10.0.0.0/8"]},
            "192.0.2.1",
            "Bearer s3cret",
            403,
        ),
    ],
)
def test_endpoint_protection(metrics_dir, settings_kw, addr, auth, status):
    with override_settings(**settings_kw):
        extra = {"HTTP_AUTHORIZATION": auth} if auth else {}
        response = Client().get("/streaming/metrics/", REMOTE_ADDR=addr, **extra)
    assert response.status_code == status
    if status == 401:
        assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.django_db
def test_dashboard_is_in_the_admin_index_and_sidebar_for_staff(metrics_dir):
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client = Client()
    client.force_login(staff)
    index = client.get("/admin/")
    assert b'href="/admin/streaming/"' in index.content
    page = client.get("/admin/streaming/")
    assert page.status_code == 200
    assert b"Throughput per stream" in page.content
    assert b'id="nav-sidebar"' in page.content
    assert page.content.count(b'href="/admin/streaming/"') >= 1


@pytest.mark.django_db
def test_json_denies_anonymous_and_non_staff_and_serves_staff(metrics_dir):
    url = "/admin/streaming/data.json"
    assert Client().get(url).status_code == 403
    plain = User.objects.create_user("plain", password="pw")
    client = Client()
    client.force_login(plain)
    assert client.get(url).status_code == 403
    assert client.get("/admin/streaming/").status_code == 302  # to the admin login
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    stream(client, "kind=sync&items=10&tag=js")
    data = client.get(url).json()
    assert data["streams"]["js"]["bytes"] == 330
    assert set(data) == {
        *("time", "processes", "streams", "pools", "active", "active_hidden", "store_errors")
    }


def deny_all(request) -> bool:
    return False


@pytest.mark.django_db
def test_the_permission_hook_can_refuse_staff(metrics_dir):
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client = Client()
    client.force_login(staff)
    with override_settings(STREAMER_DASHBOARD_PERMISSION="tests.test_metrics.deny_all"):
        assert client.get("/admin/streaming/data.json").status_code == 403
        assert client.get("/admin/streaming/").status_code == 403
        assert b"/admin/streaming/" not in client.get("/admin/").content


@pytest.mark.parametrize(
    ("settings_kw", "check_id"),
    [
        ({"STREAMER_METRICS_MAX_NAMES": 0}, "django_streamer.E007"),
        ({"STREAMER_METRICS_DIR": "/proc/nope/metrics"}, "django_streamer.E008"),
        ({"STREAMER_METRICS_ALLOW": ["not-an-ip"]}, "django_streamer.E009"),
        ({"STREAMER_METRICS_ALLOW": "10.0.0.0/8"}, "django_streamer.E009"),
        ({"STREAMER_DASHBOARD_PERMISSION": "tests.nowhere.check"}, "django_streamer.E010"),
        ({"STREAMER_METRICS_ALLOW": None, "STREAMER_METRICS_TOKEN": None}, "django_streamer.W004"),
    ],
)
def test_metrics_checks(settings_kw, check_id):
    with override_settings(**settings_kw):
        messages = check_settings()
    assert [m.id for m in messages] == [check_id]
    assert messages[0].hint


def test_no_warning_with_debug_on():
    with override_settings(DEBUG=True, STREAMER_METRICS_ALLOW=None):
        assert check_settings() == []


def test_django_prometheus_shows_the_same_metrics_once(metrics_dir):
    client = Client()
    stream(client, "kind=sync&items=10&tag=dp")
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert text.count('django_streamer_bytes_total{stream="dp"} 330.0') == 1
    assert text.count("# TYPE django_streamer_bytes_total counter") == 1


def test_the_gunicorn_child_exit_hook_folds_a_dead_workers_file(metrics_dir):
    import os

    from django_streamer.gunicorn_config import child_exit
    from django_streamer.metrics import get_store

    pid = os.fork()
    if pid == 0:
        try:
            b"".join(Client().get("/stream/?kind=sync&items=10&tag=hook"))
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert [p for p in metrics_dir.glob(f"p-{pid}-*.bin")]
    child_exit(object(), object())
    assert not [p for p in metrics_dir.glob(f"p-{pid}-*.bin")]
    assert get_store().snapshot().streams["hook"]["bytes"] == 330


def test_prometheus_multiprocess_mode_sees_the_same_metrics_once(metrics_dir, tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from django_streamer.metrics import write_multiprocess_mirror

    client = Client()
    stream(client, "kind=sync&items=10&tag=mp")
    stream(client, "kind=sync&items=20&tag=mp")
    mp_dir = tmp_path / "prometheus"
    mp_dir.mkdir()
    write_multiprocess_mirror(str(mp_dir))
    write_multiprocess_mirror(str(mp_dir))  # replaced, not added to
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(mp_dir))
    text = generate_latest(registry).decode()
    assert text.count('django_streamer_bytes_total{stream="mp"} 990.0') == 1
    assert text.count('django_streamer_streams_started_total{stream="mp"} 2.0') == 1
    assert text.count('django_streamer_streams_active{stream="mp"} 0.0') == 1
    # Histograms come back cumulative, with a count that matches.
    assert 'django_streamer_stream_duration_seconds_count{stream="mp"} 2.0' in text
    assert 'django_streamer_stream_duration_seconds_bucket{le="+Inf",stream="mp"} 2.0' in text
    assert text.count("# TYPE django_streamer_bytes_total counter") == 1


@pytest.mark.parametrize("server_model", ["wsgi", "asgi"])
def test_active_streams_carry_their_request_path(metrics_dir, server_model):
    import asyncio

    from django_streamer.metrics import get_store

    from .conftest import call_asgi, wsgi_iter

    seen: list[list[str]] = []

    def look(_: bytes) -> None:
        seen.append([a["path"] for a in get_store().snapshot().active])  # type: ignore[misc]

    path = "/stream/?kind=sync&items=3&flush=0&tag=paths"
    if server_model == "asgi":
        asyncio.run(call_asgi(path, on_body=look))
    else:
        _, _, body = wsgi_iter(path)
        for chunk in body:
            look(chunk)
        body.close()
    assert seen and all(paths == ["/stream/"] for paths in seen)
    assert get_store().snapshot().active == []


def test_a_routed_endpoint_without_prometheus_client_is_an_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import -> ImportError
    messages = check_settings()
    assert [m.id for m in messages] == ["django_streamer.E011"]
    assert "django-streamer[prometheus]" in (messages[0].hint or "")


def test_a_pool_s_limit_is_per_key_and_its_busiest_key_is_shown(metrics_dir, admin_client):
    # Issue 19: "In use 4, Limit 2" (two keys, two each) read as over-admission.
    name = "per-key-" + uuid.uuid4().hex[:6]

    @limit_concurrency(2, key="header:X-User", scope="host", name=name)
    def view(request):
        return HttpResponse(b"x")

    held = [view(rf.get("/", HTTP_X_USER=user)) for user in ("ann", "ann", "bo", "bo")]
    assert [r.status_code for r in held] == [200] * 4
    held.append(view(rf.get("/", HTTP_X_USER="cy")))
    pool = admin_client.get("/admin/streaming/data.json").json()["pools"][name]
    assert (pool["in_use"], pool["limit"], pool["busiest_key"]) == (5, 2, 2)
    samples = scrape(Client())
    label = f"{{limiter={name}}}"
    assert samples[f"django_streamer_limiter_in_use{label}"] == 5
    assert samples[f"django_streamer_limiter_busiest_key_in_use{label}"] == 2
    for response in held:
        response.close()
    assert admin_client.get("/admin/streaming/data.json").json()["pools"][name]["busiest_key"] == 0


def test_a_process_pool_has_no_busiest_key_figure(metrics_dir, admin_client):
    name = "proc-" + uuid.uuid4().hex[:6]

    @limit_concurrency(2, scope="process", name=name)
    def view(request):
        return HttpResponse(b"x")

    held = view(rf.get("/"))
    assert (
        admin_client.get("/admin/streaming/data.json").json()["pools"][name]["busiest_key"] is None
    )
    assert not any(name in key and "busiest" in key for key in scrape(Client()))
    held.close()
