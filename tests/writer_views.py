"""Views for the writer and format tests (in-process and under real servers)."""

from __future__ import annotations

import asyncio
import csv
import os
import threading
import time
from pathlib import Path
from typing import Any

from django.db import connection, connections
from django.http import HttpResponse, JsonResponse

from django_streamer import (
    stream_csv,
    stream_json_array,
    stream_jsonl,
    stream_writer,
    stream_zip,
)

# Test-visible record of what producers saw (per process).
seen: dict[str, Any] = {}


def _n(request, key, default):
    return int(request.GET.get(key, default))


def fast(request):
    """Writes ``n`` bytes (``piece`` at a time) as fast as it can."""
    total, piece = _n(request, "n", 1 << 20), _n(request, "piece", 4096)
    block = b"x" * piece

    def produce(out):
        written = 0
        try:
            while written < total:
                out.write(block)
                written += piece
        finally:
            seen["written"] = written

    return stream_writer(produce, content_type="application/octet-stream")


def endless(request):
    """Never ends by itself: only a disconnect stops it."""

    def produce(out):
        block = b"y" * 8192
        while True:
            out.write(block)

    return stream_writer(produce, content_type="application/octet-stream")


def fail(request):
    after = _n(request, "after", 0)

    def produce(out):
        for i in range(after):
            out.write(b"%d\n" % i)
        if after:
            out.flush()
            time.sleep(0.3)  # let the server send what was flushed
        raise RuntimeError("producer broke")

    return stream_writer(produce, content_type="text/plain")


def text_csv(request):
    rows = _n(request, "rows", 1000)

    def produce(out):
        writer = csv.writer(out)
        for i in range(rows):
            writer.writerow([i, f"name {i}", "a,b"])

    return stream_writer(produce, text=True, content_type="text/csv")


async def async_fast(request):
    total = _n(request, "n", 1 << 20)

    async def produce(out):
        block = b"a" * 4096
        written = 0
        while written < total:
            await out.write(block)
            written += len(block)
        await out.drain()

    return stream_writer(produce, content_type="application/octet-stream")


async def async_fail(request):
    async def produce(out):
        await out.write(b"partial\n")
        await out.drain()
        await asyncio.sleep(0.3)
        raise RuntimeError("async producer broke")

    return stream_writer(produce, content_type="text/plain")


def db(request):
    def produce(out):
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            out.write(b"%d\n" % cursor.fetchone()[0])
        seen["db_connection"] = connections["default"]  # this thread's own
        vendor_pid = "SELECT pg_backend_pid()" if connection.vendor == "postgresql" else None
        if vendor_pid:
            with connection.cursor() as cursor:
                cursor.execute(vendor_pid)
                out.write(b"pid %d\n" % cursor.fetchone()[0])

    return stream_writer(produce, content_type="text/plain")


def _db_closed():
    used = seen.get("db_connection")
    return None if used is None else used.connection is None


def state(request):
    """The worker's thread count and RSS, for the server tests."""
    with open("/proc/self/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    names = [t.name for t in threading.enumerate()]
    return JsonResponse(
        {
            # Not counting the servers' and asgiref's executor threads, which
            # come and go with the load.
            "threads": sum(not n.startswith(("ThreadPoolExecutor", "asyncio_")) for n in names),
            "writers": sum(n.startswith("streamer-writer") for n in names),
            "rss_kib": rss,
            "pid": os.getpid(),
            "db_closed": _db_closed(),
        }
    )


def rows_csv(request):
    rows = (
        (i, f"name {i}", i * 0.5, 'quote " and, comma') for i in range(_n(request, "rows", 1000))
    )
    return stream_csv(rows, header=["id", "name", "half", "text"], filename="rows.csv")


def _objects(n, fail_at):
    for i in range(n):
        if i == fail_at:
            raise RuntimeError("objects broke")
        yield {"id": i, "name": f"item {i}", "tags": ["a", "b"]}


def jsonl(request):
    return stream_jsonl(_objects(_n(request, "n", 1000), _n(request, "fail", -1)))


def json_array(request):
    return stream_json_array(_objects(_n(request, "n", 1000), _n(request, "fail", -1)))


def slow_rows(request):
    """``n`` rows made ``gap`` s apart in ``format``, each with the time it was made."""
    n, gap = _n(request, "n", 6), float(request.GET.get("gap", 0.5))
    sync = request.GET.get("source", "sync") == "sync"

    def row(i):
        made = time.time()
        return {"seq": i, "made": made} if request.GET["format"] != "csv" else (i, made)

    def rows():
        for i in range(n):
            yield row(i)
            time.sleep(gap)

    async def arows():
        for i in range(n):
            yield row(i)
            await asyncio.sleep(gap)

    source = rows() if sync else arows()
    if request.GET["format"] == "csv":
        return stream_csv(source, header=["seq", "made"])
    if request.GET["format"] == "jsonl":
        return stream_jsonl(source)
    return stream_json_array(source)


def zip_files(request):
    size = _n(request, "size", 100_000)
    stored = request.GET.get("stored") == "1"
    options = {"compress": False} if stored else {}
    block = os.urandom(1024)

    def pieces():
        left = size
        while left > 0:
            yield block[: min(left, 1024)]
            left -= 1024

    members = [
        ("readme.txt", b"hello\n" * 100, options),
        ("data/random.bin", pieces(), {**options, "size": size}),
        ("data/this.py", Path(__file__), options),
    ]
    if request.GET.get("async") == "1":

        async def produce(out):
            for _ in range(1000):
                await out.write(b"from an async producer\n")

        members.append(("async.txt", produce, {}))
    return stream_zip(members, filename="files.zip")


def bad_zip(request):
    try:
        stream_zip([(request.GET["name"], b"x")])
    except ValueError as exc:
        return HttpResponse(str(exc), status=400)
    return HttpResponse("accepted")
