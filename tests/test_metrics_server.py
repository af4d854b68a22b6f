"""End-to-end proof: under gunicorn with 3 workers, /metrics, the dashboard JSON
and what the clients received agree, with workers recycled mid-way too."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from django_streamer.testing import WireResponse, fetch

from .conftest import Server, Session, make_database, start_gunicorn, stop_gunicorn

pytestmark = pytest.mark.server


@pytest.fixture(params=["steady", "recycled"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    db = make_database(tmp_path)
    # Recycled: every worker is replaced after 3 requests (about 10 times here),
    # under the packaged gunicorn config and its child_exit hook.
    extra = [
        "-c",
        "python:django_streamer.gunicorn_config",
        "--max-requests",
        "3",
        "--max-requests-jitter",
        "0",
    ]
    srv = start_gunicorn(
        tmp_path,
        "gthread",
        workers=3,
        extra=extra if request.param == "recycled" else [],
        env={"STREAMER_TEST_DB": str(db)},
    )
    yield srv
    stop_gunicorn(srv)


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    wire = fetch(server.host, server.port, "/streaming/metrics/")
    assert wire.status == 200 and wire.complete
    out = {}
    for family in text_string_to_metric_families(wire.body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_json_and_clients_agree(server: Server):
    run = uuid.uuid4().hex[:6]
    a, b, c, d, r = (f"{x}-{run}" for x in ("done", "adone", "gone", "broke", "busy"))
    plan: list[tuple[str, dict[str, int]]] = []
    plan += [(f"/stream/?kind=sync&items=200&tag={a}", {}) for _ in range(6)]
    plan += [(f"/stream/?kind=async&items=100&tag={b}", {}) for _ in range(4)]
    plan += [
        (f"/stream/?kind=sync&items=100000&delay=0.001&flush=0&tag={c}", {"abort_after": 660})
        for _ in range(3)
    ]
    plan += [(f"/stream/?kind=sync&items=100&fail_after=50&flush=0&tag={d}", {}) for _ in range(2)]

    def go(item: tuple[str, dict[str, int]]) -> WireResponse:
        path, kw = item
        return fetch(server.host, server.port, path, timeout=60, abort_after=kw.get("abort_after"))

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(go, plan))

    # Six concurrent slow requests at a host-wide limit of 2: four rejected.
    def limited_request(i: int) -> WireResponse:
        time.sleep(i * 0.02)
        path = f"/limited/reject/?kind=sync&items=5&delay=0.3&flush=0&tag={r}"
        return fetch(server.host, server.port, path, timeout=60)

    with ThreadPoolExecutor(6) as pool:
        limited = list(pool.map(limited_request, range(6)))
    assert sorted(w.status for w in limited) == [200, 200, 503, 503, 503, 503]

    received = {a: 0, b: 0, d: 0}
    for (path, _), wire in zip(plan, results, strict=True):
        for name in received:
            if f"tag={name}" in path:
                received[name] += len(wire.body)
    assert received[a] == 6 * 200 * 33 and received[b] == 4 * 100 * 33
    assert received[d] == 2 * 50 * 33  # what the failing streams sent before they broke
    assert all(not w.complete for w in results[10:])

    # Aborted streams end when their workers notice; wait for every gauge to drop.
    deadline = time.monotonic() + 20
    while True:
        samples = scrape(server)
        active = sum(
            value(samples, "django_streamer_streams_active", stream=n) for n in (a, b, c, d, r)
        )
        if active == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert active == 0

    m = lambda name, **kw: value(samples, name, **kw)  # noqa: E731
    finished = "django_streamer_streams_finished_total"
    assert m("django_streamer_streams_started_total", stream=a) == 6
    assert m(finished, stream=a, outcome="completed") == 6
    assert m("django_streamer_bytes_total", stream=a) == received[a]
    assert m("django_streamer_chunk_size_max_bytes", stream=a) == 6600
    assert m("django_streamer_bytes_total", stream=b) == received[b]
    assert m(finished, stream=b, outcome="completed") == 4
    assert m(finished, stream=c, outcome="aborted") == 3
    assert m("django_streamer_bytes_total", stream=c) >= 3 * 660  # sent, not all received
    assert m(finished, stream=d, outcome="failed") == 2
    assert m("django_streamer_bytes_total", stream=d) == received[d]
    assert m("django_streamer_chunks_total", stream=d) == 100
    assert m("django_streamer_streams_rejected_total", stream="e2e-reject") == 4
    assert m("django_streamer_limiter_rejected_total", limiter="e2e-reject") == 4
    assert m("django_streamer_limiter_admitted_total", limiter="e2e-reject") == 2
    assert m("django_streamer_limiter_in_use", limiter="e2e-reject") == 0
    assert m("django_streamer_limiter_limit", limiter="e2e-reject") == 2
    assert m("django_streamer_time_to_first_byte_seconds_count", stream=a) == 6
    assert m("django_streamer_stream_duration_seconds_count", stream=c) == 3

    data = json.loads(Session(server).get("/admin/streaming/data.json"))
    for name in (a, b, c, d):
        s = data["streams"][name]
        assert s["bytes"] == m("django_streamer_bytes_total", stream=name)
        assert s["started"] == m("django_streamer_streams_started_total", stream=name)
        uncompressed = m("django_streamer_bytes_uncompressed_total", stream=name)
        assert s["bytes_uncompressed"] == uncompressed == 0  # nothing here is compressed
        assert s["compression_ratio"] is None
        outcomes = ("completed", "aborted", "failed", "lost", "drained")
        for outcome in outcomes:
            assert s[outcome] == m(finished, stream=name, outcome=outcome)
        assert s["active"] == 0
        # Every stream started ends in exactly one outcome (lost: its worker died).
        assert s["started"] == sum(s[o] for o in outcomes) + s["active"]
    pool = data["pools"]["e2e-reject"]
    assert (pool["in_use"], pool["limit"], pool["admitted"], pool["rejected"]) == (0, 2, 2, 4)
    assert pool["wait_avg"] < 0.01  # a reject-mode pool never waits
    assert data["active"] == [] or all(x["stream"] not in (a, b, c, d) for x in data["active"])
    if "--max-requests" in server.proc.args:  # type: ignore[operator]
        # 26 requests at 3 per worker: the workers really were replaced, several
        # times (how many depends on how gunicorn spread the requests).
        assert server.log().count("Booting worker") >= 3 + 3
    # One file per live worker, plus the archive, the names and the lock.
    files = [p.name for p in Path(data_dir(server)).iterdir()]
    assert len([f for f in files if f.startswith("p-")]) <= 3 + 1, files
    assert data["processes"] <= 3 + 1


def data_dir(server: Server) -> Path:
    return server.events_path.parent / f"metrics-{server.port}"


def test_django_prometheus_in_multiprocess_mode_shows_host_wide_figures(tmp_path: Path):
    multiproc = tmp_path / "prometheus-multiproc"
    multiproc.mkdir()
    server = start_gunicorn(
        tmp_path, "gthread", workers=3, env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    )
    try:
        tag = "mp-" + uuid.uuid4().hex[:6]
        with ThreadPoolExecutor(3) as pool:
            list(
                pool.map(
                    lambda _: fetch(
                        server.host, server.port, f"/stream/?kind=sync&items=30&tag={tag}"
                    ),
                    range(9),
                )
            )
        expected = f'django_streamer_bytes_total{{stream="{tag}"}} {9 * 30 * 33}.0'
        deadline = time.monotonic() + 10
        while True:
            wire = fetch(server.host, server.port, "/metrics")
            text = wire.body.decode()
            if expected in text or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert text.count(expected) == 1, (wire.status, wire.error, text[-2000:])
        assert text.count(f'django_streamer_streams_started_total{{stream="{tag}"}} 9.0') == 1
    finally:
        stop_gunicorn(server)
