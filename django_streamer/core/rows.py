"""Rows to pieces: the CSV and JSON encoding behind ``stream_csv`` and ``stream_jsonl``.

Plain Python, no Django. Each row becomes one piece as it arrives, and the
stream's chunker does the batching: ``flush_interval`` then holds for a format
as for any source, sync or async. CSV rows are written by the ``csv`` module's C
writer through ``map()``, with no Python frame per row, so a fast source costs
about what formatting rows in batches did.

JSON output is always valid UTF-8 JSON: an item that the strict encoder
refuses (``NaN``, ``Infinity``, a lone surrogate) is encoded again the way
JavaScript's ``JSON.stringify`` would: non-finite numbers become ``null`` and
lone surrogates U+FFFD. Ordinary items never take that path.
"""

from __future__ import annotations

import csv
import json
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .chunking import Piece, StreamSourceError

Encode = Callable[[Any], Piece]

_END = object()


@dataclass(frozen=True)
class RowFormat:
    """How rows become pieces.

    ``start(first_row)`` checks the first row and returns its piece (after
    anything the format writes first) and the encoder of the other rows.
    ``empty`` is the whole body when there is no row; ``tail`` follows the
    last row and is sent only when the rows ended without an error.
    """

    start: Callable[[Any], tuple[Piece, Encode]]
    empty: Piece = ""
    tail: Piece = ""


def encode_rows(rows: object, fmt: RowFormat, *, name: str) -> object:
    """The pieces of ``rows`` in ``fmt``: a generator, or an async one for async rows.

    Nothing is read here: a queryset runs when the first chunk is made (in a
    thread under ASGI), not in the view.
    """
    if isinstance(rows, (str, bytes, bytearray, memoryview, Mapping)):
        raise StreamSourceError(
            f"stream {name!r}: the rows are a single {type(rows).__name__}; "
            "pass an iterable of rows (e.g. [row])"
        )
    if hasattr(rows, "__iter__"):
        return _pieces(rows, fmt)
    if hasattr(rows, "__aiter__"):
        return _apieces(rows, fmt)
    raise StreamSourceError(
        f"stream {name!r}: the rows must be an iterable or an async iterable, "
        f"not {type(rows).__name__}"
    )


def _pieces(source: Iterable[Any], fmt: RowFormat) -> Iterator[Piece]:
    rows = iter(source)
    try:
        first = next(rows, _END)
        if first is _END:
            if fmt.empty:
                yield fmt.empty
            return
        piece, encode = fmt.start(first)
        yield piece
        yield from map(encode, rows)
        if fmt.tail:
            yield fmt.tail
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()


async def _apieces(source: AsyncIterable[Any], fmt: RowFormat) -> AsyncIterator[Piece]:
    rows = aiter(source)
    try:
        first = await anext(rows, _END)
        if first is _END:
            if fmt.empty:
                yield fmt.empty
            return
        piece, encode = fmt.start(first)
        yield piece
        async for row in rows:
            yield encode(row)
        if fmt.tail:
            yield fmt.tail
    finally:
        aclose = getattr(rows, "aclose", None)
        if aclose is not None:
            await aclose()


def describe(value: object) -> str:
    """A value for an error message: its type and a short repr."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


# -- CSV -------------------------------------------------------------------


class _Echo:
    """A file for ``csv.writer`` whose ``write`` returns the line: ``writerow()``
    then returns it. ``str`` rather than a method: ``str(line)`` is ``line``,
    and calling it runs no Python frame."""

    write = str


# What OWASP lists as starting a formula in a spreadsheet cell.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def defuse(cell: object) -> object:
    """``cell``, with a ``'`` before it if a spreadsheet would read it as a formula."""
    if type(cell) is str:
        text = cell
    elif cell is None or isinstance(cell, (int, float, Decimal)):
        return cell  # numbers are numbers to a spreadsheet; None is an empty cell
    else:
        text = str(cell)  # what the csv module would write
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_format(
    *,
    header: Sequence[str] | None,
    dialect: str | type[csv.Dialect] | csv.Dialect,
    bom: bool,
    escape_formulas: bool,
    name: str,
    check_first: Callable[[object], None] | None = None,
    json_columns: Sequence[int] = (),
) -> RowFormat:
    """CSV rows as the ``csv`` module writes them; ``check_first`` may refuse the first row.

    The cells at ``json_columns`` (a JSON column's values) are written as JSON
    text, as PostgreSQL writes them, not as Python's ``repr``.
    """
    writer = csv.writer(_Echo(), dialect)  # a bad dialect fails here, in the view
    head = ("\ufeff" if bom else "") + ("" if header is None else writer.writerow(header))

    def start(first: object) -> tuple[Piece, Encode]:
        if check_first is not None:
            check_first(first)
        if isinstance(first, Mapping):
            if header is None:
                raise StreamSourceError(
                    f"stream {name!r}: CSV rows that are dicts need header=[field names]"
                )
            encode: Encode = csv.DictWriter(_Echo(), header, dialect=dialect).writerow
        elif isinstance(first, (str, bytes)) or not hasattr(first, "__iter__"):
            raise StreamSourceError(
                f"stream {name!r}: a CSV row must be a sequence of cells or a dict, "
                f"not {describe(first)}"
            )
        else:
            encode = writer.writerow
        if escape_formulas:
            encode = _defusing(encode)
        if json_columns and not isinstance(first, Mapping):
            encode = _with_json(encode, json_columns)  # first: defusing sees the JSON text
        return head + encode(first), encode  # type: ignore[operator]

    return RowFormat(start, empty=head)


def _with_json(write: Encode, columns: Sequence[int]) -> Encode:
    def encode(row: Any) -> Piece:
        cells = list(row)
        for index in columns:
            if cells[index] is not None:
                cells[index] = _json_text(cells[index])
        return write(cells)

    return encode


_json_text = json.JSONEncoder(ensure_ascii=False).encode  # ", " and ": " as PostgreSQL's jsonb


def _defusing(write: Encode) -> Encode:
    def encode(row: Any) -> Piece:
        if isinstance(row, Mapping):
            return write({key: defuse(value) for key, value in row.items()})
        return write([defuse(cell) for cell in row])

    return encode


# -- JSON ------------------------------------------------------------------

_COMPACT = (",", ":")
_plain = json.JSONEncoder(ensure_ascii=False, separators=_COMPACT, allow_nan=False).encode


def json_items(
    encoder: type[json.JSONEncoder], *, name: str, before: str = "", after: str = ""
) -> Callable[[Any], bytes]:
    """One item as UTF-8 JSON bytes, between ``before`` and ``after``."""
    if not (isinstance(encoder, type) and issubclass(encoder, json.JSONEncoder)):
        raise TypeError(
            f"stream {name!r}: encoder must be a json.JSONEncoder subclass, not {encoder!r}"
        )
    strict = encoder(ensure_ascii=False, separators=_COMPACT, allow_nan=False).encode
    lenient = encoder(ensure_ascii=False, separators=_COMPACT).encode

    def encode(item: Any) -> bytes:
        try:
            return (before + strict(item) + after).encode()
        except (TypeError, ValueError):  # UnicodeEncodeError is a ValueError
            return (before + repaired(item, lenient, name=name) + after).encode()

    return encode


def repaired(item: Any, lenient: Callable[[Any], str], *, name: str) -> str:
    """``item`` as JSON that browsers and jq take: NaN and Infinity as ``null``,
    lone surrogates as U+FFFD (a surrogate pair becomes its character)."""
    try:
        text = lenient(item)
    except (TypeError, ValueError) as exc:
        raise StreamSourceError(
            f"stream {name!r}: cannot encode {describe(item)} as JSON: {exc}"
        ) from exc
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if "NaN" not in text and "Infinity" not in text:
        return text
    constants: list[str] = []  # stays empty if they were only inside strings
    value = json.loads(text, parse_constant=constants.append)  # each becomes None
    return _plain(value) if constants else text


def jsonl_format(encoder: type[json.JSONEncoder], *, name: str) -> RowFormat:
    """JSON Lines: one compact value per line."""
    line = json_items(encoder, name=name, after="\n")
    return RowFormat(lambda first: (line(first), line), empty=b"")


def json_array_format(encoder: type[json.JSONEncoder], *, name: str) -> RowFormat:
    """One JSON array. The ``]`` comes only after the last item: a failure on the
    way leaves ``[...,`` on the wire, which no JSON parser accepts."""
    first = json_items(encoder, name=name, before="[")
    rest = json_items(encoder, name=name, before=",")
    return RowFormat(lambda item: (first(item), rest), empty=b"[]", tail=b"]")
