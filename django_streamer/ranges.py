"""Range and conditional requests for file sources: the Django side of ``core/ranges.py``.

For a ``Path`` or a binary file with a known size: ``Accept-Ranges``, ``ETag``
and ``Last-Modified`` (unless the view set its own), then 304, 412, 206 or
416 as RFC 9110 says (README, *Files: ranges and conditional requests*).
"""

from __future__ import annotations

import os
import time

from django.http import HttpRequest
from django.http.response import HttpResponseBase

from .core.ranges import Decision, evaluate, file_validators, multipart, read_parts
from .core.stream import Stream

__all__ = ["serve_ranges"]


def serve_ranges(
    request: HttpRequest, response: HttpResponseBase, stream: Stream, *, ranges: bool
) -> Decision | None:
    """Answer conditional and Range requests for a file stream; None when it does not apply.

    Sets the validators, the status and the headers, and narrows the stream to
    what the answer sends. ``ranges``: False still answers conditional
    requests, but sends the whole file for a ``Range`` (and no ``Accept-Ranges``).
    """
    if (
        request.method not in ("GET", "HEAD")
        or response.status_code != 200
        or not stream.binary_file
        or stream.length is None
    ):
        return None
    # The size sent, not the file's: a file object given part-read is another
    # representation than the whole file, and must not share its tag.
    mtime_ns = os.fstat(stream.file.fileno()).st_mtime_ns
    etag, modified = file_validators(size=stream.length, mtime_ns=mtime_ns)
    response.headers.setdefault("ETag", etag)
    response.headers.setdefault("Last-Modified", modified)
    if ranges:
        response["Accept-Ranges"] = "bytes"
    decision = evaluate(
        method=request.method,
        headers=request.headers,
        size=stream.length,
        etag=response.get("ETag"),
        last_modified=response.get("Last-Modified"),
        now=time.time(),
        ranges=ranges,
    )
    _apply(decision, response, stream, size=stream.length)
    return decision


def _apply(decision: Decision, response: HttpResponseBase, stream: Stream, *, size: int) -> None:
    """The status, the headers and the body of ``decision``; the view's headers all stay."""
    response.status_code = decision.status
    if decision.status in (304, 412, 416):
        stream.replace_items((), length=0)
        if decision.status == 304:
            # Its Content-Length could only be the 200's, and servers differ on
            # whether they then wait for those bytes: none.
            del response["Content-Length"]
        else:
            response["Content-Length"] = "0"
        if decision.status == 416:
            response["Content-Range"] = f"bytes */{size}"
    elif decision.status == 206 and len(decision.spans) == 1:
        ((start, stop),) = decision.spans
        stream.window(start, stop - start)
        response["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
        response["Content-Length"] = str(stop - start)
    elif decision.status == 206:
        parts = multipart(spans=decision.spans, size=size, content_type=response["Content-Type"])
        body = read_parts(
            stream.file, base=stream.file_start, parts=parts, chunk_size=stream.chunk_size
        )
        stream.replace_items(body, length=parts.length)
        response["Content-Type"] = parts.content_type
        response["Content-Length"] = str(parts.length)
