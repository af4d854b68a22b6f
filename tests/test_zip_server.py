"""stream_zip on real servers: async members and the ORM, files that change under a sized ZIP."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from django_streamer.core.zipsources import OWN_THREAD
from django_streamer.testing import fetch
from tests.conftest import (
    ROOT,
    Server,
    make_database,
    start_gunicorn,
    start_uvicorn,
    stop_gunicorn,
)
from tests.test_writer_server import postgres_or_skip

pytestmark = pytest.mark.server


def start(kind: str, tmp_path: Path, **env: str) -> Server:
    env = {"STREAMER_TEST_URLCONF": "tests.zip_views", **env}
    if kind == "uvicorn":
        return start_uvicorn(tmp_path, env=env)
    return start_gunicorn(tmp_path, kind, env=env)


@pytest.mark.parametrize("kind", ["gthread", "asgi", "uvicorn"])
def test_async_members_await_the_orm_on_every_server(tmp_path, kind):
    # SQLite file database (make_database: migrated, one user). Two requests at
    # once, each member's thread-sensitive call waits for the other's: under
    # ASGI they deadlocked on the request's own thread, under WSGI they queued
    # for asgiref's one process-wide thread.
    srv = start(kind, tmp_path, STREAMER_TEST_DB=str(make_database(tmp_path)))
    try:
        if not OWN_THREAD and kind != "gthread":  # asgiref 3.12 (Python 3.10)
            wire = fetch("127.0.0.1", srv.port, "/orm", timeout=30)
            assert wire.status == 409 and b"'count.txt' is async" in wire.body, wire.body
            return
        meet = "1" if OWN_THREAD else "0"
        with ThreadPoolExecutor(2) as pool:
            wires = list(
                pool.map(
                    lambda _: fetch("127.0.0.1", srv.port, f"/orm?meet={meet}", timeout=60),
                    range(2),
                )
            )
        for wire in wires:
            assert (wire.status, wire.complete, wire.error) == (200, True, None), wire
            assert zipfile.ZipFile(io.BytesIO(wire.body)).read("count.txt") == b"users 1\n"
        if OWN_THREAD:  # each member's thread closed its connection as the member ended
            assert fetch("127.0.0.1", srv.port, "/closed").body == b"2 of 2"
        srv.proc.send_signal(signal.SIGTERM)  # uvicorn could not even stop
        assert srv.proc.wait(timeout=15) is not None
    finally:
        stop_gunicorn(srv)


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A migrated PostgreSQL database of this test's own with one user, dropped afterwards."""
    import psycopg

    postgres_or_skip()
    name = f"streamer_h_zip_{os.getpid()}"
    admin = "host=127.0.0.1 user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    try:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.zip_pg_settings",
            "STREAMER_TEST_PG_NAME": name,
            "PYTHONPATH": str(ROOT),
        }
        code = (
            "import django; django.setup();"
            "from django.core.management import call_command; call_command('migrate', verbosity=0);"
            "from django.contrib.auth.models import User; User.objects.create_user('u')"
        )
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
        yield name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.parametrize("kind", ["gthread", "asgi", "uvicorn"])
def test_async_members_on_postgresql_close_their_connections(tmp_path, kind, postgres_database):
    import psycopg

    if not OWN_THREAD:
        pytest.skip("asgiref < 3.13: refused under ASGI, asgiref's one thread under WSGI")
    env = {"DJANGO_SETTINGS_MODULE": "tests.zip_pg_settings"}
    srv = start(kind, tmp_path, STREAMER_TEST_PG_NAME=postgres_database, **env)
    try:
        with ThreadPoolExecutor(2) as pool:
            wires = list(
                pool.map(lambda _: fetch("127.0.0.1", srv.port, "/orm?meet=1", timeout=60), [0, 1])
            )
        for wire in wires:
            assert (wire.status, wire.complete) == (200, True), wire
            assert zipfile.ZipFile(io.BytesIO(wire.body)).read("count.txt") == b"users 1\n"
        # Each member's thread closed its connection: no backend is left on the database.
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres") as watcher:
            deadline = time.monotonic() + 10
            while (left := watcher.execute(query, [postgres_database]).fetchone()) != (0,):
                assert time.monotonic() < deadline, f"{left} connections left open"
                time.sleep(0.1)
    finally:
        stop_gunicorn(srv)


@pytest.mark.parametrize("kind", ["gthread", "asgi", "uvicorn"])
@pytest.mark.parametrize("how", ["grow", "shrink"])
def test_a_file_that_changes_under_a_sized_zip_cuts_the_body(tmp_path, kind, how):
    member = tmp_path / "member.bin"
    member.write_bytes(b"m" * 300_000)
    srv = start(kind, tmp_path)
    try:
        out, head = tmp_path / "out.zip", tmp_path / "head.txt"
        url = f"http://127.0.0.1:{srv.port}/changed?how={how}&path={member}"
        curl = subprocess.run(
            ["curl", "-sS", "-o", str(out), "-D", str(head), url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        headers = head.read_text()
        assert "200 OK" in headers.splitlines()[0]
        found = re.search(r"(?im)^content-length: *(\d+)", headers)
        assert found, headers
        length = int(found.group(1))
        # curl 18: "transfer closed with outstanding read data remaining".
        assert curl.returncode != 0, (curl.returncode, out.stat().st_size, length)
        assert out.stat().st_size < length
        assert "member 'changed.bin'" in srv.log()
    finally:
        stop_gunicorn(srv)
