"""Server-Sent Events: the wire format. Plain Python, no Django.

See the WHATWG HTML standard, "Server-sent events": an event is a block of
``field: value`` lines ended by a blank line; a line starting with ``:`` is a
comment the client ignores (used for keep-alive pings).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..validate import non_negative_int

__all__ = ["IDLE", "Event", "comment", "encode", "retry_hint"]

_NEWLINES = ("\r\n", "\r", "\n")
# What str.splitlines() splits on: a client that splits with it (rather than
# on CR and LF only, as the standard says) would read any of them as a new field.
_LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_JSON_RAW_BREAKS = re.compile("[\x85\u2028\u2029]")
_SURROGATES = re.compile("[\ud800-\udfff]")


class _Idle:
    def __repr__(self) -> str:
        return "IDLE"


# Yielded by a source that is waiting: nothing is sent, and a closed stream
# stops a sync source there (see SyncEvents).
IDLE: Any = _Idle()


class Event:
    """One event. ``data`` is a ``str`` (may span lines) or anything ``json.dumps`` takes.

    ``id`` becomes the client's ``Last-Event-ID`` on reconnect; ``event`` names
    the ``addEventListener`` type; ``retry`` is the reconnection delay in
    milliseconds, as on the wire. Line breaks (CR, LF, and the others
    ``str.splitlines()`` knows: U+0085, U+2028, U+2029, ...) are refused in
    ``id`` and ``event``: they would let a value inject fields.

    The encoded text is always valid UTF-8: a lone surrogate (``"\\ud800"``,
    which ``json.loads`` can return) becomes U+FFFD; in JSON data, NaN and
    infinities become ``null``, and U+0085, U+2028 and U+2029 are escaped
    (``\\u2028``), so JSON data is one line whatever splits it. ``str`` data
    is split into ``data:`` lines at CR and LF only, as the standard's parser
    reads it.
    """

    __slots__ = ("data", "event", "id", "retry")

    def __init__(
        self,
        data: Any = "",
        *,
        id: str | int | None = None,
        event: str | None = None,
        retry: int | None = None,
    ) -> None:
        self.data = data
        self.id = None if id is None else _single_line(str(id), "id")
        if self.id is not None and "\0" in self.id:
            # The standard makes clients ignore an id holding NUL.
            raise ValueError(f"Event id must not contain NUL, got {self.id!r}")
        self.event = None if event is None else _single_line(event, "event")
        self.retry = (
            None if retry is None else non_negative_int(retry, what="Event retry (milliseconds)")
        )

    def encode(self) -> str:
        lines: list[str] = []
        if self.event is not None:
            lines.append(f"event: {self.event}\n")
        if self.id is not None:
            lines.append(f"id: {self.id}\n")
        if self.retry is not None:
            lines.append(f"retry: {self.retry}\n")
        lines.extend(f"data: {line}\n" for line in _split_lines(_data_text(self.data)))
        return _valid_text("".join(lines) + "\n")

    def __repr__(self) -> str:
        return f"Event({self.data!r}, id={self.id!r}, event={self.event!r}, retry={self.retry!r})"


def _single_line(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"Event {field} must be a str, not {type(value).__name__} {value!r}")
    if _LINE_BREAKS.search(value):
        raise ValueError(
            f"Event {field} must not contain a line break "
            f"(CR, LF, U+0085, U+2028, U+2029, ...), got {value!r}"
        )
    return value


def _data_text(data: object) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("Event data must be a str or JSON-encodable, not bytes; decode it first")
    # Compact separators: every byte is sent to every client.
    try:
        text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:  # NaN or an infinity: not JSON
        text = json.dumps(_finite(data), separators=(",", ":"), ensure_ascii=False)
    # Line breaks json.dumps leaves raw (it escapes the others), escaped: the
    # same JSON value, and one line for a client that splits with splitlines().
    return _JSON_RAW_BREAKS.sub(_json_escape, text)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def _finite(data: object, inside: frozenset[int] = frozenset()) -> object:
    """``data`` with NaN and infinities (values and keys) replaced by None."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if not isinstance(data, (dict, list, tuple)):
        return data
    if id(data) in inside:
        raise ValueError("Circular reference detected")  # as json.dumps says it
    inside |= {id(data)}
    if isinstance(data, dict):
        return {_finite(key, inside): _finite(value, inside) for key, value in data.items()}
    return [_finite(value, inside) for value in data]


def _valid_text(text: str) -> str:
    # A str may hold surrogates that UTF-8 cannot encode. A valid pair is
    # joined into its character, a lone one becomes U+FFFD.
    if _SURROGATES.search(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _split_lines(text: str) -> list[str]:
    # Any of CRLF, CR or LF ends a line for the client, so each becomes its own
    # ``data:`` line; the client joins them back with LF.
    for newline in _NEWLINES[:2]:
        text = text.replace(newline, "\n")
    return text.split("\n")


def encode(item: object) -> str:
    """The wire text of one item: an :class:`Event`, a ``str`` or a JSON-encodable value."""
    if isinstance(item, Event):
        return item.encode()
    if isinstance(item, (bytes, bytearray, memoryview)):
        raise TypeError(
            "an SSE source must yield Event, str or JSON-encodable values, not bytes; "
            "decode it first"
        )
    return Event(item).encode()


def comment(text: str = "") -> str:
    """A comment block; clients ignore it, proxies see bytes flowing."""
    return "".join(f": {line}\n" if line else ":\n" for line in _split_lines(text)) + "\n"


def retry_hint(milliseconds: int, text: str = "") -> str:
    """A block that only sets the client's reconnection delay, with an optional comment."""
    note = "".join(f": {line}\n" for line in _split_lines(text)) if text else ""
    return f"{note}retry: {milliseconds}\n\n"
