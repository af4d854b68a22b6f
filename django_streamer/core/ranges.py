"""Byte ranges and conditional requests for a file (RFC 9110 sections 13 and 14). No Django.

:func:`evaluate` turns a request's method and headers, and the file's size and
validators, into one :class:`Decision`: the status to answer with and the
byte ranges to send. :func:`file_validators` makes the ``ETag`` and
``Last-Modified`` of a file; :func:`multipart` frames several ranges as
``multipart/byteranges``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.utils import formatdate, mktime_tz, parsedate_tz
from typing import Any

__all__ = [
    "MAX_RANGES",
    "Decision",
    "Parts",
    "evaluate",
    "file_validators",
    "multipart",
    "parse_range",
    "read_parts",
]

# More range-specs than this in one header and the header is ignored (the whole
# file, 200), as RFC 9110 section 14.2 allows: a few are what players and
# download managers send; hundreds are an attempt to make the server seek.
MAX_RANGES = 100

_SPEC = re.compile(r"(\d+)-(\d*)|-(\d+)")
_ETAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')

Span = tuple[int, int]  # [start, stop): half-open, in bytes from the file's start


@dataclass(frozen=True)
class Decision:
    """What to answer: 200 (whole file), 206 (``spans``), 304, 412 or 416."""

    status: int
    spans: tuple[Span, ...] = ()


def file_validators(*, size: int, mtime_ns: int) -> tuple[str, str]:
    """A strong ``ETag`` and the ``Last-Modified`` date of a file of ``size`` and ``mtime_ns``.

    Strong, so ``If-Range`` (which compares strongly) can resume a download:
    the nanosecond mtime and the size change whenever the bytes do, short of
    someone resetting the mtime by hand. The inode is left out on purpose, so
    that hosts serving copies of the same file agree.
    """
    etag = f'"{mtime_ns:x}-{size:x}"'
    return etag, formatdate(mtime_ns // 1_000_000_000, usegmt=True)


def evaluate(
    *,
    method: str,
    headers: Mapping[str, str],
    size: int,
    etag: str | None,
    last_modified: str | None,
    now: float,
    ranges: bool = True,
) -> Decision:
    """The answer to a GET or HEAD of a file, in RFC 9110 section 13.2.2's order.

    If-Match, else If-Unmodified-Since (412); If-None-Match, else
    If-Modified-Since (304); then If-Range and Range (206 or 416), for GET
    only. ``headers`` is looked up by canonical names (``"If-Match"``); ``now``
    is the time in seconds, to tell a strong ``Last-Modified`` from a weak one.
    """
    modified = _date(last_modified)
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not _matches(if_match, etag, weak=False):
            return Decision(412)
    elif modified is not None and modified > _date_or(headers.get("If-Unmodified-Since"), modified):
        return Decision(412)
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        if _matches(if_none_match, etag, weak=True):
            return Decision(304)
    elif modified is not None and modified <= _date_or(headers.get("If-Modified-Since"), -1):
        return Decision(304)
    value = headers.get("Range")
    if not ranges or method != "GET" or value is None:
        return Decision(200)
    if_range = headers.get("If-Range")
    if if_range is not None and not _if_range_holds(if_range, etag, last_modified, now):
        return Decision(200)  # the client's copy is stale: the whole file, never a piece
    spans = parse_range(value, size=size)
    if spans is None:
        return Decision(200)
    return Decision(206, tuple(spans)) if spans else Decision(416)


def parse_range(value: str, *, size: int) -> list[Span] | None:
    """The spans a ``Range`` header asks of ``size`` bytes, sorted and coalesced.

    None: the header is ignored (malformed, another unit, over ``MAX_RANGES``
    specs). An empty list: no spec is satisfiable (416). Ends past the file
    are clamped; overlapping and adjacent spans are merged.
    """
    unit, equals, specs = value.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    elements = [element.strip() for element in specs.split(",")]
    elements = [element for element in elements if element]  # RFC 9110 5.6.1: empty ones
    if not elements or len(elements) > MAX_RANGES:
        return None
    spans: list[Span] = []
    for element in elements:
        match = _SPEC.fullmatch(element)
        if match is None:
            return None
        first, last, suffix = (_position(group) for group in match.groups())
        if suffix is not None:
            if suffix > 0 and size > 0:
                spans.append((max(size - suffix, 0), size))
            continue
        assert first is not None  # the pattern's other branch
        if last is not None and last < first:
            return None  # RFC 9110 14.1.1: invalid, so the whole header is
        if first < size:
            spans.append((first, size if last is None else min(last + 1, size)))
    return _coalesce(spans)


def _position(digits: str | None) -> int | None:
    # Past any file's size, without int()'s 4300-digit limit (a ValueError).
    if not digits:
        return None
    return int(digits) if len(digits) <= 18 else 10**18


def _coalesce(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for start, stop in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((start, stop))
    return merged


def _matches(value: str, etag: str | None, *, weak: bool) -> bool:
    """Whether an If-Match / If-None-Match list names ``etag`` (``*``: any)."""
    if value.strip() == "*":
        return True
    if etag is None or (not weak and etag.startswith("W/")):
        return False
    ours = etag.removeprefix("W/")
    for match in _ETAG.finditer(value):
        if match.group(2) == ours and (weak or not match.group(1)):
            return True
    return False


def _if_range_holds(value: str, etag: str | None, last_modified: str | None, now: float) -> bool:
    """RFC 9110 13.1.5: a strong ETag that matches, or exactly the Last-Modified date.

    A date is a validator only if the file was modified at least a second
    before now; otherwise two versions could share it.
    """
    value = value.strip()
    if value.startswith(('"', "W/")):
        return etag is not None and not value.startswith("W/") and value == etag
    date, modified = _date(value), _date(last_modified)
    return date is not None and date == modified and modified <= now - 1


def _date(value: str | None) -> int | None:
    """An HTTP date in seconds since the epoch; None if absent or malformed."""
    if value is None:
        return None
    parsed = parsedate_tz(value)
    if parsed is None:
        return None
    try:
        return mktime_tz(parsed)
    except (OverflowError, ValueError):
        return None


def _date_or(value: str | None, default: int) -> int:
    date = _date(value)
    return default if date is None else date


@dataclass(frozen=True)
class Parts:
    """The framing of a ``multipart/byteranges`` body: each part's head, and the tail."""

    content_type: str  # the response's, with the boundary
    spans: tuple[Span, ...]
    heads: tuple[bytes, ...]  # one a span
    tail: bytes
    length: int  # of the whole body, exactly


def multipart(*, spans: tuple[Span, ...], size: int, content_type: str) -> Parts:
    """Frame ``spans`` of a ``size``-byte file of ``content_type``, with a random boundary."""
    boundary = secrets.token_hex(16)
    heads = tuple(
        (
            f"--{boundary}\r\nContent-Type: {content_type}\r\n"
            f"Content-Range: bytes {start}-{stop - 1}/{size}\r\n\r\n"
        ).encode("latin-1")
        for start, stop in spans
    )
    # Each part's data is followed by the CRLF that belongs to the next delimiter.
    tail = f"--{boundary}--\r\n".encode("latin-1")
    data = sum(stop - start + 2 for start, stop in spans)
    length = sum(len(head) for head in heads) + data
    return Parts(
        content_type=f"multipart/byteranges; boundary={boundary}",
        spans=spans,
        heads=heads,
        tail=tail,
        length=length + len(tail),
    )


def read_parts(file: Any, *, base: int, parts: Parts, chunk_size: int) -> Iterator[bytes]:
    """The ``multipart/byteranges`` body: heads, and the spans read from ``file``.

    ``base`` is where the file's first byte is (a file-like given part-read).
    A file shorter than a span fails the stream, so the body looks cut.
    """
    for head, (start, stop) in zip(parts.heads, parts.spans, strict=True):
        yield head
        file.seek(base + start)
        remaining = stop - start
        while remaining:
            data = file.read(min(chunk_size, remaining))
            if not data:
                name = getattr(file, "name", "the file")
                raise OSError(f"{name} ended {remaining} bytes short of its range")
            remaining -= len(data)
            yield data
        yield b"\r\n"
    yield parts.tail
