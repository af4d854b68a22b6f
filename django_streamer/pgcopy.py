"""CSV straight from PostgreSQL: a QuerySet's own SQL run inside ``COPY ... TO STDOUT``.

The database writes the CSV and psycopg 3 hands over its blocks as they come,
so no Python object is made per value (issue 25 and ``bench/export.py`` have
the figures). ``stream_csv()`` takes this path for a ``values_list()``
QuerySet on PostgreSQL, unless ``copy=False`` or the output could differ from
the ORM path's: docs/exports.md says what the two paths write.

The statement is built in the view (no query runs there); the COPY runs when
the first chunk is made. A client that leaves closes the generator inside the
``copy()`` block, and psycopg then cancels the COPY on the server.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import QuerySet

from .querysets import compiled, values_list_queryset

__all__ = ["copy_csv"]

_Dialect = str | type[csv.Dialect] | csv.Dialect


def copy_csv(
    rows: object,
    *,
    header: Sequence[str] | None,
    dialect: _Dialect,
    bom: bool,
    utf8: bool,
) -> Iterator[bytes] | None:
    """The CSV of ``rows`` from COPY, or None where the ORM path must write it.

    Only for ``values_list()`` tuples: model rows are refused by the ORM path,
    and dict rows are ordered by the header there.
    """
    if not (utf8 and values_list_queryset(rows) and _on_psycopg3(rows)):
        return None
    options = _options(csv.get_dialect(dialect) if isinstance(dialect, str) else dialect)
    if options is None:
        return None
    try:
        fields = compiled(rows)[2]
    except EmptyResultSet:  # e.g. filter(id__in=[]): no SQL at all, the ORM path writes nothing
        return None
    if not _zone_mappable(rows.db, fields):
        return None
    head = ("\ufeff" if bom else "") + _header_line(header, options)
    return _blocks(rows, options, head.encode())


def _on_psycopg3(queryset: QuerySet[Any]) -> bool:
    if connections[queryset.db].vendor != "postgresql":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return is_psycopg3


def _zone_mappable(alias: str, fields: Sequence[Any]) -> bool:
    """Whether the timestamps can be written as the ORM path writes them (see below).

    Not under ``USE_TZ`` with DATABASES' ``TIME_ZONE`` set: offsets such as +05:30.
    """
    if not any(field.get_internal_type() == "DateTimeField" for field in fields):
        return True
    return not settings.USE_TZ or connections[alias].timezone_name == "UTC"


def _options(dialect: Any) -> tuple[str, str] | None:
    """The dialect as COPY's DELIMITER and QUOTE, if COPY writes what ``csv`` would."""
    delimiter, quote = dialect.delimiter, dialect.quotechar
    if (
        dialect.quoting != csv.QUOTE_MINIMAL
        or not dialect.doublequote
        or dialect.escapechar is not None
        or quote is None
        or delimiter == quote
        or delimiter in "\r\n\\"
        or quote in "\r\n\\"
    ):
        return None
    return delimiter, quote


def _header_line(header: Sequence[str] | None, options: tuple[str, str]) -> str:
    if header is None:
        return ""
    # COPY ends its lines with \n: so does the header, for one line ending.
    writer = csv.writer(_Line(), delimiter=options[0], quotechar=options[1], lineterminator="\n")
    line: str = writer.writerow(header)
    return line


class _Line:
    write = str  # writerow() returns the line (as core/rows.py's _Echo)


def _statement(
    queryset: QuerySet[Any], options: tuple[str, str], *, iso_dates: bool
) -> tuple[str, list[Any]]:
    sql, params, fields = compiled(queryset)
    names = [f"c{i}" for i in range(len(fields))]
    cells = ", ".join(_as_orm_writes(field, f"c{i}", iso_dates) for i, field in enumerate(fields))
    statement = (
        f"COPY (SELECT {cells} FROM ({sql}) AS streamer_rows({', '.join(names)})) "
        "TO STDOUT WITH (FORMAT csv, DELIMITER %s, QUOTE %s)"
    )
    return statement, [*params, *options]


def _as_orm_writes(field: Any, column: str, iso_dates: bool) -> str:
    """A column as ``str()`` of its Python value writes it, where PostgreSQL's text differs.

    Only cheap casts: ``to_char()`` on every timestamp halved COPY's speed.
    """
    kind = field.get_internal_type()
    if kind == "BooleanField":  # t / f otherwise
        return f"CASE WHEN {column} THEN 'True' WHEN NOT {column} THEN 'False' END"
    if kind == "DateField" and not iso_dates:  # the session's DateStyle is not ISO
        return f"to_char({column}, 'YYYY-MM-DD')"
    if kind == "DateTimeField":
        # In UTC (USE_TZ): 2026-12-07 14:23:33.5+00 becomes ...33.5+00:00. Without
        # USE_TZ, the naive local time. Fractions stay trimmed (docs/exports.md).
        return f"{column}::text || ':00'" if settings.USE_TZ else f"{column}::timestamp::text"
    if kind == "JSONField":  # JSON null is None to the ORM: an empty cell, not "null"
        return f"NULLIF({column}::text, 'null')"
    return column


def _blocks(queryset: QuerySet[Any], options: tuple[str, str], head: bytes) -> Iterator[bytes]:
    if head:
        yield head
    connection = connections[queryset.db]
    with connection.wrap_database_errors:
        connection.ensure_connection()
        # Reported by the server with every connection: no query to ask.
        date_style = connection.connection.info.parameter_status("DateStyle") or ""
    statement, params = _statement(queryset, options, iso_dates=date_style.startswith("ISO"))
    with (
        connection.wrap_database_errors,
        connection.cursor() as cursor,
        cursor.copy(statement, params) as copy,
    ):
        for block in copy:  # one row a block, as libpq gives them
            yield bytes(block)
