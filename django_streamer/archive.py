"""``stream_zip()``: a ZIP archive streamed member by member (zipstream-ng).

zipstream-ng writes each member's header, streams its data through and puts
the CRC in a data descriptor afterwards, so nothing is held in memory, and
when every member is stored with a known size it computes the archive's exact
length ahead. It switches to ZIP64 per member as sizes need it.
"""

from __future__ import annotations

import os
import re
import sys
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import zipstream
from asgiref.sync import iscoroutinefunction

from .conf import conf
from .context import stream_name
from .core.bridge import iter_async
from .core.writer.handoff import HandOff
from .core.writer.task import async_writer_chunks
from .core.writer.thread import ThreadWriter
from .response import StreamingResponse, stream_response

__all__ = ["check_member_name", "stream_zip"]

_OPTIONS = {"compress", "size"}
_DRIVE = re.compile(r"^[A-Za-z]:")


def check_member_name(name: object) -> str:
    """``name`` if it is a safe relative path inside an archive; ValueError otherwise."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"stream_zip: a member name must be a non-empty str, not {name!r}")
    if "\\" in name:
        raise ValueError(f"stream_zip: member {name!r} has a backslash; use / between folders")
    if name.startswith("/") or _DRIVE.match(name):
        raise ValueError(f"stream_zip: member {name!r} is an absolute path; names are relative")
    if ".." in name.split("/"):
        raise ValueError(f"stream_zip: member {name!r} has a '..' part; it could escape")
    if "\x00" in name:
        raise ValueError(f"stream_zip: member {name!r} has a NUL character")
    return name


def _member(item: Any) -> tuple[str, Any, Mapping[str, Any]]:
    if not isinstance(item, tuple) or len(item) not in (2, 3):
        raise TypeError(
            f"stream_zip: each member must be (name, source) or (name, source, options), "
            f"not {item!r:.80}"
        )
    name = check_member_name(item[0])
    options = item[2] if len(item) == 3 else {}
    if not isinstance(options, Mapping) or not set(options) <= _OPTIONS:
        raise ValueError(
            f"stream_zip: member {name!r}: options must be a dict with keys among "
            f"{sorted(_OPTIONS)}, not {options!r}"
        )
    return name, item[1], options


def _known_size(source: Any, options: Mapping[str, Any]) -> int | None:
    if isinstance(source, os.PathLike):
        return os.stat(source).st_size
    if isinstance(source, (bytes, bytearray, memoryview)):
        return len(source)
    size = options.get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _producer_source(name: str, produce: Callable[..., Any]) -> Iterable[bytes]:
    from django.db import connections

    hand = HandOff(
        chunk_size=conf.STREAMER_CHUNK_SIZE,
        flush_interval=3600.0,  # the archive's own stream does the flushing
        limit=conf.STREAMER_WRITER_BUFFER,
        encoding="utf-8",
        name=f"zip member {name}",
    )
    if iscoroutinefunction(produce):
        # zipstream-ng reads members synchronously (in a server thread, or
        # asgiref's under ASGI): the producer runs on a private loop there.
        return iter_async(async_writer_chunks(produce, hand))
    return ThreadWriter(produce, hand, on_exit=connections.close_all)


def _add(archive: zipstream.ZipStream, name: str, source: Any, options: Any) -> None:
    kind = zipfile.ZIP_DEFLATED if options.get("compress", True) else zipfile.ZIP_STORED
    if isinstance(source, os.PathLike):
        if not Path(source).is_file():
            raise ValueError(f"stream_zip: member {name!r}: {os.fspath(source)!r} is not a file")
        archive.add_path(os.fspath(source), name, compress_type=kind)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        archive.add(bytes(source), name, compress_type=kind)
    elif hasattr(source, "__iter__") and not isinstance(source, str):
        archive.add(source, name, size=options.get("size"), compress_type=kind)
    elif hasattr(source, "__aiter__"):
        archive.add(iter_async(aiter(source)), name, size=options.get("size"), compress_type=kind)
    elif callable(source):
        archive.add(_producer_source(name, source), name, compress_type=kind)
    else:
        raise TypeError(
            f"stream_zip: member {name!r}: the source must be a Path, bytes, a sync or "
            f"async iterable of bytes or a produce(out) callable, not {type(source).__name__}"
        )


def stream_zip(
    members: Iterable[Any],
    *,
    filename: str | None = None,
    compress: bool | None = None,
    **kwargs: Any,
) -> StreamingResponse:
    """Stream a ZIP of ``members``: ``(name, source)`` or ``(name, source, options)``.

    A source is a ``Path``, ``bytes``, a sync or async iterable of bytes, or a
    ``produce(out)`` callable: sync (run in a helper thread, as
    ``stream_writer``) or ``async def`` (run on a private loop).
    ``options``: ``{"compress": False}`` stores the member, ``{"size": n}``
    declares an iterable's length. When every member is stored with a known
    size, the response has an exact ``Content-Length``. Names with ``..``
    parts, absolute paths or backslashes are refused.

    ``compress``: only None or False. A ZIP is never compressed again: its
    members are deflated already (the README's never-compress list), and a
    ``Content-Encoding`` would cost the exact ``Content-Length``.
    """
    name = stream_name(sys._getframe(1))
    if compress is not None and compress is not False:
        raise ValueError(
            f"stream_zip: compress must be None or False, not {compress!r}: "
            "a ZIP's members are compressed already"
        )

    kwargs.setdefault("name", name)
    kwargs.setdefault("content_type", "application/zip")
    checked = [_member(item) for item in members]
    sized = all(
        not opts.get("compress", True) and _known_size(src, opts) is not None
        for _, src, opts in checked
    )
    archive = zipstream.ZipStream(
        compress_type=zipfile.ZIP_STORED if sized else zipfile.ZIP_DEFLATED, sized=sized
    )
    for member_name, source, options in checked:
        _add(archive, member_name, source, options)
    response = stream_response(archive, filename=filename, compress=False, **kwargs)
    if sized:
        response["Content-Length"] = str(len(archive))
    return response
