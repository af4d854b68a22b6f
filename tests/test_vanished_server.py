"""A client that goes away while a sync source makes its first chunk, under ASGI servers.

Django's ASGI handler cancels the request's task when the client goes away;
a sync source is then inside ``next()`` in a worker thread, on behalf of a
task that nobody will await, send or close. The stream must still end:
source closed, outcome recorded, limiter slot freed.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from django_streamer.testing import fetch

from .conftest import Server, start_gunicorn, stop_gunicorn
from .test_sse_server import start_uvicorn

pytestmark = pytest.mark.server


@pytest.fixture(params=["uvicorn", "asgi"])
def asgi_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    if request.param == "uvicorn":
        srv = start_uvicorn(tmp_path)
    else:
        srv = start_gunicorn(tmp_path, "asgi")
    yield srv
    stop_gunicorn(srv)


def test_a_client_gone_while_the_first_chunk_is_made_frees_the_stream(asgi_server: Server):
    srv = asgi_server
    for _ in range(3):  # a leaked slot would refuse the next request (limit 1)
        t = "v" + uuid.uuid4().hex[:10]
        # The first item takes 0.5 s: the client is gone before it is made.
        path = f"/limited/kill/?kind=sync&items=3&delay=0.5&flush=0&tag={t}"
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        srv.wait_for_event("serving", t)
        sock.close()
        assert srv.wait_for_event("finish", t, timeout=3)[3] == "aborted"
        srv.wait_for_event("closed", t, timeout=3)  # the source's finally ran
    wire = fetch(srv.host, srv.port, "/limited/kill/?kind=sync&items=1")
    assert wire.status == 200 and wire.complete
    assert "Traceback" not in srv.log(), srv.log()


def test_a_client_gone_while_the_view_runs_frees_the_stream(asgi_server: Server):
    # The handler drops the response the view returns into a cancelled task;
    # it ends (aborted) when collected, and its slot is freed.
    srv = asgi_server
    for _ in range(3):
        t = "w" + uuid.uuid4().hex[:10]
        sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        sock.sendall(f"GET /sse/slow-view/?tag={t} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        srv.wait_for_event("serving", t)
        sock.close()
        assert srv.wait_for_event("finish", t, timeout=3)[3] == "aborted"
    wire = fetch(srv.host, srv.port, "/sse/slow-view/?view_delay=0")
    assert wire.status == 200 and wire.complete
    assert "Traceback" not in srv.log(), srv.log()
