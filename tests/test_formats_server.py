"""The formats keep flush_interval on the wire: each row is sent soon after it is made.

Rows are made 0.5 s apart by a sync or async source, under gunicorn's gthread
and asgi workers, and read off the raw socket with their arrival times.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_streamer.testing import WireResponse, fetch
from tests.conftest import Server, start_gunicorn, stop_gunicorn

pytestmark = pytest.mark.server

ROWS, GAP = 6, 0.5
# Under the sync chunker's probing rules a row may wait for the next one, or
# the one after that after a burst (the header and the first row): two gaps.
# Then a margin for a loaded machine. Before rows were sent as they came,
# the first rows waited for the end: 2.5 s and 2.0 s.
BOUND = 2 * GAP + 0.8

ROW = {
    "csv": re.compile(rb"^(\d+),([\d.]+)\r$", re.MULTILINE),
    "jsonl": re.compile(rb'\{"seq":(\d+),"made":([\d.]+)\}'),
    "array": re.compile(rb'\{"seq":(\d+),"made":([\d.]+)\}'),
}


@pytest.fixture(scope="module", params=["gthread", "asgi"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp_path: Path = tmp_path_factory.mktemp(request.param)
    srv = start_gunicorn(
        tmp_path, request.param, env={"DJANGO_SETTINGS_MODULE": "tests.writer_settings"}
    )
    yield srv
    stop_gunicorn(srv)


def delays(wire: WireResponse, pattern: re.Pattern[bytes]) -> dict[int, float]:
    """Seconds from each row's making (the server's clock) to its arrival."""
    wall = time.time() - time.monotonic()  # the same machine: one clock offset
    seen: dict[int, float] = {}
    body = b""
    for chunk, arrival in zip(wire.chunks, wire.arrivals, strict=True):
        body += chunk
        for seq, made in pattern.findall(body):
            seen.setdefault(int(seq), wire.started_at + arrival + wall - float(made))
    return seen


def parsed(fmt: str, body: bytes) -> list[int]:
    if fmt == "csv":
        return [int(row[0]) for row in list(csv.reader(io.StringIO(body.decode())))[1:]]
    if fmt == "jsonl":
        return [json.loads(line)["seq"] for line in body.splitlines()]
    return [item["seq"] for item in json.loads(body)]


@pytest.mark.parametrize("source", ["sync", "async"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl", "array"])
def test_each_row_arrives_soon_after_it_is_made(server, fmt, source):
    path = f"/slow-rows?format={fmt}&source={source}&n={ROWS}&gap={GAP}"
    wire = fetch(server.host, server.port, path)
    assert wire.status == 200 and wire.complete, (wire.status, wire.error)
    assert parsed(fmt, wire.body) == list(range(ROWS))
    late = delays(wire, ROW[fmt])
    assert sorted(late) == list(range(ROWS))
    assert max(late.values()) < BOUND, late
