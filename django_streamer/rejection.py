"""What a request turned away by ``@limit_concurrency`` is told."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.utils.module_loading import import_string

from .conf import conf

__all__ = ["Rejection", "RejectionHandler", "render_rejection"]


@dataclass(frozen=True)
class Rejection:
    """What a rejection handler is told. ``pool`` is for logs and metrics, not clients."""

    pool: str
    key: str
    limit: int
    status: int
    retry_after: int | None
    waited: float
    draining: bool = False  # refused because the worker is shutting down, not for the limit


RejectionHandler = Callable[[HttpRequest, Rejection], HttpResponseBase]


def render_rejection(
    request: HttpRequest, rejection: Rejection, handler: RejectionHandler | None
) -> HttpResponseBase:
    """The rejection response: the decorator's handler, the settings-wide one, or ours.

    Ours names no pool: the default pool name is the view's dotted path, an
    internal name clients have no use for.
    """
    if handler is None and conf.STREAMER_LIMIT_HANDLER:
        handler = import_string(conf.STREAMER_LIMIT_HANDLER)
    if handler is not None:
        result = handler(request, rejection)
    else:
        text = (
            "The server is restarting; try again shortly.\n"
            if rejection.draining
            else "Too many concurrent requests; try again later.\n"
        )
        result = HttpResponse(
            text,
            status=rejection.status,
            content_type="text/plain; charset=utf-8",
        )
    if rejection.retry_after is not None and not result.has_header("Retry-After"):
        result["Retry-After"] = str(rejection.retry_after)
    return result
