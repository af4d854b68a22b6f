"""The five ways bench/export.py compares to export the orders table as CSV."""

from __future__ import annotations

import csv
import resource
from collections.abc import Iterator

from django.db import connection
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import path

from django_streamer import stream_csv, stream_response
from tests.exportapp.models import Order

FIELDS = ["id", "customer", "total", "placed", "day", "ref", "paid"]


class Echo:
    def write(self, value: str) -> str:
        return value


def echo(request):
    """The Django docs' recipe ("Streaming large CSV files"), over .iterator()."""
    writer = csv.writer(Echo())
    rows = Order.objects.order_by("id").values_list(*FIELDS).iterator()
    return StreamingHttpResponse((writer.writerow(row) for row in rows), content_type="text/csv")


def djqscsv(request):
    from djqscsv import render_to_csv_response

    rows = Order.objects.order_by("id").values(*FIELDS)
    return render_to_csv_response(rows, streaming=True)


def orm(request):
    return stream_csv(Order.objects.order_by("id").values_list(*FIELDS), copy=False)


def copy(request):
    return stream_csv(Order.objects.order_by("id").values_list(*FIELDS))


def _raw_copy() -> Iterator[bytes]:
    select = f"SELECT {', '.join(FIELDS)} FROM exportapp_order ORDER BY id"
    with connection.cursor() as cursor, cursor.copy(f"COPY ({select}) TO STDOUT WITH CSV") as out:
        for block in out:
            yield bytes(block)


def raw(request):
    """PostgreSQL's own CSV, passed through: the ceiling."""
    return stream_response(_raw_copy(), content_type="text/csv")


def peak_rss(request):
    return HttpResponse(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


urlpatterns = [
    path("echo", echo),
    path("djqscsv", djqscsv),
    path("orm", orm),
    path("copy", copy),
    path("raw", raw),
    path("rss", peak_rss),
]
