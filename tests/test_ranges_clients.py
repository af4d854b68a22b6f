"""Ranges with clients written elsewhere: curl -r, curl -C - and wget -c, resuming a cut download.

Each runs against gunicorn's gthread and asgi workers and uvicorn.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from .conftest import Server, start_gunicorn, start_uvicorn, stop_gunicorn
from .decoders import byteranges

pytestmark = pytest.mark.server

MIB = 1024 * 1024
SIZE = 24 * MIB + 777


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    data = os.urandom(SIZE)
    path = tmp_path_factory.mktemp("clients") / "big.bin"
    path.write_bytes(data)
    return path, data


@pytest.fixture(scope="module", params=["gthread", "asgi", "uvicorn"])
def srv(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(f"server-{request.param}")
    server = (
        start_uvicorn(tmp) if request.param == "uvicorn" else start_gunicorn(tmp, request.param)
    )
    yield server
    stop_gunicorn(server)


def url(srv: Server, file: Path, name: str = "ranges.file") -> str:
    return f"http://{srv.host}:{srv.port}/r/file/?p={quote(str(file))}&name={name}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_curl_single_and_multiple_ranges(
    srv: Server, data_file: tuple[Path, bytes], tmp_path: Path
) -> None:
    file, data = data_file
    one = subprocess.run(
        ["curl", "-sS", "--fail", "-r", "1000-1999", url(srv, file)],
        capture_output=True,
        check=True,
    )
    assert one.stdout == data[1000:2000]
    headers = tmp_path / "headers.txt"
    many = subprocess.run(
        ["curl", "-sS", "--fail", "-D", str(headers), "-r", "0-99,5000-5099,-10", url(srv, file)],
        capture_output=True,
        check=True,
    )
    status, *lines = headers.read_text().splitlines()
    assert " 206" in status
    fields = dict(line.split(": ", 1) for line in lines if ": " in line)
    content_type = {k.lower(): v for k, v in fields.items()}["content-type"]
    spans = [(0, 100), (5000, 5100), (SIZE - 10, SIZE)]
    assert byteranges(content_type, many.stdout) == [
        ("application/octet-stream", f"bytes {a}-{b - 1}/{SIZE}", data[a:b]) for a, b in spans
    ]


def cut_half_way(command: list[str], out: Path) -> None:
    """Run a rate-limited download and kill it once a quarter to three quarters has arrived."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.stat().st_size >= SIZE // 4):
            assert proc.poll() is None, "the download ended before it was cut"
            assert time.monotonic() < deadline, "the download did not start"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert SIZE // 4 <= out.stat().st_size < SIZE, out.stat().st_size


@pytest.mark.parametrize("client", ["curl", "wget"])
def test_a_cut_download_resumes(
    srv: Server, data_file: tuple[Path, bytes], tmp_path: Path, client: str
) -> None:
    file, data = data_file
    out = tmp_path / "download.bin"
    first_name, resume_name = (f"{client}-{srv.worker}-{step}" for step in ("cut", "resume"))
    # 4 MB/s: the 24 MiB file takes ~6 s, so it is cut well before the end.
    if client == "curl":
        first = ["curl", "-sS", "--limit-rate", "4M", "-o", str(out), url(srv, file, first_name)]
        resume = ["curl", "-sS", "--fail", "-C", "-", "-o", str(out), url(srv, file, resume_name)]
    else:
        first = ["wget", "-q", "--limit-rate=4m", "-O", str(out), url(srv, file, first_name)]
        resume = ["wget", "-q", "-c", "-O", str(out), url(srv, file, resume_name)]
    cut_half_way(first, out)
    had = out.stat().st_size
    done = subprocess.run(resume, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sha256(out.read_bytes()) == sha256(data), f"cut at {had} bytes"
    # The server sent only the rest (a client could also fetch it all again).
    event = srv.wait_for_event("finish", resume_name)
    assert event[3:] == ["completed", str(SIZE - had)], (event, had)
