"""Which request (and so which view) a stream belongs to.

A stream is named after the view that serves it and shows the request's path
in the active-streams table. Both come from the request: the one
:class:`CurrentRequestMiddleware` put in :data:`current_request`, or else the
nearest ``request`` found in the caller's frames (zero set-up). The name is the
*resolved view* (``request.resolver_match``), so a helper function that calls
``stream_response()`` for a view does not become the name, and a class-based
view is named after its class.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.views import View

current_request: contextvars.ContextVar[HttpRequest | None] = contextvars.ContextVar(
    "django_streamer_current_request", default=None
)

# How far up the caller's frames to look for a request: the view, a helper or
# two, a class-based view's dispatch().
_FRAME_DEPTH = 6


class CurrentRequestMiddleware:
    """Optional: makes the request known to ``stream_response()`` without frame inspection."""

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


def find_request(frame: FrameType | None) -> HttpRequest | None:
    """The current request: the context variable's, or the nearest in the frames."""
    request = current_request.get()
    if request is not None:
        return request
    depth = _FRAME_DEPTH
    while frame is not None and depth:
        local = frame.f_locals
        candidate = local.get("request")
        if isinstance(candidate, HttpRequest):
            return candidate
        owner = local.get("self")
        if isinstance(owner, View) and isinstance(getattr(owner, "request", None), HttpRequest):
            found: HttpRequest = owner.request
            return found
        frame = frame.f_back
        depth -= 1
    return None


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


def frame_name(frame: FrameType) -> str:
    """The calling function's dotted path: the name when no view was resolved."""
    code = frame.f_code
    qualname = getattr(code, "co_qualname", code.co_name)
    return f"{frame.f_globals.get('__name__', '?')}.{qualname}"


def stream_name(frame: FrameType) -> str:
    """The name a stream made from ``frame``'s function gets: the resolved view, else the caller.

    One rule for ``stream_response()`` and every factory built on it.
    """
    return view_name(find_request(frame)) or frame_name(frame)
