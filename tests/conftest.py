from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.test import RequestFactory

from django_streamer.context import current_request

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    port: int
    worker: str
    events_path: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    limiter_dir: Path
    host: str = "127.0.0.1"

    def events(self) -> list[list[str]]:
        if not self.events_path.exists():
            return []
        return [line.split() for line in self.events_path.read_text().splitlines()]

    def wait_for_event(self, *words: str, timeout: float = 10.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in self.events():
                if ev[1 : 1 + len(words)] == list(words):
                    return ev
            time.sleep(0.02)
        raise AssertionError(f"no event {words} in {self.events()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(p) for p in out.split()]


def start_gunicorn(
    tmp_path: Path,
    worker: str,
    *,
    workers: int = 1,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    app: str | None = None,
    unset: tuple[str, ...] = (),
) -> Server:
    port = free_port()
    log = tmp_path / f"gunicorn-{port}.log"
    if app is None:
        app = "tests.asgi:application" if worker == "asgi" else "tests.wsgi:application"
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "--worker-class",
        worker,
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--timeout",
        "60",
        "--graceful-timeout",
        "2",
        *(["--threads", "4"] if worker == "gthread" else []),
        *(extra or []),
        app,
    ]
    proc, limiter_dir, events = _launch(cmd, tmp_path, port, log, env, unset)
    server = Server(
        port=port,
        worker=worker,
        events_path=events,
        proc=proc,
        log_path=log,
        limiter_dir=limiter_dir,
    )
    deadline = time.monotonic() + 20
    while len(server.worker_pids()) < workers:  # the arbiter listens before they boot
        if time.monotonic() > deadline:
            stop_gunicorn(server)
            raise RuntimeError(f"gunicorn did not boot {workers} workers:\n{log.read_text()}")
        time.sleep(0.05)
    return server


def _launch(
    cmd: list[str],
    tmp_path: Path,
    port: int,
    log: Path,
    env: dict[str, str] | None,
    unset: tuple[str, ...] = (),
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Start a server with this test's own state directories; return once it listens.

    ``unset`` names variables the server must not get (``DJANGO_SETTINGS_MODULE``
    for a project that sets it in ``wsgi.py`` only, as ``startproject`` does).
    """
    limiter_dir = tmp_path / f"pools-{port}"
    events = tmp_path / f"events-{port}.log"
    full_env = {
        **os.environ,
        "STREAMER_TEST_LIMITER_DIR": str(limiter_dir),
        "STREAMER_TEST_METRICS_DIR": str(tmp_path / f"metrics-{port}"),
        "STREAMER_TEST_EVENTS": str(events),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    for key in unset:
        full_env.pop(key, None)
    name = Path(cmd[2]).name  # gunicorn or uvicorn
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log_file, stderr=log_file)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, limiter_dir, events
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{name} did not listen:\n{log.read_text()}")


def stop_gunicorn(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture(params=["sync", "gthread", "asgi"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    srv = start_gunicorn(tmp_path, request.param)
    yield srv
    stop_gunicorn(srv)


def start_uvicorn(
    tmp_path: Path,
    *,
    env: dict[str, str] | None = None,
    app: str = "tests.asgi:application",
    extra: list[str] | None = None,
) -> Server:
    """uvicorn serving ``app`` in one process (no workers), as ``Server(worker="uvicorn")``."""
    port = free_port()
    log = tmp_path / f"uvicorn-{port}.log"
    cmd = [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--no-access-log", *(extra or []), app]
    proc, limiter_dir, events = _launch(cmd, tmp_path, port, log, env)
    return Server(port, "uvicorn", events, proc, log, limiter_dir)


@pytest.fixture(params=["sync", "gthread", "asgi", "uvicorn"])
def any_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """Every server model: gunicorn's sync, gthread and asgi workers, and uvicorn."""
    if request.param == "uvicorn":
        srv = start_uvicorn(tmp_path)
    else:
        srv = start_gunicorn(tmp_path, request.param)
    yield srv
    stop_gunicorn(srv)


# -- calling Django's real WSGI and ASGI handlers in-process ---------------


@dataclass
class AsgiResult:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    bodies: list[bytes] = field(default_factory=list)
    ended: bool = False
    error: BaseException | None = None

    @property
    def body(self) -> bytes:
        return b"".join(self.bodies)


def asgi_scope(path: str) -> dict[str, Any]:
    """The HTTP scope an ASGI server would hand Django for ``GET path``."""
    path, _, query = path.partition("?")
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }


async def call_asgi(
    path: str, *, disconnect_after: int | None = None, on_body: Any = None
) -> AsgiResult:
    """Serve ``path`` through Django's ASGIHandler, as an ASGI server would."""
    from django.core.handlers.asgi import ASGIHandler

    handler = ASGIHandler()
    scope = asgi_scope(path)
    result = AsgiResult()
    gone = asyncio.Event()
    sent_request = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: Mapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            result.status = message["status"]
            result.headers = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            if body:
                result.bodies.append(body)
                if on_body is not None:
                    on_body(body)
            if not message.get("more_body", False):
                result.ended = True
            if disconnect_after is not None and len(result.bodies) >= disconnect_after:
                gone.set()
                await asyncio.sleep(0)  # let the disconnect listener run

    try:
        await asyncio.wait_for(handler(scope, receive, send), timeout=30)
    except Exception as exc:
        result.error = exc
    return result


def wsgi_iter(path: str) -> tuple[str, dict[str, str], Any]:
    """Call Django's WSGIHandler; return status, headers and the body iterable."""
    from wsgiref.util import setup_testing_defaults

    from django.core.handlers.wsgi import WSGIHandler

    environ: dict[str, Any] = {}
    if "?" in path:
        path, environ["QUERY_STRING"] = path.split("?", 1)
    environ["PATH_INFO"] = path
    setup_testing_defaults(environ)
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured["status"] = status
        captured["headers"] = {k.lower(): v for k, v in headers}
        return lambda data: None

    body = WSGIHandler()(environ, start_response)
    return captured["status"], captured["headers"], body


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    """A private redis-server on a free port (tests/redisd.py), stopped afterwards."""
    from .redisd import running_redis  # redisd imports this module

    yield from running_redis(tmp_path)


@pytest.fixture
def closing_backends() -> Iterator[None]:
    """Close every cluster backend that ``redisd.backend()`` made during the test."""
    from .redisd import made_backends

    yield
    while made_backends:
        made_backends.pop().close()


@pytest.fixture(autouse=True)
def _keep_db_connections_across_response_close() -> Iterator[None]:
    # Tests close responses by hand; Django's test client disconnects this
    # receiver around its own requests for the same reason (pytest-django
    # blocks the database check it makes outside django_db tests). Per test,
    # since the test client connects it again after each request.
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def make_database(tmp_path: Path, username: str = "admin", password: str = "pw") -> Path:
    """A migrated SQLite file with a superuser, for gunicorn workers to share."""
    db = tmp_path / "db.sqlite3"
    code = (
        "import django; django.setup();"
        "from django.core.management import call_command; call_command('migrate', verbosity=0);"
        "from django.contrib.auth.models import User;"
        f"User.objects.create_superuser({username!r}, 'admin@example.invalid', {password!r})"
    )
    env = {
        **os.environ,
        "STREAMER_TEST_DB": str(db),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
    }
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True)
    return db


class Session:
    """A logged-in admin session over plain HTTP (urllib, cookies kept)."""

    def __init__(self, server: Server, username: str = "admin", password: str = "pw") -> None:
        import http.cookiejar
        import re
        import urllib.parse
        import urllib.request

        self.base = f"http://{server.host}:{server.port}"
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        page = self.opener.open(f"{self.base}/admin/login/").read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page[:500]
        form = urllib.parse.urlencode(
            {
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": token.group(1),
                "next": "/admin/",
            }
        ).encode()
        request = urllib.request.Request(
            f"{self.base}/admin/login/", data=form, headers={"Referer": f"{self.base}/admin/login/"}
        )
        self.opener.open(request).read()
        assert any(c.name == "sessionid" for c in self.jar), "login failed"

    def get(self, path: str) -> bytes:
        data: bytes = self.opener.open(self.base + path).read()
        return data

    def cookies(self) -> dict[str, str]:
        return {c.name: c.value or "" for c in self.jar}


@pytest.fixture(autouse=True)
def _no_current_request() -> Iterator[None]:
    """Each test starts outside any request; ServingRequestFactory's requests end with it."""
    token = current_request.set(None)
    yield
    current_request.reset(token)


class ServingRequestFactory(RequestFactory):
    """A RequestFactory whose requests become the current one, as StreamerMiddleware makes
    them for a view: ``stream_response()`` then sees its Accept-Encoding and path."""

    def generic(self, *args: Any, **kwargs: Any) -> Any:
        request = super().generic(*args, **kwargs)
        current_request.set(request)
        return request


def resolved(request: Any, view: Any) -> Any:
    """``request`` as URL resolution leaves it for ``view``: its streams are named after it."""
    from django.urls import ResolverMatch

    request.resolver_match = ResolverMatch(view, (), {})
    return request
