"""The compression bench's contenders: 300k tiny records, each request asking for one coding.

* ``gzipmw``: plain ``StreamingHttpResponse`` behind Django's GZipMiddleware
  (``gzip_page`` is that middleware as a view decorator);
* ``hcmw``: ``stream_response()`` uncompressed behind django-http-compression's
  middleware (the anchor: it flushes every item it is given);
* ``streamer``: our compressing stage;
* ``identity``: ``stream_response()`` uncompressed, for the bytes without compression.

Pass 1: ``stream_response()`` does not compress yet, so ``streamer`` puts the
stage behind the core chunker by hand (no metrics, no lifecycle). Once it is
wired in, this becomes ``stream_response(records(), compress=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from functools import cache

from django.http import HttpRequest, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.gzip import gzip_page
from django_http_compression.middleware import HttpCompressionMiddleware

from django_streamer import stream_response

ROWS = int(os.environ.get("BENCH_COMPRESS_ROWS", "300000"))
CHUNK = 65536
# NDJSON really, but django-http-compression's allowlist has no x-ndjson and
# would send it uncompressed.
TYPE = "text/plain"


@cache
def _records() -> tuple[bytes, ...]:
    # Built once per process, so every contender pays the same for its source.
    return tuple(b'{"id":%d,"kind":"tick","ok":true}\n' % i for i in range(ROWS))


def records() -> Iterator[bytes]:
    return iter(_records())


def whole_body() -> bytes:
    return b"".join(_records())


def _plain(request: HttpRequest) -> HttpResponseBase:
    return StreamingHttpResponse(records(), content_type=TYPE)


def _identity(request: HttpRequest) -> HttpResponseBase:
    return stream_response(records(), name="z-identity", content_type=TYPE)


def _streamer(request: HttpRequest) -> HttpResponseBase:
    return stream_response(
        records(), name="z-streamer", content_type=TYPE, chunk_size=CHUNK, compress=True
    )


CONTENDERS = {
    "gzipmw": gzip_page(_plain),
    # Its work is all in __call__ (no process_response), so it wraps the view itself.
    "hcmw": HttpCompressionMiddleware(_identity),
    "streamer": _streamer,
    "identity": _identity,
}


def dispatch(request: HttpRequest, impl: str) -> HttpResponseBase:
    return CONTENDERS[impl](request)
