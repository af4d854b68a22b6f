"""Views for the export server tests (tests/test_export_server.py)."""

from __future__ import annotations

import resource

from django.db.models import F, Value
from django.http import HttpResponse
from django.urls import include, path

from django_streamer import limit_concurrency, stream_csv, stream_jsonl
from tests.exportapp.models import Order

FIELDS = ["id", "customer", "total", "placed", "day", "ref", "data", "paid"]


def orders_csv(request):
    orders = Order.objects.order_by("id")
    if "limit" in request.GET:
        orders = orders.filter(id__lte=int(request.GET["limit"]))
    fields = request.GET["fields"].split(",") if "fields" in request.GET else FIELDS
    if "fail_at" in request.GET:  # division by zero at that row, in the database
        orders = orders.annotate(fail=Value(1) / (F("id") - int(request.GET["fail_at"])))
        fields = [*fields, "fail"]
    return stream_csv(
        orders.values_list(*fields),
        header=fields,
        copy=request.GET.get("copy") != "0",
        dialect=request.GET.get("dialect", "excel"),
        filename="orders.csv",
    )


def orders_jsonl(request):
    return stream_jsonl(Order.objects.order_by("id").values(*FIELDS))


@limit_concurrency(1)  # the slot lasts as long as the COPY's stream
def orders_limited(request):
    return stream_csv(Order.objects.order_by("id").values_list("id", "customer"))


async def orders_jsonl_async(request):
    # On the event loop: the QuerySet is read with aiterator(), never on the loop itself.
    return stream_jsonl(Order.objects.order_by("id").values(*FIELDS))


def peak_rss(request):
    """The worker's peak resident memory, in KiB."""
    return HttpResponse(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


urlpatterns = [
    path("orders.csv", orders_csv),
    path("orders.jsonl", orders_jsonl),
    path("orders-async.jsonl", orders_jsonl_async),
    path("limited.csv", orders_limited),
    path("rss", peak_rss),
    path("streaming/", include("django_streamer.urls")),
]
