"""Accept-Encoding negotiation (RFC 9110 section 12.5.3), one row per rule."""

from __future__ import annotations

import pytest

from django_streamer.core.compression.negotiate import MAX_HEADER, negotiate, parse_accept_encoding

ALL = ("zstd", "br", "gzip")

CASES = [
    # no header, empty header
    (None, ALL, "identity"),
    ("", ALL, "identity"),
    (" , ,", ALL, "identity"),
    # browsers
    ("gzip, deflate, br, zstd", ALL, "zstd"),
    ("gzip, deflate, br", ALL, "br"),
    ("gzip, deflate", ALL, "gzip"),
    ("deflate", ALL, "identity"),
    # preference among equals follows `available`, limited to what is installed
    ("gzip, deflate, br, zstd", ("br", "gzip"), "br"),
    ("gzip, deflate, br, zstd", ("gzip",), "gzip"),
    ("zstd", ("br", "gzip"), "identity"),
    ("br;q=1, zstd;q=1.0, gzip;q=1.000", ALL, "zstd"),
    # q-values: the highest weight wins
    ("zstd;q=0.5, gzip", ALL, "gzip"),
    ("gzip;q=0.9, br;q=0.8", ALL, "gzip"),
    ("gzip;q=0.001, br;q=0", ALL, "gzip"),
    ("gzip;q=0.5, zstd;q=0.5", ALL, "zstd"),
    # q=0 refuses
    ("gzip;q=0", ALL, "identity"),
    ("zstd;q=0, br;q=0.0, gzip;q=0.000", ALL, "identity"),
    ("zstd;q=0, gzip", ALL, "gzip"),
    # identity
    ("identity", ALL, "identity"),
    ("gzip, identity", ALL, "gzip"),
    ("gzip;q=0.5, identity", ALL, "identity"),
    ("gzip;q=0.5, identity;q=0.5", ALL, "gzip"),
    ("gzip;q=0.5", ALL, "gzip"),  # identity not listed: acceptable, but last
    ("identity;q=0", ALL, "identity"),  # nothing acceptable: sent uncompressed anyway
    ("identity;q=0, gzip;q=0", ALL, "identity"),
    # * covers every coding not listed
    ("*", ALL, "zstd"),
    ("*", ("gzip",), "gzip"),
    ("*;q=0", ALL, "identity"),
    ("*;q=0, gzip", ALL, "gzip"),
    ("*, zstd;q=0", ALL, "br"),
    ("*;q=0.5, gzip", ALL, "gzip"),
    ("*;q=0.5, identity", ALL, "identity"),
    ("*;q=0.5", ALL, "zstd"),  # identity gets * too; a coding wins a tie
    ("br;q=0.2, *;q=0.1", ALL, "br"),
    # case
    ("GZIP", ALL, "gzip"),
    ("Zstd;Q=0.5, BR;q=0.4", ALL, "zstd"),
    ("gZiP;Q=0", ALL, "identity"),
    # whitespace: spaces and tabs around , and ;
    ("  gzip  ", ALL, "gzip"),
    ("gzip ; q=0.5 ,\tbr\t;\tq=0.4", ALL, "gzip"),
    ("gzip,br", ALL, "br"),
    (",,gzip,,", ALL, "gzip"),
    # x-gzip is gzip
    ("x-gzip", ALL, "gzip"),
    ("X-GZIP;q=0.5, br;q=0.4", ALL, "gzip"),
    # duplicates keep the lowest weight
    ("gzip, gzip;q=0", ALL, "identity"),
    ("gzip;q=0, gzip", ALL, "identity"),
    ("br;q=0.3, br;q=0.9, gzip;q=0.5", ALL, "gzip"),
    # malformed elements are ignored, as if not sent
    ("gzip;q=2", ALL, "identity"),
    ("gzip;q=1.5", ALL, "identity"),
    ("gzip;q=1.001", ALL, "identity"),
    ("gzip;q=0.1234", ALL, "identity"),
    ("gzip;q=-1", ALL, "identity"),
    ("gzip;q=", ALL, "identity"),
    ("gzip;q=abc", ALL, "identity"),
    ("gzip;q=.5", ALL, "identity"),
    ("gzip;q = 0.5", ALL, "identity"),
    ("gzip;", ALL, "identity"),
    ("gzip;level=1", ALL, "identity"),
    ("gzip;q=0.5;x=1", ALL, "identity"),
    ("gzip;q=0, br;q=abc", ALL, "identity"),
    ("zstd;q=nan, gzip", ALL, "gzip"),
    ("zstd;q=inf, gzip", ALL, "gzip"),
    ("zs td, gzip;q=0.1", ALL, "gzip"),
    ('"gzip"', ALL, "identity"),
    ("gzip br", ALL, "identity"),
    ("é, gzip", ALL, "gzip"),
    ("\x00\xff;;;,,,===", ALL, "identity"),
    # an unknown coding is just not available
    ("compress, deflate, sdch", ALL, "identity"),
    ("dcb, dcz, br", ALL, "br"),
]


@pytest.mark.parametrize(("header", "available", "expected"), CASES)
def test_negotiate(header, available, expected):
    assert negotiate(header, available=available) == expected


def test_nothing_available_means_identity():
    assert negotiate("gzip, br, zstd, *", available=()) == "identity"


def test_overlong_header_is_not_parsed():
    header = "gzip, " + "x" * MAX_HEADER
    assert negotiate(header, available=ALL) == "identity"
    assert negotiate("gzip, " + "x" * (MAX_HEADER - 10), available=ALL) == "gzip"


def test_parse_gives_weights_by_lower_case_coding():
    weights = parse_accept_encoding("GZip;q=0.5, br, *;q=0, x-gzip;q=0.7, bad;q=9")
    assert weights == {"gzip": 0.5, "br": 1.0, "*": 0.0}
