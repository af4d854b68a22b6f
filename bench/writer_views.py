"""Contenders for the writer and format rows: CSV, the writer thread, ZIP."""

from __future__ import annotations

import csv
import io
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase, StreamingHttpResponse

from django_streamer import stream_csv, stream_writer, stream_zip

ROWS = int(os.environ.get("BENCH_CSV_ROWS", 200_000))
ZIP_MIB = int(os.environ.get("BENCH_ZIP_MIB", 64))


def rows(n: int = ROWS) -> Iterator[tuple[Any, ...]]:
    return ((i, f"name {i}", i * 1.5, "plain" if i % 7 else "a,b") for i in range(n))


class Echo:
    """The Django docs' pseudo-buffer: write() returns what it was given."""

    def write(self, value: str) -> str:
        return value


def echo_csv() -> HttpResponseBase:
    writer = csv.writer(Echo())
    return StreamingHttpResponse((writer.writerow(row) for row in rows()), content_type="text/csv")


def writer_csv() -> HttpResponseBase:
    def produce(out: Any) -> None:
        csv.writer(out).writerows(rows())

    return stream_writer(produce, text=True, name="bench-writer", content_type="text/csv")


def zip_members() -> list[tuple[str, Path, dict[str, bool]]]:
    path = Path(tempfile.gettempdir()) / f"django-streamer-bench-zip-{ZIP_MIB}MiB.bin"
    if not path.exists() or path.stat().st_size != ZIP_MIB << 20:
        tmp = path.with_suffix(f".{os.getpid()}")
        block = os.urandom(1 << 20)
        with open(tmp, "wb") as f:
            for _ in range(ZIP_MIB):
                f.write(block)
        os.replace(tmp, path)
    return [("data.bin", path, {"compress": False})]


def zip_in_memory() -> HttpResponseBase:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, path, _ in zip_members():
            archive.write(path, name)
    return HttpResponse(buffer.getvalue(), content_type="application/zip")


def dispatch(request: HttpRequest, scenario: str, impl: str) -> HttpResponseBase:
    if scenario == "csv":
        if impl == "echo":
            return echo_csv()
        if impl == "writer":
            return writer_csv()
        return stream_csv(rows(), name="bench-csv")
    if scenario == "zip":
        if impl == "zipfile":
            return zip_in_memory()
        return stream_zip(zip_members(), name="bench-zip")
    raise ValueError(scenario)
