"""Cluster-scope views, routed only where a test asks (``STREAMER_TEST_URLCONF``)."""

from __future__ import annotations

import time

from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.urls import path

from django_streamer import limit_concurrency

from .urls import urlpatterns as base_patterns
from .views import event, stream_view


def _admitted(request: HttpRequest) -> HttpResponseBase:
    # CLOCK_MONOTONIC is one clock for every process of the machine.
    event(f"admitted {request.GET.get('tag', '-')} {time.monotonic():.6f}")
    return stream_view(request)


@limit_concurrency(3, scope="cluster", name="c-reject")
def cluster_reject(request: HttpRequest) -> HttpResponseBase:
    return _admitted(request)


@limit_concurrency(1, scope="cluster", name="c-wait", on_limit="wait", timeout=10)
def cluster_wait(request: HttpRequest) -> HttpResponseBase:
    return _admitted(request)


@limit_concurrency(1, scope="cluster", name="c-wait-async", on_limit="wait", timeout=10)
async def cluster_wait_async(request: HttpRequest) -> HttpResponseBase:
    return _admitted(request)


urlpatterns = [
    *base_patterns,
    path("cluster/reject/", cluster_reject),
    path("cluster/wait/", cluster_wait),
    path("cluster/wait-async/", cluster_wait_async),
]
