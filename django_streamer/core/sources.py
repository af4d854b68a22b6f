"""What a stream's source is: an iterable, an async iterable, a file or a path."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import GeneratorType
from typing import Any

from .chunking import StreamSourceError


@dataclass
class Source:
    """A classified source. ``items`` is what the re-chunker reads."""

    items: Any
    is_async: bool = False  # an async iterable that is not also a sync one
    file: Any = None  # the file-like read, if any (closed by the stream)
    binary_file: bool = False
    length: int | None = None  # known in advance: a path or a seekable binary file
    start: int = 0  # where a binary file was when given (its length counts from there)


def classify(source: object, *, name: str, chunk_size: int) -> Source:
    if type(source) is GeneratorType:  # the common case, without the checks below
        return Source(source)
    if isinstance(source, (str, bytes, bytearray, memoryview)):
        raise StreamSourceError(
            f"stream {name!r}: the source is a single {type(source).__name__}; "
            "pass an iterable of pieces (e.g. [data]) or a file, or use HttpResponse"
        )
    if isinstance(source, os.PathLike):
        file = open(Path(os.fspath(source)), "rb")  # noqa: SIM115 - the stream closes it
        length = os.fstat(file.fileno()).st_size
        return Source(_read_file(file, chunk_size), file=file, binary_file=True, length=length)
    if hasattr(source, "read"):
        return _classify_file(source, name=name, chunk_size=chunk_size)
    if hasattr(source, "__iter__"):
        return Source(source)
    if hasattr(source, "__aiter__"):
        return Source(source, is_async=True)
    raise StreamSourceError(
        f"stream {name!r}: the source must be an iterable, an async iterable, "
        f"a file-like object or a path, not {type(source).__name__}"
    )


def _classify_file(file: Any, *, name: str, chunk_size: int) -> Source:
    probe = file.read(0)
    if isinstance(probe, str):
        return Source(_read_file(file, chunk_size), file=file)
    if isinstance(probe, (bytes, bytearray)):
        length = _remaining_length(file)
        start = file.tell() if length is not None else 0
        return Source(
            _read_file(file, chunk_size), file=file, binary_file=True, length=length, start=start
        )
    raise StreamSourceError(
        f"stream {name!r}: read() of the file-like source returned "
        f"{type(probe).__name__}, expected bytes or str"
    )


def _read_file(file: Any, size: int) -> Iterator[Any]:
    try:
        while True:
            data = file.read(size)
            if not data:
                return
            yield data
    finally:
        file.close()


def read_window(file: Any, *, size: int, count: int) -> Iterator[bytes]:
    """``count`` bytes of ``file`` from where it is, in pieces of ``size``; then close it.

    A file that ends sooner fails the stream (the client sees it cut).
    """
    try:
        while count:
            data: bytes = file.read(min(size, count))
            if not data:
                name = getattr(file, "name", "the file")
                raise OSError(f"{name} ended {count} bytes short of the range")
            count -= len(data)
            yield data
    finally:
        file.close()


def _remaining_length(file: Any) -> int | None:
    try:
        fileno = file.fileno()
        remaining: int = os.fstat(fileno).st_size - file.tell()
        return remaining
    except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
        return None
