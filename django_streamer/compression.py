"""Whether a response is compressed, with which coding, and the headers that go with it.

The Django side of ``core/compression.py``: it reads the request, the response
and ``STREAMER_COMPRESSION``, and sets ``Content-Encoding``, ``Vary`` and the
rest. Never compressed (README, *Compression*):

* a response that already has ``Content-Encoding`` (so a compressing
  middleware behind us never compresses twice, and we never compress its work);
* a 206, or any response with ``Content-Range``;
* a status that has no body (1xx, 204, 304);
* a content type outside the allowlist below (images, audio, video, archives
  and fonts like woff2 are compressed already);
* a body known (``Content-Length``, or a plain ``HttpResponse``) to be under
  ``MIN_SIZE`` bytes;
* a ``HEAD`` request's empty body.
"""

from __future__ import annotations

import re

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.cache import patch_vary_headers

from .conf import conf
from .core.compression.codecs import available_codings, make_encoder
from .core.compression.negotiate import IDENTITY, negotiate
from .core.compression.stage import Compressor

__all__ = [
    "COMPRESSIBLE_TYPES",
    "MIN_SIZE",
    "choose_coding",
    "set_encoding_headers",
    "should_compress",
    "start_compression",
]

# Below this, the codings' own headers outweigh what they save (Django's
# GZipMiddleware uses the same 200 bytes).
MIN_SIZE = 200

# Types worth compressing: text, and the structured formats sent as application/*.
# Matched on the media type alone, lower-cased, without parameters.
COMPRESSIBLE_TYPES = re.compile(
    r"""
    text/.+
    | application/(
        json | [\w.+-]+\+json | x-ndjson | ndjson | jsonl | json-seq
        | javascript | x-javascript | ecmascript
        | xml | [\w.+-]+\+xml
        | csv | x-csv | yaml | x-yaml | toml | sql | graphql
        | x-www-form-urlencoded | wasm | rtf
        | vnd\.ms-fontobject | x-font-ttf | x-font-opentype
      )
    | image/(svg\+xml | x-icon | vnd\.microsoft\.icon | bmp)
    | font/(ttf | otf | collection)
    | multipart/(mixed | bag)
    """,
    re.VERBOSE,
)

_NO_BODY = (204, 304)


def _media_type(response: HttpResponseBase) -> str:
    return response.get("Content-Type", "").split(";", 1)[0].strip().lower()


def should_compress(
    request: HttpRequest, response: HttpResponseBase, *, force: bool = False
) -> bool:
    """May this response be compressed, whatever the client accepts?

    ``force`` (``compress=True``) skips the content-type allowlist and the size
    threshold, never the rules that would make the response wrong.
    """
    return request.method != "HEAD" and _compressible(response, force=force)


def _compressible(response: HttpResponseBase, *, force: bool) -> bool:
    """The response's side of :func:`should_compress`; it decides ``Vary``."""
    status = response.status_code
    if status < 200 or status in _NO_BODY or status == 206:
        return False
    if response.has_header("Content-Encoding") or response.has_header("Content-Range"):
        return False
    if force:
        return True
    if not COMPRESSIBLE_TYPES.fullmatch(_media_type(response)):
        return False
    length = _known_length(response)
    return length is None or length >= MIN_SIZE


def _known_length(response: HttpResponseBase) -> int | None:
    length = response.get("Content-Length")
    if length is not None and length.isdigit():
        return int(length)
    content = None if response.streaming else getattr(response, "content", None)
    return len(content) if isinstance(content, bytes) else None


def choose_coding(
    request: HttpRequest, response: HttpResponseBase, *, compress: bool | None = None
) -> str | None:
    """The coding to send, or None; sets ``Vary: Accept-Encoding`` when it could compress.

    ``compress``: None follows ``STREAMER_COMPRESSION``; True or False decides
    for this response. A HEAD response varies as its GET would, but is not
    compressed (its body is empty).
    """
    if compress is not None and not isinstance(compress, bool):
        raise TypeError(f"compress must be None, True or False, not {compress!r}")
    enabled = conf.STREAMER_COMPRESSION if compress is None else compress
    force = compress is True
    if not enabled or not _compressible(response, force=force):
        return None
    patch_vary_headers(response, ("Accept-Encoding",))
    if not should_compress(request, response, force=force):
        return None
    coding = negotiate(request.headers.get("Accept-Encoding"), available=available_codings())
    return None if coding == IDENTITY else coding


def set_encoding_headers(response: HttpResponseBase, coding: str) -> None:
    """``Content-Encoding``; no ``Content-Length``, ``Accept-Ranges``; a weak ``ETag``.

    The padding makes every response's bytes different, so a strong ETag (the
    same bytes) and byte ranges over them would both be false.
    """
    response["Content-Encoding"] = coding
    for name in ("Content-Length", "Accept-Ranges"):
        if response.has_header(name):
            del response[name]
    etag = response.get("ETag")
    if etag and etag.startswith('"'):
        response["ETag"] = "W/" + etag


def start_compression(
    request: HttpRequest,
    response: HttpResponseBase,
    *,
    compress: bool | None,
    chunk_size: int,
    flush_interval: float | None = None,
) -> Compressor | None:
    """Decide, set the headers, and return the stage to put in front of the wire.

    ``flush_interval``: the stream's; bytes held that long are flushed (0: every chunk).
    """
    coding = choose_coding(request, response, compress=compress)
    if coding is None:
        return None
    set_encoding_headers(response, coding)
    return Compressor(make_encoder(coding), chunk_size=chunk_size, flush_interval=flush_interval)
