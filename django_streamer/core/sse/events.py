"""Server-Sent Events: the wire format. Plain Python, no Django.

See the WHATWG HTML standard, "Server-sent events": an event is a block of
``field: value`` lines ended by a blank line; a line starting with ``:`` is a
comment the client ignores (used for keep-alive pings).
"""

from __future__ import annotations

import json
from typing import Any

from ..validate import non_negative_int

__all__ = ["Event", "comment", "encode", "retry_hint"]

_NEWLINES = ("\r\n", "\r", "\n")


class Event:
    """One event. ``data`` is a ``str`` (may span lines) or anything ``json.dumps`` takes.

    ``id`` becomes the client's ``Last-Event-ID`` on reconnect; ``event`` names
    the ``addEventListener`` type; ``retry`` is the reconnection delay in
    milliseconds, as on the wire. CR and LF are refused in ``id`` and
    ``event``: they would let a value inject fields.
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
        return "".join(lines) + "\n"

    def __repr__(self) -> str:
        return f"Event({self.data!r}, id={self.id!r}, event={self.event!r}, retry={self.retry!r})"


def _single_line(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"Event {field} must be a str, not {type(value).__name__} {value!r}")
    if "\r" in value or "\n" in value:
        raise ValueError(f"Event {field} must not contain CR or LF, got {value!r}")
    return value


def _data_text(data: object) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("Event data must be a str or JSON-encodable, not bytes; decode it first")
    # Compact separators: every byte is sent to every client.
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


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
