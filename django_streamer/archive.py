"""``stream_zip()``: a ZIP archive streamed member by member (zipstream-ng).

zipstream-ng writes each member's header, streams its data through and puts
the CRC in a data descriptor afterwards, so nothing is held in memory, and
when every member is stored with a known size it computes the archive's exact
length ahead. It switches to ZIP64 per member as sizes need it.

A member's date and mode (the ``modified`` and ``mode`` options) need one
narrow override of zipstream-ng's internals: see :class:`_ZipStream`.
"""

from __future__ import annotations

import datetime
import os
import re
import stat
import struct
import sys
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from asgiref.sync import iscoroutinefunction

from .conf import conf
from .context import stream_name
from .core.bridge import iter_async
from .core.writer.handoff import HandOff
from .core.writer.task import async_writer_chunks
from .core.writer.thread import ThreadWriter
from .extras import require
from .response import StreamingResponse, stream_response

__all__ = ["check_member_name", "stream_zip"]

if TYPE_CHECKING:
    import zipstream
else:  # an error naming the extra, not "No module named 'zipstream'"
    zipstream = require("zipstream", feature="stream_zip")

_OPTIONS = {"compress", "size", "modified", "mode"}
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


class _Meta(NamedTuple):
    """A member's ``modified`` (as ZIP stores it: local time) and ``mode``."""

    date_time: tuple[int, int, int, int, int, int] | None
    mode: int | None


# The DOS time and date sit at bytes 10-13 of a local file header.
_HEADER = struct.Struct("<4s2B4HL2L2H")
_DOS_TIME_DATE = struct.Struct("<2H")


def _meta(name: str, options: Mapping[str, Any]) -> _Meta | None:
    modified, mode = options.get("modified"), options.get("mode")
    if modified is None and mode is None:
        return None
    date_time = None
    if modified is not None:
        if not isinstance(modified, datetime.datetime):
            raise TypeError(
                f"stream_zip: member {name!r}: modified must be a datetime, "
                f"not {type(modified).__name__}"
            )
        # ZIP stores a wall-clock time with no zone, read as local time by
        # unzip and 7z; zipfile and Path members use the server's local time
        # too (Django sets the process's zone to TIME_ZONE). Naive: as given.
        local = modified.astimezone() if modified.utcoffset() is not None else modified
        if not (1980 <= local.year <= 2107):
            raise ValueError(
                f"stream_zip: member {name!r}: modified {modified.isoformat()} is outside "
                "what a ZIP can store (1980-01-01 to 2107-12-31, local time)"
            )
        date_time = (local.year, local.month, local.day, local.hour, local.minute, local.second)
    if mode is not None and (
        not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o7777
    ):
        raise ValueError(
            f"stream_zip: member {name!r}: mode must be an int of permission bits "
            f"(0 to 0o7777, e.g. 0o644), not {mode!r}"
        )
    return _Meta(date_time, mode)


class _ZipStream(zipstream.ZipStream):  # type: ignore[misc]
    """zipstream-ng's ``ZipStream``, with a date and a mode per member.

    zipstream-ng 1.9 has no public way to set them: it builds each member's
    ``ZipStreamInfo`` inside the private ``_gen_file_entry``, from the file for
    ``add_path()`` and from the clock (mode 0600) for ``add()``. This override
    lets it run and corrects two things: the DOS date in the local header (the
    first piece it yields; the mode is not in that header), and ``date_time``
    and ``external_attr`` on the entry it appends to ``_filelist``, from which
    the central directory is written. No size changes, so ``len()`` stays
    exact. pyproject pins zipstream-ng to the minor version this was read
    against; every assumption is checked here as it is used and raises rather
    than write a wrong archive, and tests/test_formats.py checks the bytes.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._metas: deque[_Meta | None] = deque()  # one per add(), in queue order

    def add_meta(self, meta: _Meta | None) -> None:
        self._metas.append(meta)

    def _gen_file_entry(self, **kwargs: Any) -> Iterator[bytes]:
        meta = self._metas.popleft()
        entry = super()._gen_file_entry(**kwargs)
        if meta is None:
            yield from entry
            return
        name = kwargs["arcname"]
        header = next(entry)
        if meta.date_time is not None:
            header = _redate(header, name, meta.date_time)
        yield header
        yield from entry
        info = self._filelist[-1]
        if info.filename != name:
            raise RuntimeError(f"stream_zip: zipstream-ng did not record member {name!r} last")
        if meta.date_time is not None:
            info.date_time = meta.date_time
        if meta.mode is not None:
            info.external_attr = (info.external_attr & 0xFFFF) | (stat.S_IFREG | meta.mode) << 16

    def footer(self) -> Iterator[bytes]:
        if any(meta is not None for meta in self._metas):
            # _gen_file_entry was not ours to override: no date or mode was set.
            raise RuntimeError(
                "stream_zip: this zipstream-ng version does not let stream_zip set a "
                "member's modified/mode (see pyproject for the supported versions)"
            )
        yield from super().footer()


def _redate(header: bytes, name: str, date_time: tuple[int, ...]) -> bytes:
    fields = _HEADER.unpack_from(header)
    if fields[0] != b"PK\x03\x04" or len(header) != _HEADER.size + fields[10] + fields[11]:
        raise RuntimeError(
            f"stream_zip: zipstream-ng's first piece for member {name!r} is not its local "
            "header; this zipstream-ng version is not supported"
        )
    year, month, day, hour, minute, second = date_time
    dos_time = hour << 11 | minute << 5 | second // 2
    dos_date = (year - 1980) << 9 | month << 5 | day
    patched = bytearray(header)
    _DOS_TIME_DATE.pack_into(patched, 10, dos_time, dos_date)
    return bytes(patched)


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


def _add(archive: _ZipStream, name: str, source: Any, options: Mapping[str, Any]) -> None:
    meta = _meta(name, options)
    _enqueue(archive, name, source, options)
    archive.add_meta(meta)  # after: add() raises before it queues anything


def _enqueue(archive: _ZipStream, name: str, source: Any, options: Mapping[str, Any]) -> None:
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
    declares an iterable's length, ``{"modified": datetime}`` and
    ``{"mode": 0o644}`` set its date and permission bits (a naive datetime is
    stored as given, an aware one converted to local time; ZIP keeps even
    seconds, from 1980 to 2107). When every member is stored with a known
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
    archive = _ZipStream(
        compress_type=zipfile.ZIP_STORED if sized else zipfile.ZIP_DEFLATED, sized=sized
    )
    for member_name, source, options in checked:
        _add(archive, member_name, source, options)
    response = stream_response(archive, filename=filename, compress=False, **kwargs)
    if sized:
        response["Content-Length"] = str(len(archive))
    return response
