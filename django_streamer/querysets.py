"""QuerySets as sources: read in chunks with a server-side cursor, never loaded whole.

Iterating a QuerySet fills its result cache: every row is held before the first
byte goes (300,000 users: +154 MiB of worker memory, issue 25). Every factory
that takes rows or items hands a QuerySet here first.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeGuard

from django.core.exceptions import EmptyResultSet
from django.db.models import Field, QuerySet
from django.db.models.query import ValuesListIterable

__all__ = [
    "QUERYSET_CHUNK_SIZE",
    "compiled",
    "json_columns",
    "rows_of",
    "sync_rows_of",
    "values_list_queryset",
]

# Rows fetched per round trip: Django's own default for iterator(). On
# PostgreSQL it is the server-side cursor's fetch size; elsewhere the number
# of rows the driver hands over at a time. A few hundred kB of rows at most.
QUERYSET_CHUNK_SIZE = 2000


def sync_rows_of(source: object) -> object:
    """``source``, or a QuerySet's ``iterator()``; nothing runs until it is read."""
    if isinstance(source, QuerySet):
        return source.iterator(chunk_size=QUERYSET_CHUNK_SIZE)
    return source


def rows_of(source: object) -> object:
    """As :func:`sync_rows_of`, but on an event loop (an async view) a QuerySet's
    ``aiterator()``: its fetches then run on a thread, never on the loop."""
    if isinstance(source, QuerySet) and _in_event_loop():
        return source.aiterator(chunk_size=QUERYSET_CHUNK_SIZE)
    return sync_rows_of(source)


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def values_list_queryset(source: object) -> TypeGuard[QuerySet[Any]]:
    """Whether ``source`` is a QuerySet of ``values_list()`` tuples.

    ``_iterable_class`` is private, and the only way to tell
    (tests/test_export.py::test_the_django_api_exports_rely_on).
    """
    return isinstance(source, QuerySet) and issubclass(source._iterable_class, ValuesListIterable)


def compiled(queryset: QuerySet[Any]) -> tuple[str, tuple[Any, ...], list[Field[Any, Any]]]:
    """The SQL of ``queryset``, its parameters and its columns' fields; runs no query.

    Raises ``EmptyResultSet`` when no SQL is needed (``filter(id__in=[])``).
    """
    compiler = queryset.query.get_compiler(using=queryset.db)
    sql, params = compiler.as_sql()
    fields = [expression.output_field for expression, _, _ in compiler.select[: compiler.col_count]]
    return sql, tuple(params), fields


def json_columns(source: object) -> list[int]:
    """The JSON columns of a ``values_list()`` QuerySet, by index."""
    if not values_list_queryset(source):
        return []
    try:
        fields = compiled(source)[2]
    except EmptyResultSet:
        return []
    return [index for index, field in enumerate(fields) if field.get_internal_type() == "JSONField"]
