"""``StreamerMiddleware``: make a stream's first chunk inside Django's error handling.

Django turns an exception raised in a middleware's ``__call__`` into its
normal 500 response (``got_request_exception``, the ``django.request`` log,
``handler500``), as it does for a view's. Making the first chunk here, right
after the view, gives a source that fails before its first byte that path,
without the response posing as a ``TemplateResponse``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.http.response import HttpResponseBase

from .context import CurrentRequestMiddleware
from .response import StreamingResponse

__all__ = ["StreamerMiddleware"]


class StreamerMiddleware(CurrentRequestMiddleware):
    """Make each stream's first chunk before its headers go; know the current request.

    Put it last in ``MIDDLEWARE``, below anything that wraps a response's
    content (``GZipMiddleware``), so the first chunk is made before the wrap.
    """

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._aprime(request)
        response = super().__call__(request)
        if isinstance(response, StreamingResponse):
            response.prime()
        return response

    async def _aprime(self, request: HttpRequest) -> HttpResponseBase:
        response = await super()._acall(request)
        if isinstance(response, StreamingResponse):
            await response.aprime()
        return response
