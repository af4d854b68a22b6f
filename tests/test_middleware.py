"""StreamerMiddleware: the first chunk in Django's error handling, not posing as a template."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.test import override_settings

from django_streamer.checks import check_settings
from django_streamer.testing import fetch

from .conftest import call_asgi, start_gunicorn, start_uvicorn, stop_gunicorn, wsgi_iter

PROJECT_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    f"{__name__}.SiteContextMiddleware",
    "django_streamer.middleware.StreamerMiddleware",
]


class SiteContextMiddleware:
    """What Django documents for ``TemplateResponse``: add to ``context_data`` after the view."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        return self.get_response(request)

    def process_template_response(self, request: HttpRequest, response: Any) -> Any:
        response.context_data["site_name"] = "example"
        return response


@override_settings(MIDDLEWARE=PROJECT_MIDDLEWARE)
def test_a_context_data_middleware_leaves_streams_alone_under_wsgi():
    status, _, body = wsgi_iter("/stream/?kind=sync&items=3&size=10")
    assert status.startswith("200")
    assert b"".join(body) == b"xxxxxxxxx\n" * 3
    body.close()


@override_settings(MIDDLEWARE=PROJECT_MIDDLEWARE)
def test_a_context_data_middleware_leaves_streams_alone_under_asgi():
    for kind in ("sync", "async"):
        result = asyncio.run(call_asgi(f"/stream/?kind={kind}&items=3&size=10"))
        assert (result.status, result.ended) == (200, True), (kind, result.error)
        assert result.body == b"xxxxxxxxx\n" * 3


@override_settings(MIDDLEWARE=PROJECT_MIDDLEWARE, ROOT_URLCONF="tests.urls_handler500")
def test_a_failure_before_the_first_byte_still_reaches_handler500():
    status, _, body = wsgi_iter("/stream/?kind=int")
    assert (status[:3], b"".join(body)) == ("500", b"handler500 ran")
    result = asyncio.run(call_asgi("/stream/?kind=int"))
    assert (result.status, result.body) == (500, b"handler500 ran")


@pytest.mark.server
@pytest.mark.parametrize("model", ["gthread", "asgi", "uvicorn"])
def test_a_context_data_middleware_leaves_streams_alone_on_the_wire(tmp_path, model):
    env = {"STREAMER_TEST_MIDDLEWARE": f"{__name__}.SiteContextMiddleware"}
    if model == "uvicorn":
        server = start_uvicorn(tmp_path, env=env)
    else:
        server = start_gunicorn(tmp_path, model, env=env)
    try:
        wire = fetch(server.host, server.port, "/stream/?kind=sync&items=3&size=10")
        assert (wire.status, wire.complete) == (200, True), wire.body[:300]
        assert wire.body == b"xxxxxxxxx\n" * 3
        failed = fetch(server.host, server.port, "/stream/?kind=int")
        assert failed.status == 500 and b"<h1>Server Error (500)</h1>" in failed.body
    finally:
        stop_gunicorn(server)


def test_w007_without_the_middleware():
    with override_settings(MIDDLEWARE=PROJECT_MIDDLEWARE[:2]):
        messages = check_settings()
    assert [m.id for m in messages] == ["django_streamer.W007"]
    assert "StreamerMiddleware" in str(messages[0].hint)


def test_django_private_api_we_still_rely_on():
    # slots.hold_until_done ties a limiter slot to a response that is not ours
    # through Django's list of closers (docs/architecture.md, "Private Django
    # API"). If this fails, Django changed it: find the new way there.
    ran: list[str] = []
    for response in (HttpResponse(b"x"), StreamingHttpResponse(iter([b"x"]))):
        closers = response._resource_closers  # type: ignore[union-attr]
        assert isinstance(closers, list)
        closers.append(lambda: ran.append("closed"))
        response.close()
    assert ran == ["closed", "closed"]
