"""``stream_zip()``: a ZIP archive streamed member by member (zipstream-ng).

zipstream-ng writes each member's header, streams its data through and puts
the CRC in a data descriptor afterwards, so nothing is held in memory, and
when every member is stored with a known size it computes the archive's exact
length ahead. It switches to ZIP64 per member as sizes need it.

A member's date and mode (the ``modified`` and ``mode`` options, and a
``Path`` member's own) need one narrow override of zipstream-ng's internals:
see :class:`_ZipStream`. Names are checked in ``core/zipnames.py``, and what
each member's bytes come from is ``core/zipsources.py`` (docs/zip.md).
"""

from __future__ import annotations

import datetime
import os
import stat
import struct
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from asgiref.sync import iscoroutinefunction
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http.response import HttpResponseBase

from .conf import conf
from .context import current_request, stream_name
from .core.validate import boolean, non_negative_int
from .core.writer.handoff import HandOff
from .core.writer.thread import ThreadWriter
from .core.zipnames import check_member_name, check_unique
from .core.zipsources import OWN_THREAD, async_member, copy_from, encoded, exactly, read_file
from .extras import require
from .querysets import sync_rows_of
from .response import StreamingResponse, stream_response

__all__ = ["check_member_name", "stream_zip"]

if TYPE_CHECKING:
    import zipstream
else:  # an error naming the extra, not "No module named 'zipstream'"
    zipstream = require("zipstream", feature="stream_zip")

_OPTIONS = {"compress", "size", "modified", "mode"}


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


class _Member(NamedTuple):
    name: str
    source: Any
    compress: bool
    size: int | None  # known ahead: a file's, bytes', or the size option's
    meta: _Meta | None


def _member(item: Any) -> _Member:
    if not isinstance(item, tuple) or len(item) not in (2, 3):
        raise TypeError(
            f"stream_zip: each member must be (name, source) or (name, source, options), "
            f"not {item!r:.80}"
        )
    name = check_member_name(item[0])
    source = item[1]
    options = item[2] if len(item) == 3 else {}
    if not isinstance(options, Mapping) or not set(options) <= _OPTIONS:
        raise ValueError(
            f"stream_zip: member {name!r}: options must be a dict with keys among "
            f"{sorted(_OPTIONS)}, not {options!r}"
        )
    _refuse_responses(name, source)
    if isinstance(source, str):
        source = source.encode()  # a text member's whole content
    meta = _meta(name, options)
    size = _declared_size(name, options)
    if isinstance(source, os.PathLike):
        file = _stat_file(name, source)
        size = _same(name, size, file.st_size)
        meta = _file_meta(file, meta)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        size = _same(name, size, len(source))
    compress = boolean(options.get("compress", True), what=f"stream_zip: member {name!r}: compress")
    return _Member(name, source, compress, size, meta)


def _refuse_responses(name: str, source: object) -> None:
    if isinstance(source, HttpResponseBase):
        source.close()  # a stream_response() has started its stream: end it (aborted)
        raise TypeError(
            f"stream_zip: member {name!r} is a {type(source).__name__}: a member takes a "
            "body's source, not a response (its headers, Content-Encoding and metrics are a "
            "response's). Pass the source: e.g. a generator of str, or a produce(out) that "
            "writes with csv.writer(out)"
        )


def _declared_size(name: str, options: Mapping[str, Any]) -> int | None:
    size = options.get("size")
    return (
        None if size is None else non_negative_int(size, what=f"stream_zip: member {name!r}: size")
    )


def _same(name: str, declared: int | None, actual: int) -> int:
    if declared is not None and declared != actual:
        raise ValueError(f"stream_zip: member {name!r}: size {declared} is not its length {actual}")
    return actual


def _stat_file(name: str, path: os.PathLike[str]) -> os.stat_result:
    try:
        file = os.stat(path)
    except OSError as exc:
        raise ValueError(
            f"stream_zip: member {name!r}: {os.fspath(path)!r} is not a file ({exc.strerror})"
        ) from None
    if not stat.S_ISREG(file.st_mode):
        raise ValueError(f"stream_zip: member {name!r}: {os.fspath(path)!r} is not a file")
    return file


# What ZIP's DOS dates can hold; zipstream-ng clamps a file's date the same way.
_FIRST = (1980, 1, 1, 0, 0, 0)
_LAST = (2107, 12, 31, 23, 59, 58)


def _file_meta(file: os.stat_result, given: _Meta | None) -> _Meta:
    """A file's date (local time, as ``zipfile`` takes it) and mode, unless given."""
    date_time: tuple[int, int, int, int, int, int] = time.localtime(file.st_mtime)[:6]
    date_time = min(max(_FIRST, date_time), _LAST)
    mode = stat.S_IMODE(file.st_mode)
    if given is None:
        return _Meta(date_time, mode)
    return _Meta(
        date_time if given.date_time is None else given.date_time,
        mode if given.mode is None else given.mode,
    )


class _ZipStream(zipstream.ZipStream):  # type: ignore[misc]
    """zipstream-ng's ``ZipStream``, with a date and a mode per member.

    zipstream-ng 1.9 has no public way to set them: it builds each member's
    ``ZipStreamInfo`` inside the private ``_gen_file_entry``, from the clock
    (mode 0600) for ``add()``, which every member goes through (a ``Path`` too:
    stream_zip reads it, to the size counted, with its file's date and mode as
    its meta). This override
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


def _is_async(source: object) -> bool:
    if hasattr(source, "__aiter__"):
        return not hasattr(source, "__iter__")
    return callable(source) and iscoroutinefunction(source)


def _producer(name: str, produce: Callable[..., Any]) -> Iterable[bytes]:
    hand = HandOff(
        chunk_size=conf.STREAMER_CHUNK_SIZE,
        flush_interval=3600.0,  # the archive's own stream does the flushing
        limit=conf.STREAMER_WRITER_BUFFER,
        encoding="utf-8",
        name=f"zip member {name}",
    )
    if iscoroutinefunction(produce):
        return async_member(produce, hand, on_exit=connections.close_all)
    # text=None: a member takes bytes and str alike (csv.writer(out) writes str).
    return ThreadWriter(produce, hand, text=None, on_exit=connections.close_all)


def _data(member: _Member) -> Iterable[bytes]:
    """What zipstream-ng reads for ``member``: bytes, read to the size counted."""
    name, source, size = member.name, member.source, member.size
    if isinstance(source, os.PathLike):
        assert size is not None  # stat'ed by _member()
        return read_file(name, os.fspath(source), size, block=conf.STREAMER_CHUNK_SIZE)
    if hasattr(source, "__iter__") and not isinstance(source, (str, bytes)):
        data: Iterable[bytes] = encoded(name, sync_rows_of(source))  # type: ignore[arg-type]
    elif hasattr(source, "__aiter__"):
        data = _producer(name, copy_from(name, source))
    elif callable(source):
        data = _producer(name, source)
    else:
        raise TypeError(
            f"stream_zip: member {name!r}: the source must be a Path, bytes, a sync or "
            f"async iterable of bytes or str, or a produce(out) callable, "
            f"not {type(source).__name__}"
        )
    return data if size is None else exactly(name, data, size)


def _add(archive: _ZipStream, member: _Member) -> None:
    kind = zipfile.ZIP_DEFLATED if member.compress else zipfile.ZIP_STORED
    if isinstance(member.source, (bytes, bytearray, memoryview)):
        archive.add(bytes(member.source), member.name, compress_type=kind)
    else:
        archive.add(_data(member), member.name, size=member.size, compress_type=kind)
    archive.add_meta(member.meta)  # after: add() raises before it queues anything


def _refuse_async_under_asgi(members: list[_Member]) -> None:
    """Without asgiref 3.13, an async member's ORM calls would wait for the reading thread."""
    if OWN_THREAD or not isinstance(current_request.get(), ASGIRequest):
        return
    for member in members:
        if _is_async(member.source):
            raise RuntimeError(
                f"stream_zip: member {member.name!r} is async, which under ASGI needs "
                "asgiref 3.13 or later (Python 3.11+): its database calls would wait for "
                "the thread that reads the archive. Upgrade asgiref, or make the member a "
                "sync produce(out) or a sync iterable"
            )


def stream_zip(
    members: Iterable[Any],
    *,
    filename: str | None = None,
    compress: bool | None = None,
    **kwargs: Any,
) -> StreamingResponse:
    """Stream a ZIP of ``members``: ``(name, source)`` or ``(name, source, options)``.

    A source is a ``Path``, ``bytes``, a sync or async iterable of bytes or
    str (encoded UTF-8), or a ``produce(out)`` callable writing bytes or str:
    sync (run in a helper thread, as ``stream_writer``) or ``async def`` (run
    on a private loop, its thread-sensitive calls on a thread of its own).
    ``options``: ``{"compress": False}`` stores the member, ``{"size": n}``
    declares an iterable's length in bytes (held to it), ``{"modified":
    datetime}`` and ``{"mode": 0o644}`` set its date and permission bits (a
    naive datetime is stored as given, an aware one converted to local time;
    ZIP keeps even seconds, from 1980 to 2107). When every member is stored
    with a known size, the response has an exact ``Content-Length``.

    ``members`` is read whole here, so every name is checked before the first
    byte (docs/zip.md lists what is refused). A ``Path`` is read to the size
    it has now: if it changes, the stream fails and the body is cut short.

    ``compress``: only None or False. A ZIP is never compressed again: its
    members are deflated already (the README's never-compress list), and a
    ``Content-Encoding`` would cost the exact ``Content-Length``.
    """
    if compress is not None and compress is not False:
        raise ValueError(
            f"stream_zip: compress must be None or False, not {compress!r}: "
            "a ZIP's members are compressed already"
        )
    kwargs.setdefault("name", stream_name())
    kwargs.setdefault("content_type", "application/zip")
    checked = [_member(item) for item in members]
    check_unique(member.name for member in checked)
    _refuse_async_under_asgi(checked)
    sized = all(not member.compress and member.size is not None for member in checked)
    archive = _ZipStream(
        compress_type=zipfile.ZIP_STORED if sized else zipfile.ZIP_DEFLATED, sized=sized
    )
    for member in checked:
        _add(archive, member)
    response = stream_response(archive, filename=filename, compress=False, **kwargs)
    if sized:
        response["Content-Length"] = str(len(archive))
    return response
