"""The Prometheus endpoint."""

from __future__ import annotations

import hmac
import ipaddress

from django.http import HttpRequest, HttpResponse

from .conf import conf
from .keys import client_ip


def access_denied(request: HttpRequest) -> HttpResponse | None:
    """None when the request may read metrics, else the refusal.

    With STREAMER_METRICS_TOKEN set, ``Authorization: Bearer <token>`` is
    required; with STREAMER_METRICS_ALLOW set, the client address must be in
    it; with both, both. With neither the endpoint is open (check W004 warns
    when DEBUG is off).
    """
    token = conf.STREAMER_METRICS_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), str(token).encode()
        ):
            response = HttpResponse("A bearer token is required.\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    allowed = conf.STREAMER_METRICS_ALLOW
    if allowed is not None:
        try:
            address = ipaddress.ip_address(client_ip(request))
        except ValueError:  # an unusable proxy entry ("unknown", empty): fail closed
            return HttpResponse("Forbidden.\n", status=403)
        if not any(address in ipaddress.ip_network(net, strict=False) for net in allowed):
            return HttpResponse("Forbidden.\n", status=403)
    return None


def metrics(request: HttpRequest) -> HttpResponse:
    """Every django-streamer figure, host-wide, in the Prometheus text format
    (or OpenMetrics when the ``Accept`` header asks for it)."""
    denied = access_denied(request)
    if denied is not None:
        return denied
    from .metrics import render

    openmetrics = "application/openmetrics-text" in request.headers.get("Accept", "")
    body, content_type = render(openmetrics)
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
