"""CSV, JSON Lines and JSON array responses, each a generator over the rows.

No thread: the rows are formatted in batches by the ``csv`` and ``json``
modules on the server's own thread, and the stream's chunker sizes the
batches into chunks. A batch aims at about one chunk of output, so the
per-row cost is what ``csv.writer`` costs in memory (see ``bench/``).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from .conf import conf
from .context import stream_name
from .response import StreamingResponse, stream_response

__all__ = ["stream_csv", "stream_json_array", "stream_jsonl"]

# Rows in the first batch; later batches are sized from the bytes per row seen.
_FIRST_BATCH = 64
_MAX_BATCH = 8192


def _batches(items: Iterable[Any], target: int) -> Iterator[tuple[list[Any], Any]]:
    """Lists of items sized so that each one's output is about ``target`` long.

    Yields ``(batch, report)``: call ``report(length)`` with the output length,
    which sizes the next batch.
    """
    iterator = iter(items)
    size = _FIRST_BATCH
    seen = [0]

    def report(length: int) -> None:
        seen[0] = length

    while True:
        batch = list(itertools.islice(iterator, size))
        if not batch:
            return
        yield batch, report
        if seen[0] > 0:
            per_item = seen[0] / len(batch)
            size = max(1, min(_MAX_BATCH, int(target / per_item)))


def _csv_text(
    rows: Iterable[Sequence[Any] | Mapping[str, Any]],
    header: Sequence[str] | None,
    dialect: str | type[csv.Dialect] | csv.Dialect,
    target: int,
) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, dialect)
    dict_writer = None if header is None else csv.DictWriter(buffer, header, dialect=dialect)
    if header is not None:
        writer.writerow(header)
    for batch, report in _batches(rows, target):
        if isinstance(batch[0], Mapping):
            if dict_writer is None:
                raise TypeError("stream_csv: rows that are dicts need header=[field names]")
            dict_writer.writerows(batch)
        else:
            writer.writerows(batch)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        report(len(text))
        yield text


def stream_csv(
    rows: Iterable[Sequence[Any] | Mapping[str, Any]],
    *,
    header: Sequence[str] | None = None,
    dialect: str | type[csv.Dialect] | csv.Dialect = "excel",
    filename: str | None = None,
    **kwargs: Any,
) -> StreamingResponse:
    """Stream ``rows`` as CSV, formatted by Python's ``csv`` module.

    Rows are sequences, or dicts when ``header`` names the fields (it is also
    written as the first line). ``dialect`` is any ``csv`` dialect. Other
    keyword arguments are :func:`stream_response`'s.
    """
    csv.writer(io.StringIO(), dialect)  # a bad dialect fails here, in the view
    kwargs.setdefault("name", stream_name(sys._getframe(1)))
    kwargs.setdefault("content_type", "text/csv; charset=utf-8")
    target = kwargs.get("chunk_size") or conf.STREAMER_CHUNK_SIZE
    return stream_response(_csv_text(rows, header, dialect, target), filename=filename, **kwargs)


def _encoder(encoder: type[json.JSONEncoder]) -> Any:
    if not (isinstance(encoder, type) and issubclass(encoder, json.JSONEncoder)):
        raise TypeError(f"encoder must be a json.JSONEncoder subclass, not {encoder!r}")
    return encoder(ensure_ascii=False, separators=(",", ":")).encode


def _jsonl_text(objects: Iterable[Any], encode: Any, target: int) -> Iterator[str]:
    for batch, report in _batches(objects, target):
        text = "\n".join(map(encode, batch)) + "\n"
        report(len(text))
        yield text


def _array_text(objects: Iterable[Any], encode: Any, target: int) -> Iterator[str]:
    # The closing bracket goes out only after the last object: a failure on
    # the way leaves "[...," on the wire, which no JSON parser accepts.
    opening = "["
    for batch, report in _batches(objects, target):
        text = opening + ",".join(map(encode, batch))
        opening = ","
        report(len(text))
        yield text
    yield "[]" if opening == "[" else "]"


def stream_jsonl(
    objects: Iterable[Any], *, encoder: type[json.JSONEncoder] = DjangoJSONEncoder, **kwargs: Any
) -> StreamingResponse:
    """Stream ``objects`` as JSON Lines (NDJSON): one compact JSON value per line."""
    kwargs.setdefault("name", stream_name(sys._getframe(1)))
    kwargs.setdefault("content_type", "application/x-ndjson; charset=utf-8")
    return _json_response(_jsonl_text, objects, encoder, kwargs)


def stream_json_array(
    objects: Iterable[Any], *, encoder: type[json.JSONEncoder] = DjangoJSONEncoder, **kwargs: Any
) -> StreamingResponse:
    """Stream ``objects`` as one JSON array; a failure on the way leaves it invalid."""
    kwargs.setdefault("name", stream_name(sys._getframe(1)))
    kwargs.setdefault("content_type", "application/json; charset=utf-8")
    return _json_response(_array_text, objects, encoder, kwargs)


def _json_response(
    text: Callable[[Iterable[Any], Any, int], Iterator[str]],
    objects: Iterable[Any],
    encoder: type[json.JSONEncoder],
    kwargs: dict[str, Any],
) -> StreamingResponse:
    encode = _encoder(encoder)
    target = kwargs.get("chunk_size") or conf.STREAMER_CHUNK_SIZE
    return stream_response(text(objects, encode, target), **kwargs)
