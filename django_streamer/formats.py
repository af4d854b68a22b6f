"""CSV, JSON Lines and JSON array responses: a per-row encoder over the rows.

No thread and no batching here: each row becomes one piece as it arrives
(``core/rows.py``), and ``stream_response()``'s chunker coalesces the pieces
and keeps ``flush_interval``, for sync and async rows alike.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Model
from django.utils.http import parse_header_parameters

from .context import stream_name
from .core.chunking import StreamSourceError
from .core.rows import RowFormat, csv_format, describe, encode_rows, json_array_format, jsonl_format
from .core.validate import boolean
from .pgcopy import copy_csv
from .querysets import json_columns, rows_of
from .response import StreamingResponse, stream_response

__all__ = ["stream_csv", "stream_json_array", "stream_jsonl"]


def stream_csv(
    rows: object,
    *,
    header: Sequence[str] | None = None,
    dialect: str | type[csv.Dialect] | csv.Dialect = "excel",
    filename: str | None = None,
    bom: bool = False,
    escape_formulas: bool = False,
    copy: bool = True,
    **kwargs: Any,
) -> StreamingResponse:
    """Stream ``rows`` (an iterable or async iterable) as CSV, written by Python's ``csv`` module.

    Rows are sequences of cells, or dicts when ``header`` names the fields (it is
    also written as the first line). ``dialect`` is any ``csv`` dialect. ``bom``
    writes a UTF-8 byte order mark first (Excel then reads UTF-8);
    ``escape_formulas`` puts ``'`` before cells that a spreadsheet would run as
    formulas. A ``values_list()`` QuerySet is read in chunks; on PostgreSQL its
    CSV comes from ``COPY`` unless ``copy=False`` (docs/exports.md: the
    differences, e.g. lines end with ``\\n``). Other keyword arguments are
    :func:`stream_response`'s.
    """
    name = kwargs.setdefault("name", stream_name())
    kwargs.setdefault("content_type", "text/csv; charset=utf-8")
    utf8 = _is_utf8(kwargs["content_type"])
    if boolean(bom, what=f"stream {name!r}: bom") and not utf8:
        raise ValueError(
            f"stream {name!r}: bom=True writes a UTF-8 byte order mark, "
            f"but the content type {kwargs['content_type']!r} is not UTF-8"
        )
    escape_formulas = boolean(escape_formulas, what=f"stream {name!r}: escape_formulas")
    if boolean(copy, what=f"stream {name!r}: copy") and not escape_formulas:
        blocks = copy_csv(rows, header=header, dialect=dialect, bom=bom, utf8=utf8)
        if blocks is not None:
            return stream_response(blocks, filename=filename, **kwargs)
    fmt = csv_format(
        header=header,
        dialect=dialect,
        bom=bom,
        escape_formulas=escape_formulas,
        name=name,
        check_first=lambda row: _refuse_models(row, name=name),
        json_columns=json_columns(rows),
    )
    return _response(rows, fmt, filename=filename, **kwargs)


def stream_jsonl(
    objects: object, *, encoder: type[json.JSONEncoder] = DjangoJSONEncoder, **kwargs: Any
) -> StreamingResponse:
    """Stream ``objects`` (an iterable or async iterable) as JSON Lines, one value a line."""
    name = kwargs.setdefault("name", stream_name())
    kwargs.setdefault("content_type", "application/x-ndjson; charset=utf-8")
    return _response(objects, jsonl_format(encoder, name=name), **kwargs)


def stream_json_array(
    objects: object, *, encoder: type[json.JSONEncoder] = DjangoJSONEncoder, **kwargs: Any
) -> StreamingResponse:
    """Stream ``objects`` as one JSON array; a failure on the way leaves it invalid."""
    name = kwargs.setdefault("name", stream_name())
    kwargs.setdefault("content_type", "application/json; charset=utf-8")
    return _response(objects, json_array_format(encoder, name=name), **kwargs)


def _response(rows: object, fmt: RowFormat, **kwargs: Any) -> StreamingResponse:
    return stream_response(encode_rows(rows_of(rows), fmt, name=kwargs["name"]), **kwargs)


def _is_utf8(content_type: str) -> bool:
    charset = parse_header_parameters(content_type)[1].get("charset", settings.DEFAULT_CHARSET)
    return charset.lower().replace("_", "-") in ("utf-8", "utf8")


def _refuse_models(row: object, *, name: str) -> None:
    """A model instance would be written as ``str(obj)``: say what to pass instead."""
    if isinstance(row, Mapping):
        cells: Iterable[object] = row.values()
    elif isinstance(row, (list, tuple)):
        cells = row
    else:
        cells = ()  # an iterator row: looking would use it up
    found = (
        row if isinstance(row, Model) else next((c for c in cells if isinstance(c, Model)), None)
    )
    if found is None:
        return
    raise StreamSourceError(
        f"stream {name!r}: a CSV row holds a model instance ({describe(found)}); "
        "pass values instead, e.g. queryset.values_list('id', 'total') or .values(...)"
    )
