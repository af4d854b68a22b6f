"""The Prometheus endpoint."""

from __future__ import annotations

import hmac
import logging

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse

from .conf import NOT_INSTALLED, conf, is_installed
from .extras import missing
from .keys import client_ip, in_networks


def token_matches(given: str, token: str) -> bool:
    """Constant-time comparison of bytes: a non-ASCII token is its UTF-8 bytes.

    WSGI servers and Django's ASGI handler decode header bytes as latin-1, so
    encoding back to latin-1 recovers the bytes the client sent; a str from
    elsewhere (the test client) is taken as UTF-8. Either way only the token's
    own bytes match, and both comparisons always run.
    """
    expected = token.encode("utf-8")
    try:
        sent = given.encode("latin-1")
    except UnicodeEncodeError:
        sent = b""
    on_wire = hmac.compare_digest(sent, expected)
    as_text = hmac.compare_digest(given.encode("utf-8"), expected)
    return on_wire or as_text


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
        if scheme.lower() != "bearer" or not token_matches(given.strip(), token):
            response = HttpResponse("A bearer token is required.\n", status=401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    allowed = conf.STREAMER_METRICS_ALLOW
    # An unusable proxy entry ("unknown", empty) is in no network: it fails closed.
    if allowed is not None and not in_networks(client_ip(request), allowed):
        return HttpResponse("Forbidden.\n", status=403)
    return None


def metrics(request: HttpRequest) -> HttpResponse:
    """Every django-streamer figure, host-wide, in the Prometheus text format
    (or OpenMetrics when the ``Accept`` header asks for it)."""
    if not is_installed():
        # Without the app nothing records: an empty 200 would look like a quiet site.
        raise ImproperlyConfigured(NOT_INSTALLED)
    denied = access_denied(request)
    if denied is not None:
        return denied
    problem = missing("prometheus_client")
    if problem is not None:  # check E011 says so too
        message = f"The metrics endpoint needs {problem}"
        logging.getLogger("django_streamer").error(message)
        return HttpResponse(f"{message}\n", status=500, content_type="text/plain")
    from .metrics import render

    openmetrics = "application/openmetrics-text" in request.headers.get("Accept", "")
    body, content_type = render(openmetrics)
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
