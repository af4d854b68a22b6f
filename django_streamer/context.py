"""Which request (and so which view) a stream belongs to.

A stream is named after the view that serves it and shows the request's path
in the active-streams table. Both come from the request that
:class:`CurrentRequestMiddleware` (and so ``StreamerMiddleware``) put in
:data:`current_request`, explicitly: nothing inspects the caller's frames. The
name is the *resolved view* (``request.resolver_match``), so a helper function
that calls ``stream_response()`` for a view does not become the name, and a
class-based view is named after its class. Without the middleware, or outside
a request, a stream is :data:`UNNAMED` unless given ``name=``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest
from django.http.response import HttpResponseBase

current_request: contextvars.ContextVar[HttpRequest | None] = contextvars.ContextVar(
    "django_streamer_current_request", default=None
)

UNNAMED = "unnamed"  # a stream with no name= and no request to name it after


class CurrentRequestMiddleware:
    """Makes the request known to ``stream_response()`` (its name, its path)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self.is_async:
            return self._acall(request)
        token = current_request.set(request)
        try:
            response: HttpResponseBase = self.get_response(request)
            return response
        finally:
            current_request.reset(token)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        token = current_request.set(request)
        try:
            response: HttpResponseBase = await self.get_response(request)
            return response
        finally:
            current_request.reset(token)


@contextlib.contextmanager
def serving(request: HttpRequest) -> Iterator[HttpRequest]:
    """Make ``request`` the current one in this block, as the middleware does for a view.

    For code that makes streams outside a request's middleware: tests, a
    management command that renders a response.
    """
    token = current_request.set(request)
    try:
        yield request
    finally:
        current_request.reset(token)


def view_name(request: HttpRequest | None) -> str | None:
    """The resolved view's dotted path (the class for a class-based view), if resolved."""
    match = getattr(request, "resolver_match", None)
    if match is None:
        return None
    func = match.func
    target = getattr(func, "view_class", None) or func
    qualname = getattr(target, "__qualname__", None)
    if qualname is None:  # a callable instance, a functools.partial
        target = type(target)
        qualname = target.__qualname__
    return f"{target.__module__}.{qualname}"


def stream_name() -> str:
    """The name a stream gets without ``name=``: the current request's resolved view.

    One rule for ``stream_response()`` and every factory built on it.
    """
    return view_name(current_request.get()) or UNNAMED
