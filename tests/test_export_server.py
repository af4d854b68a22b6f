"""QuerySet exports on real servers with PostgreSQL: read in chunks, CSV through COPY."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest

from django_streamer.testing import fetch
from tests.conftest import ROOT, Server, start_gunicorn, start_uvicorn, stop_gunicorn
from tests.test_writer_server import postgres_or_skip

pytestmark = pytest.mark.server

ADMIN = "host=127.0.0.1 user=postgres dbname=postgres"
BULK = 300_000
JSON_NULL = "JSON null"  # stored as JSON's null; None is SQL's NULL
# Rows that a CSV writer must get right, then BULK plain ones.
ODD = [
    ("plain", Decimal("12.50"), "2026-12-07 14:23:33.5+00", "2026-12-07", True, {"a": 1}),
    (
        'quote " and, comma',
        Decimal("-0.01"),
        "2026-01-01 00:00:00+00",
        "1999-12-31",
        False,
        [1, "x"],
    ),
    ("new\nline and crlf\r\nend", Decimal("0.00"), None, None, None, "text"),
    ("ünïcødé ✓ 東京", None, "2026-06-30 23:59:59.000001+00", "2026-02-28", True, None),
    ("", Decimal("99999.99"), "2000-01-01 12:00:00+00", "2000-01-01", False, {"é": [None, True]}),
    ("\\.", Decimal("1"), "2026-12-07 14:23:33.123456+00", "2026-12-07", None, 5),
    ('"', Decimal("3.10"), "2026-12-07 14:23:33.120000+00", "2026-12-07", True, {}),
    ("json null", Decimal("7"), None, None, False, JSON_NULL),
]


@pytest.fixture(scope="module")
def orders_database() -> Iterator[str]:
    """A migrated PostgreSQL database of this module's own, with the odd rows then BULK more."""
    import psycopg
    from psycopg.types.json import Jsonb

    postgres_or_skip()
    name = f"streamer_h_export_{os.getpid()}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    try:
        env = {**os.environ, **_env(name), "PYTHONPATH": str(ROOT)}
        code = "import django; django.setup(); from django.core.management import call_command;"
        code += "call_command('migrate', verbosity=0)"
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
        with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={name}") as conn:
            for customer, total, placed, day, paid, data in ODD:
                value = None if data is None else Jsonb(None if data == JSON_NULL else data)
                conn.execute(
                    "INSERT INTO exportapp_order (customer, total, placed, day, ref, data, paid) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [customer, total, placed, day, uuid.uuid4(), value, paid],
                )
            conn.execute(
                "INSERT INTO exportapp_order (customer, total, placed, day, ref, data, paid) "
                "SELECT 'customer ' || i, (i %% 100000) / 100.0, "
                "timestamptz '2026-01-01' + i * interval '1.5 second', "
                "date '2026-01-01' + i %% 365, md5(i::text)::uuid, "
                "jsonb_build_object('n', i), i %% 2 = 0 FROM generate_series(1, %s) AS i",
                [BULK],
            )
        yield name
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _env(database: str, **extra: str) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "tests.export_pg_settings",
        "STREAMER_TEST_PG_NAME": database,
        "STREAMER_TEST_URLCONF": "tests.export_views",
        **extra,
    }


def _start(kind: str, tmp_path: Path, database: str, **extra: str) -> Server:
    if kind == "uvicorn":
        return start_uvicorn(tmp_path, env=_env(database, **extra))
    return start_gunicorn(tmp_path, kind, env=_env(database, **extra))


def _peak_rss_kib(srv: Server) -> int:
    return int(fetch("127.0.0.1", srv.port, "/rss").body)


@pytest.mark.parametrize(
    ("kind", "path"),
    [
        ("gthread", "/orders.csv?copy=0"),
        ("gthread", "/orders.jsonl"),
        ("uvicorn", "/orders-async.jsonl"),
    ],
)
def test_a_queryset_streams_in_chunks_with_flat_memory(tmp_path, orders_database, kind, path):
    # Loaded whole (the result cache) these 300,000 rows cost the worker
    # hundreds of MiB before the first byte; read in chunks, a few MiB.
    srv = _start(kind, tmp_path, orders_database)
    try:
        warm = fetch("127.0.0.1", srv.port, "/orders.csv?copy=0&limit=2000", timeout=60)
        assert (warm.status, warm.complete) == (200, True), warm
        before = _peak_rss_kib(srv)
        wire = fetch("127.0.0.1", srv.port, path, timeout=300)
        assert (wire.status, wire.complete, wire.error) == (200, True, None), wire
        assert wire.body.count(b"\n") >= BULK + len(ODD)
        growth = _peak_rss_kib(srv) - before
        assert growth < 40 * 1024, f"peak RSS grew by {growth} KiB streaming {path}"
    finally:
        stop_gunicorn(srv)


def _rows(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode(), newline="")))


def test_copy_writes_the_values_the_orm_path_writes(tmp_path, orders_database):
    srv = _start("gthread", tmp_path, orders_database)
    try:
        limit = len(ODD) + 3
        orm = fetch("127.0.0.1", srv.port, f"/orders.csv?copy=0&limit={limit}")
        copied = fetch("127.0.0.1", srv.port, f"/orders.csv?limit={limit}")
    finally:
        stop_gunicorn(srv)
    for wire in (orm, copied):
        assert (wire.status, wire.complete, wire.error) == (200, True, None), wire
    assert b"\r\n" in orm.body  # the csv module's excel dialect
    assert copied.body.count(b"\r\n") == 1  # COPY ends lines with \n: only the odd value's \r\n
    orm_rows, copied_rows = _rows(orm.body), _rows(copied.body)
    assert len(copied_rows) == limit + 1
    # The same values; only a timestamp's fraction differs in form (PostgreSQL trims it).
    placed = 3
    assert [_moment(row.pop(placed)) for row in orm_rows[1:]] == [
        _moment(row.pop(placed)) for row in copied_rows[1:]
    ]
    assert orm_rows == copied_rows
    assert copied_rows[2][1:4] == ['quote " and, comma', "-0.01", "1999-12-31"]
    assert [json.loads(row[-2]) for row in copied_rows[1:3]] == [{"a": 1}, [1, "x"]]
    assert (copied_rows[1][-1], copied_rows[2][-1], copied_rows[3][-1]) == ("True", "False", "")
    orm_placed = _rows(orm.body)[1][placed], _rows(orm.body)[2][placed]
    copied_placed = _rows(copied.body)[1][placed], _rows(copied.body)[2][placed]
    assert orm_placed == ("2026-12-07 14:23:33.500000+00:00", "2026-01-01 00:00:00+00:00")
    assert copied_placed == ("2026-12-07 14:23:33.5+00:00", "2026-01-01 00:00:00+00:00")


def test_copy_writes_a_dialect_as_the_csv_module_does(tmp_path, orders_database):
    srv = _start("gthread", tmp_path, orders_database)
    try:
        path = "/orders.csv?limit=10&fields=id,customer,total&dialect=excel-tab"
        orm = fetch("127.0.0.1", srv.port, path + "&copy=0")
        copied = fetch("127.0.0.1", srv.port, path)
    finally:
        stop_gunicorn(srv)
    tab = csv.get_dialect("excel-tab")
    orm_rows = list(csv.reader(io.StringIO(orm.body.decode(), newline=""), tab))
    assert orm_rows == list(csv.reader(io.StringIO(copied.body.decode(), newline=""), tab))
    assert orm_rows[1] == ["1", "plain", "12.50"] and b"1\tplain\t12.50\n" in copied.body


def test_copy_writes_dates_as_the_orm_path_whatever_the_date_style(tmp_path, orders_database):
    # psycopg reads timestamps in the ISO DateStyle only, dates in any.
    import psycopg

    with psycopg.connect(ADMIN, autocommit=True) as conn:  # 31.12.1999, not 1999-12-31
        conn.execute(f"ALTER DATABASE {orders_database} SET DateStyle = 'German, DMY'")
    srv = _start("gthread", tmp_path, orders_database)
    try:
        orm = fetch("127.0.0.1", srv.port, "/orders.csv?copy=0&limit=30&fields=id,day")
        copied = fetch("127.0.0.1", srv.port, "/orders.csv?limit=30&fields=id,day")
    finally:
        stop_gunicorn(srv)
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE {orders_database} RESET DateStyle")
    assert (orm.status, copied.status) == (200, 200), copied.body[-2000:]
    assert _rows(orm.body) == _rows(copied.body)
    assert _rows(copied.body)[2] == ["2", "1999-12-31"]


def _moment(text: str) -> datetime | None:
    if not text:
        return None
    with_fraction = "." in text  # strptime's %f takes 1 to 6 digits
    return datetime.strptime(text, f"%Y-%m-%d %H:%M:%S{'.%f' if with_fraction else ''}%z")


def _backends(database: str) -> list[tuple[str, str]]:
    """(state, query) of every other backend on ``database``."""
    import psycopg

    with psycopg.connect(ADMIN) as watcher:
        return watcher.execute(
            "SELECT state, query FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [database],
        ).fetchall()


def _wait_for(check, what: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return result


@pytest.mark.parametrize("conn_max_age", ["0", "600"])
def test_a_client_that_leaves_cancels_the_copy(tmp_path, orders_database, conn_max_age):
    srv = _start("gthread", tmp_path, orders_database, STREAMER_TEST_CONN_MAX_AGE=conn_max_age)
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            sock.sendall(b"GET /orders.csv HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            received = 0
            while received < 64 * 1024:
                received += len(sock.recv(65536))

            # The COPY is under way, held up by the client that stopped reading.
            running = [s for s, q in _backends(orders_database) if q.startswith("COPY")]
            assert running == ["active"], _backends(orders_database)
        # Gone: no backend left running the COPY or idle in a transaction.
        _wait_for(
            lambda: all(
                state not in ("active", "idle in transaction")
                for state, _ in _backends(orders_database)
            ),
            f"a backend is still busy: {_backends(orders_database)}",
        )
        if conn_max_age == "0":
            _wait_for(lambda: not _backends(orders_database), "the connection was not closed")
        # The worker's connection (kept when persistent) still works.
        wire = fetch("127.0.0.1", srv.port, "/orders.csv?limit=3")
        assert (wire.status, wire.complete, len(_rows(wire.body))) == (200, True, 4), wire
    finally:
        stop_gunicorn(srv)


@pytest.mark.parametrize("copy", ["1", "0"])
def test_a_query_that_fails_midway_cuts_the_body(tmp_path, orders_database, copy):
    srv = _start("gthread", tmp_path, orders_database)
    try:
        wire = fetch("127.0.0.1", srv.port, f"/orders.csv?copy={copy}&fail_at=50000", timeout=60)
        if copy == "1":  # COPY sends rows as the query makes them: a cut body
            assert (wire.status, wire.complete) == (200, False), wire.error
            assert len(wire.body) > 100_000 and b"\n50000," not in wire.body
        else:
            # Django's server-side cursor is WITH HOLD in autocommit: PostgreSQL runs
            # the whole query when it is declared, before the first row.
            assert wire.status == 500, wire
        # The connection is released: nothing left running or idle in a transaction.
        _wait_for(
            lambda: all(
                state not in ("active", "idle in transaction")
                for state, _ in _backends(orders_database)
            ),
            f"a backend is still busy: {_backends(orders_database)}",
        )
    finally:
        stop_gunicorn(srv)


def test_the_copy_stream_is_compressed_like_any_other(tmp_path, orders_database):
    srv = _start("gthread", tmp_path, orders_database, STREAMER_TEST_COMPRESSION="1")
    try:
        plain = fetch("127.0.0.1", srv.port, "/orders.csv?limit=5000")
        packed = fetch(
            "127.0.0.1", srv.port, "/orders.csv?limit=5000", headers={"Accept-Encoding": "gzip"}
        )
    finally:
        stop_gunicorn(srv)
    assert (plain.status, plain.complete, packed.status, packed.complete) == (200, True, 200, True)
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip"
    assert gzip.decompress(packed.body) == plain.body
    assert len(_rows(plain.body)) == 5001 and b"\r\n" not in plain.body[:200]  # COPY's lines


def test_the_limiter_and_the_metrics_see_the_copy_stream(tmp_path, orders_database):
    srv = _start("gthread", tmp_path, orders_database)
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            sock.sendall(b"GET /limited.csv HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            received = 0
            while received < 64 * 1024:
                received += len(sock.recv(65536))
            # The COPY holds the only slot while its client does not read.
            assert fetch("127.0.0.1", srv.port, "/limited.csv").status == 503  # a global pool
        # Left mid-export: the slot is released, the stream counted as aborted.
        wire = _wait_for(
            lambda: (w := fetch("127.0.0.1", srv.port, "/limited.csv")).status == 200 and w,
            "the slot was not released",
        )
        assert wire.complete and len(_rows(wire.body)) == BULK + len(ODD)
        metrics = fetch("127.0.0.1", srv.port, "/streaming/metrics/").body.decode()
    finally:
        stop_gunicorn(srv)
    name = 'stream="tests.export_views.orders_limited"'
    finished = [line for line in metrics.splitlines() if "streams_finished_total{" in line]
    for outcome in ("aborted", "completed"):
        assert any(name in line and f'"{outcome}"' in line for line in finished), finished
    sent = [
        line
        for line in metrics.splitlines()
        if line.startswith(f"django_streamer_bytes_total{{{name}")
    ]
    assert sent and float(sent[0].split()[-1]) >= len(wire.body), sent
