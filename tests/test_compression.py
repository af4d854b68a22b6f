"""The Django side of compression: when, which coding, headers, middleware, checks."""

from __future__ import annotations

import gzip
import subprocess
import sys

import pytest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.middleware.gzip import GZipMiddleware
from django.test import RequestFactory, override_settings
from django_http_compression.middleware import HttpCompressionMiddleware

from django_streamer.checks import check_compression, check_configuration
from django_streamer.compression import (
    MIN_SIZE,
    choose_coding,
    set_encoding_headers,
    should_compress,
    start_compression,
)
from django_streamer.core.compression.stage import compress_chunks

from .decoders import decode

rf = RequestFactory()
BROWSER = "gzip, deflate, br, zstd"


def response(content_type: str | None = "text/csv", status: int = 200, **headers: str):
    resp = StreamingHttpResponse(iter([b"x"]), status=status, content_type=content_type)
    for name, value in headers.items():
        resp[name.replace("_", "-")] = value
    if content_type is None:
        del resp["Content-Type"]
    return resp


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("text/csv", True),
        ("text/csv; charset=utf-8", True),
        ("TEXT/HTML", True),
        ("text/event-stream", True),
        ("text/plain", True),
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/x-ndjson", True),
        ("application/vnd.api+json", True),
        ("application/ld+json", True),
        ("application/javascript", True),
        ("application/xml", True),
        ("application/atom+xml", True),
        ("application/csv", True),
        ("image/svg+xml", True),
        ("font/ttf", True),
        ("image/png", False),
        ("image/jpeg", False),
        ("audio/mpeg", False),
        ("video/mp4", False),
        ("application/zip", False),
        ("application/gzip", False),
        ("application/x-gzip", False),
        ("application/zstd", False),
        ("application/pdf", False),
        ("application/octet-stream", False),
        ("font/woff2", False),
        ("font/woff", False),
        ("application/jsonfoo", False),
        ("", False),
        (None, False),
    ],
)
def test_content_type_allowlist(content_type, expected):
    assert should_compress(rf.get("/"), response(content_type)) is expected


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (200, {}, True),
        (404, {}, True),
        (206, {"Content_Range": "bytes 0-9/100"}, False),
        (200, {"Content_Range": "bytes 0-9/100"}, False),
        (206, {}, False),
        (204, {}, False),
        (304, {}, False),
        (101, {}, False),
        (200, {"Content_Encoding": "gzip"}, False),
        (200, {"Content_Encoding": "identity"}, False),
        (200, {"Content_Length": str(MIN_SIZE - 1)}, False),
        (200, {"Content_Length": str(MIN_SIZE)}, True),
        (200, {"Content_Length": "garbage"}, True),
    ],
)
def test_never_compress(status, headers, expected):
    assert should_compress(rf.get("/"), response(status=status, **headers)) is expected


def test_head_is_never_compressed():
    assert not should_compress(rf.head("/"), response())
    assert not should_compress(rf.head("/"), response(), force=True)


def test_compress_must_be_none_or_a_bool():
    with pytest.raises(TypeError, match="compress must be None, True or False, not 1"):
        choose_coding(rf.get("/"), response(), compress=1)  # type: ignore[arg-type]


def test_force_skips_type_and_size_never_correctness():
    req = rf.get("/")
    assert should_compress(req, response("image/png"), force=True)
    assert should_compress(req, response(Content_Length="10"), force=True)
    assert not should_compress(req, response(Content_Encoding="br"), force=True)
    assert not should_compress(req, response(status=206), force=True)


def test_setting_off_by_default_means_no_compression_and_no_vary():
    resp = response()
    assert choose_coding(rf.get("/", HTTP_ACCEPT_ENCODING=BROWSER), resp) is None
    assert not resp.has_header("Vary")


@override_settings(STREAMER_COMPRESSION=True)
def test_setting_on_negotiates_and_varies():
    resp = response()
    assert choose_coding(rf.get("/", HTTP_ACCEPT_ENCODING=BROWSER), resp) == "zstd"
    assert resp["Vary"] == "Accept-Encoding"


@override_settings(STREAMER_COMPRESSION=True)
def test_vary_is_set_even_when_the_client_takes_identity():
    for req in (rf.get("/"), rf.get("/", HTTP_ACCEPT_ENCODING="identity")):
        resp = response()
        assert choose_coding(req, resp) is None
        assert resp["Vary"] == "Accept-Encoding"


@override_settings(STREAMER_COMPRESSION=True)
def test_vary_is_added_to_an_existing_one_and_not_for_ineligible_responses():
    resp = response(Vary="Cookie")
    choose_coding(rf.get("/", HTTP_ACCEPT_ENCODING="gzip"), resp)
    assert resp["Vary"] == "Cookie, Accept-Encoding"
    png = response("image/png")
    assert choose_coding(rf.get("/", HTTP_ACCEPT_ENCODING="gzip"), png) is None
    assert not png.has_header("Vary")


@override_settings(STREAMER_COMPRESSION=True)
def test_head_is_never_compressed_but_varies():
    resp = response()
    assert choose_coding(rf.head("/", HTTP_ACCEPT_ENCODING="gzip"), resp) is None
    assert resp["Vary"] == "Accept-Encoding"


def test_per_response_argument_overrides_the_setting():
    req = rf.get("/", HTTP_ACCEPT_ENCODING="gzip")
    assert choose_coding(req, response(), compress=True) == "gzip"
    assert choose_coding(req, response("image/png"), compress=True) == "gzip"
    with override_settings(STREAMER_COMPRESSION=True):
        resp = response()
        assert choose_coding(req, resp, compress=False) is None
        assert not resp.has_header("Vary")


def test_headers_when_compressing():
    resp = response(Content_Length="5000", ETag='"abc"', Accept_Ranges="bytes")
    set_encoding_headers(resp, "br")
    assert resp["Content-Encoding"] == "br"
    assert not resp.has_header("Content-Length")
    assert not resp.has_header("Accept-Ranges")
    assert resp["ETag"] == 'W/"abc"'
    weak = response(ETag='W/"abc"')
    set_encoding_headers(weak, "gzip")
    assert weak["ETag"] == 'W/"abc"'


def compressed_response(request: HttpRequest, data: bytes) -> StreamingHttpResponse:
    resp = StreamingHttpResponse(content_type="text/csv")
    stage = start_compression(request, resp, compress=True, chunk_size=8192)
    assert stage is not None
    chunks = (data[i : i + 30_000] for i in range(0, len(data), 30_000))
    resp.streaming_content = compress_chunks(chunks, stage)
    return resp


DATA = b"".join(b"%d,row,%d\n" % (i, i * i) for i in range(30_000))


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
@pytest.mark.parametrize("middleware", [GZipMiddleware, HttpCompressionMiddleware])
def test_a_compressing_middleware_never_compresses_twice(middleware, coding):
    request = rf.get("/", HTTP_ACCEPT_ENCODING=coding)
    resp = middleware(lambda req: compressed_response(req, DATA))(request)
    assert resp["Content-Encoding"] == coding
    assert decode(coding, b"".join(resp.streaming_content)) == DATA


def test_without_compression_the_middleware_still_works_alone():
    request = rf.get("/", HTTP_ACCEPT_ENCODING="gzip")
    resp = GZipMiddleware(lambda req: StreamingHttpResponse(iter([DATA]), content_type="text/csv"))(
        request
    )
    assert isinstance(resp, StreamingHttpResponse)
    assert gzip.decompress(b"".join(resp)) == DATA


def test_a_plain_response_is_judged_by_its_length():
    small = HttpResponse(b"x" * (MIN_SIZE - 1), content_type="text/plain")
    assert not should_compress(rf.get("/"), small)
    assert should_compress(rf.get("/"), HttpResponse(b"x" * MIN_SIZE, content_type="text/plain"))


def ids(messages):
    return [m.id for m in messages]


def test_no_compression_messages_by_default():
    assert check_compression() == []


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_check_refuses_a_setting_that_is_not_a_bool(value):
    with override_settings(STREAMER_COMPRESSION=value):
        assert ids(check_configuration()) == ["django_streamer.E024"]


class MyGZip(GZipMiddleware):
    pass


@pytest.mark.parametrize(
    "path",
    [
        "django.middleware.gzip.GZipMiddleware",
        "django_http_compression.middleware.HttpCompressionMiddleware",
        "tests.test_compression.MyGZip",
    ],
)
def test_check_warns_about_a_compressing_middleware(path, settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, path]
    messages = check_compression()
    assert ids(messages) == ["django_streamer.W006"]
    assert path in messages[0].msg


def test_check_ignores_middleware_that_does_not_import(settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "nowhere.Middleware"]
    assert check_compression() == []


def test_manage_py_check_fails_on_a_bad_setting(tmp_path):
    (tmp_path / "bad_settings.py").write_text(
        "from tests.settings import *\nSTREAMER_COMPRESSION = 'yes'\n"
    )
    env = {"DJANGO_SETTINGS_MODULE": "bad_settings", "PYTHONPATH": f"{tmp_path}:."}
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], capture_output=True, text=True, env=env
    )
    assert result.returncode != 0
    assert "django_streamer.E024" in result.stderr
