"""QuerySets given to the factories: read in chunks, never into their result cache."""

from __future__ import annotations

import csv
import io
import zipfile
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db.models.query import ValuesListIterable

from django_streamer import stream_csv, stream_json_array, stream_jsonl, stream_response, stream_zip
from django_streamer.querysets import json_columns, values_list_queryset
from tests.exportapp.models import Order

pytestmark = pytest.mark.django_db


@pytest.fixture
def users():
    User.objects.bulk_create(User(username=f"user{i}") for i in range(5))
    return User.objects.order_by("id")


@pytest.mark.parametrize(
    ("factory", "rows", "start"),
    [
        (stream_csv, lambda qs: qs.values_list("username"), b"user0\r\n"),
        (stream_jsonl, lambda qs: qs.values("username"), b'{"username":"user0"}\n'),
        (stream_json_array, lambda qs: qs.values_list("username", flat=True), b'["user0",'),
        (stream_response, lambda qs: qs.values_list("username", flat=True), b"user0user1"),
    ],
)
def test_a_queryset_is_read_with_its_iterator_not_its_result_cache(users, factory, rows, start):
    given = rows(users)
    body = b"".join(factory(given))
    assert body.startswith(start) and body.count(b"user4") == 1, body
    # Iterating the QuerySet itself fills this cache with every row before the first byte.
    assert given._result_cache is None


def test_a_zip_member_reads_its_queryset_in_chunks(users):
    lines = users.values_list("username", flat=True)
    archive = zipfile.ZipFile(io.BytesIO(b"".join(stream_zip([("names.txt", lines)]))))
    assert archive.read("names.txt") == b"user0user1user2user3user4"
    assert lines._result_cache is None


def test_copy_off_postgresql_is_the_orm_path():
    Order.objects.create(customer='a "b"', total=Decimal("1.50"), paid=True, data={"k": [1]})
    rows = Order.objects.values_list("customer", "total", "paid", "data")
    assert b"".join(stream_csv(rows)) == b"".join(stream_csv(rows, copy=False))
    # JSON as JSON text (as PostgreSQL's COPY writes it), not Python's repr.
    assert b"".join(stream_csv(rows)) == b'"a ""b""",1.50,True,"{""k"": [1]}"\r\n'


def test_copy_must_be_a_bool():
    with pytest.raises(ValueError, match=r"stream 'export': copy must be True or False"):
        stream_csv([], copy="yes", name="export")  # type: ignore[arg-type]


def test_the_django_api_exports_rely_on():
    # pgcopy.py and the JSON columns tell a values_list() QuerySet by its
    # private _iterable_class: this fails if Django renames it.
    assert issubclass(User.objects.values_list("id")._iterable_class, ValuesListIterable)
    assert values_list_queryset(User.objects.values_list("id", named=True))
    assert not values_list_queryset(User.objects.values("id"))
    assert not values_list_queryset(User.objects.values_list("id", flat=True))
    assert json_columns(Order.objects.values_list("id", "data", "customer", "data")) == [1, 3]
    assert json_columns(Order.objects.none().values_list("data")) == []


@pytest.mark.parametrize(
    ("dialect", "options"),
    [
        ("excel", (",", '"')),
        ("excel-tab", ("\t", '"')),
        ("unix", None),  # QUOTE_ALL
        (type("Semi", (csv.excel,), {"delimiter": ";", "quotechar": "'"}), (";", "'")),
        (type("Escaped", (csv.excel,), {"doublequote": False, "escapechar": "\\"}), None),
        (type("Backslash", (csv.excel,), {"delimiter": "\\"}), None),
    ],
)
def test_copy_takes_the_dialects_it_writes_alike(dialect, options):
    from django_streamer.pgcopy import _options

    assert _options(csv.get_dialect(dialect) if isinstance(dialect, str) else dialect) == options
