"""core/ranges.py alone: Range parsing, RFC 9110's order of preconditions, multipart framing."""

from __future__ import annotations

import io

import pytest

from django_streamer.core.ranges import (
    MAX_RANGES,
    Decision,
    evaluate,
    file_validators,
    multipart,
    parse_range,
    read_parts,
)

from .decoders import byteranges

ETAG, MODIFIED = file_validators(size=1000, mtime_ns=1_700_000_000_123_456_789)
NOW = 1_800_000_000.0
OLD = "Sun, 06 Nov 1994 08:49:37 GMT"
LATER = "Fri, 01 Jan 2100 00:00:00 GMT"


def answer(method: str = "GET", size: int = 1000, **headers: str) -> Decision:
    named = {key.replace("_", "-").title(): value for key, value in headers.items()}
    return evaluate(
        method=method, headers=named, size=size, etag=ETAG, last_modified=MODIFIED, now=NOW
    )


def test_validators_are_strong_and_change_with_the_file() -> None:
    assert ETAG.startswith('"') and ETAG.endswith('"')
    assert MODIFIED == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert file_validators(size=1001, mtime_ns=1_700_000_000_123_456_789)[0] != ETAG
    assert file_validators(size=1000, mtime_ns=1_700_000_000_123_456_790)[0] != ETAG


@pytest.mark.parametrize(
    ("header", "spans"),
    [
        ("bytes=0-99", [(0, 100)]),
        ("bytes=500-", [(500, 1000)]),
        ("bytes=-500", [(500, 1000)]),
        ("bytes=0-0", [(0, 1)]),
        ("bytes=-1", [(999, 1000)]),
        ("bytes=990-5000", [(990, 1000)]),  # clamped
        ("bytes=-5000", [(0, 1000)]),
        ("BYTES = 1-2", [(1, 3)]),
        ("bytes=0-9, 10-19,5-12", [(0, 20)]),  # overlapping and adjacent: coalesced
        ("bytes=500-599,0-99", [(0, 100), (500, 600)]),
        ("bytes=0-1,,4-5", [(0, 2), (4, 6)]),  # empty list elements are allowed
        ("bytes=1000-", []),
        ("bytes=" + "9" * 5000 + "-", []),
        ("bytes=0-" + "9" * 5000, [(0, 1000)]),
        ("bytes=-" + "9" * 5000, [(0, 1000)]),
        ("bytes=-0", []),
        ("bytes=5000-6000,2000-", []),
        ("bytes=5000-6000,0-0", [(0, 1)]),  # unsatisfiable specs are dropped
    ],
)
def test_ranges(header: str, spans: list[tuple[int, int]]) -> None:
    assert parse_range(header, size=1000) == spans


@pytest.mark.parametrize(
    "header",
    [
        "bytes=",
        "bytes=a-b",
        "bytes=5-1",
        "items=0-1",
        "0-1",
        "bytes=1-2-3",
        "bytes= - ",
        "bytes=0-1;x",
    ],
)
def test_malformed_range_headers_are_ignored(header: str) -> None:
    assert parse_range(header, size=1000) is None
    assert answer(range=header) == Decision(200)


def test_too_many_ranges_get_the_whole_file() -> None:
    many = ",".join(f"{i * 3}-{i * 3}" for i in range(MAX_RANGES + 1))
    assert parse_range(many.join(["bytes=", ""]), size=1000) is None
    assert len(parse_range("bytes=" + many.rsplit(",", 1)[0], size=1000) or []) == MAX_RANGES


def test_an_empty_file_has_no_range() -> None:
    assert answer(size=0, range="bytes=0-") == Decision(416)
    assert answer(size=0, range="bytes=-5") == Decision(416)


def test_range_and_unsatisfiable() -> None:
    assert answer(range="bytes=-1") == Decision(206, ((999, 1000),))
    assert answer(range="bytes=1000-") == Decision(416)
    assert answer("HEAD", range="bytes=0-1") == Decision(200)  # RFC 9110 14.2: GET only
    no_ranges = evaluate(
        method="GET",
        headers={"Range": "bytes=0-1"},
        size=1000,
        etag=ETAG,
        last_modified=MODIFIED,
        now=NOW,
        ranges=False,
    )
    assert no_ranges == Decision(200)


def test_preconditions_in_rfc_9110_order() -> None:
    assert answer(if_match='"other"') == Decision(412)
    assert answer(if_match=f'"x", {ETAG}') == Decision(200)
    assert answer(if_match="W/" + ETAG) == Decision(412)  # If-Match compares strongly
    assert answer(if_match="*") == Decision(200)
    assert answer(if_unmodified_since=OLD) == Decision(412)
    assert answer(if_unmodified_since=LATER) == Decision(200)
    assert answer(if_unmodified_since="garbage") == Decision(200)
    # If-Match present: If-Unmodified-Since is not looked at.
    assert answer(if_match=ETAG, if_unmodified_since=OLD) == Decision(200)
    assert answer(if_none_match="W/" + ETAG) == Decision(304)  # weak comparison
    assert answer(if_none_match="*") == Decision(304)
    assert answer(if_none_match='"other"', if_modified_since=LATER) == Decision(200)
    assert answer(if_modified_since=MODIFIED) == Decision(304)
    assert answer(if_modified_since=OLD) == Decision(200)
    assert answer(if_modified_since="garbage") == Decision(200)
    # 412 before 304, and 304 before a range.
    assert answer(if_match='"other"', if_none_match=ETAG) == Decision(412)
    assert answer(if_none_match=ETAG, range="bytes=0-1") == Decision(304)
    assert answer("HEAD", if_none_match=ETAG) == Decision(304)


def test_if_range() -> None:
    assert answer(if_range=ETAG, range="bytes=0-1") == Decision(206, ((0, 2),))
    assert answer(if_range='"stale"', range="bytes=0-1") == Decision(200)
    assert answer(if_range="W/" + ETAG, range="bytes=0-1") == Decision(200)  # weak: never
    assert answer(if_range=MODIFIED, range="bytes=0-1") == Decision(206, ((0, 2),))
    assert answer(if_range=OLD, range="bytes=0-1") == Decision(200)
    assert answer(if_range=LATER, range="bytes=0-1") == Decision(200)  # exact only
    just_now = evaluate(
        method="GET",
        headers={"If-Range": MODIFIED, "Range": "bytes=0-1"},
        size=1000,
        etag=ETAG,
        last_modified=MODIFIED,
        now=1_700_000_000.5,
    )
    assert just_now == Decision(200)  # modified within the second: the date is weak


def test_multipart_framing_is_exact_and_parses() -> None:
    data = bytes(range(256)) * 4
    spans = ((0, 3), (100, 200), (1023, 1024))
    parts = multipart(spans=spans, size=len(data), content_type="video/mp4")
    body = b"".join(read_parts(io.BytesIO(data), base=0, parts=parts, chunk_size=7))
    assert len(body) == parts.length
    assert byteranges(parts.content_type, body) == [
        ("video/mp4", f"bytes {a}-{b - 1}/1024", data[a:b]) for a, b in spans
    ]
    other = multipart(spans=spans, size=len(data), content_type="video/mp4")
    assert other.content_type != parts.content_type  # a random boundary each time


def test_a_file_shorter_than_its_range_fails() -> None:
    parts = multipart(spans=((0, 3), (10, 20)), size=20, content_type="text/plain")
    with pytest.raises(OSError, match="short of its range"):
        b"".join(read_parts(io.BytesIO(b"x" * 15), base=0, parts=parts, chunk_size=4))
