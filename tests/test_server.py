"""End to end under a real gunicorn (sync, gthread and asgi workers), read off the raw socket."""

from __future__ import annotations

import uuid

import pytest

from django_streamer.testing import fetch

from .conftest import Server

pytestmark = pytest.mark.server
ROW = b"x" * 32 + b"\n"


def tag() -> str:
    return "t" + uuid.uuid4().hex[:10]


@pytest.mark.parametrize("kind", ["sync", "async", "strs", "textio", "bytesio"])
def test_chunk_boundaries_on_the_wire(server: Server, kind):
    wire = fetch(server.host, server.port, f"/stream/?kind={kind}&items=5000&chunk=4096")
    assert wire.status == 200 and wire.complete, wire.error
    assert wire.headers["transfer-encoding"] == "chunked"
    assert wire.body == ROW * 5000
    assert {len(c) for c in wire.chunks[:-1]} == {4096}
    assert len(wire.chunks) == -(-5000 * 33 // 4096)


def test_a_path_is_complete_with_its_length(server: Server):
    t = tag()
    wire = fetch(server.host, server.port, f"/stream/?kind=path&items=40000&tag={t}")
    assert wire.complete and wire.headers["content-length"] == str(40000 * 33)
    assert wire.body == ROW * 40000
    ev = server.wait_for_event("finish", t)
    assert ev[3:] == ["completed", str(40000 * 33)]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_slow_producer_reaches_the_client_record_by_record(server: Server, kind):
    wire = fetch(
        server.host,
        server.port,
        f"/stream/?kind={kind}&items=4&delay=0.4&flush=0.05&chunk=65536",
    )
    assert wire.complete
    # Each record is its own chunk, arriving as it is produced, not at the end.
    assert wire.chunks == [ROW] * 4
    gaps = [b - a for a, b in zip(wire.arrivals, wire.arrivals[1:], strict=False)]
    assert all(gap > 0.25 for gap in gaps), wire.arrivals
    assert wire.arrivals[0] < 1.0


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_first_byte_arrives_long_before_the_body_is_produced(server: Server, kind):
    # A sync source under the asgi worker and an async one under sync and
    # gthread workers: plain Django would buffer the whole body here.
    wire = fetch(server.host, server.port, f"/stream/?kind={kind}&items=10&delay=0.2&flush=0.05")
    assert wire.complete and wire.body == ROW * 10
    assert wire.first_byte is not None and wire.first_byte < 0.9
    assert wire.arrivals[-1] > 1.8


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_client_that_goes_away_closes_the_source(server: Server, kind):
    t = tag()
    wire = fetch(
        server.host,
        server.port,
        f"/stream/?kind={kind}&items=1000000&delay=0.001&chunk=64&flush=0&tag={t}",
        abort_after=640,
    )
    assert not wire.complete
    server.wait_for_event("closed", t, timeout=15)
    ev = server.wait_for_event("finish", t, timeout=15)
    assert ev[3] == "aborted"
    assert 640 <= int(ev[4]) < 1000000 * 33


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_failing_source_looks_incomplete_to_the_client(server: Server, kind):
    t = tag()
    wire = fetch(
        server.host,
        server.port,
        f"/stream/?kind={kind}&items=100&fail_after=50&flush=0&tag={t}",
    )
    assert wire.status == 200
    assert not wire.complete
    assert wire.error == "connection closed before the final chunk"
    assert wire.body == ROW * 50
    ev = server.wait_for_event("finish", t)
    assert ev[3:] == ["failed", str(50 * 33)]
    assert f"Stream '{t}' failed after 1650 bytes" in server.log()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_body_that_fits_one_chunk_gets_a_content_length(server: Server, kind):
    # The first chunk is made before the headers (under ASGI too, as it comes
    # within flush_interval): one write, no chunked framing.
    wire = fetch(server.host, server.port, f"/stream/?kind={kind}&items=10")
    assert wire.complete and wire.body == ROW * 10
    assert wire.headers["content-length"] == "330"
    assert "transfer-encoding" not in wire.headers


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_source_failing_before_its_first_chunk_is_djangos_500(server: Server, kind):
    t = tag()
    wire = fetch(server.host, server.port, f"/stream/?kind={kind}&items=10&fail_after=0&tag={t}")
    assert wire.status == 500 and wire.complete
    assert b"Server Error (500)" in wire.body  # Django's page, not gunicorn's
    assert server.wait_for_event("finish", t)[3] == "failed"
    log = server.log()
    assert f"Stream '{t}' failed before any byte was sent" in log
    assert "left incomplete" not in log
