"""``@limit_concurrency``: a cap on concurrent responses whose slot lasts as long as the stream.

Keys are in ``keys.py``, the pools in ``pools.py``, a slot's lifetime in
``slots.py`` and the rejection response in ``rejection.py``; this module joins
them around a view.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from . import cluster
from .conf import conf
from .core import validate
from .core.drain import process_drain
from .core.limiter import Adaptive, Gradient, Pool, PoolLease
from .core.metrics.names import check_name
from .core.recorder import StreamRecorder
from .keys import KeyFunc, client_ip, key_function
from .pools import SCOPES, get_pool
from .rejection import Rejection, RejectionHandler, render_rejection
from .response import StreamingResponse
from .slots import LimiterRecorder, Slot, hold_until_done, tell_rejected

__all__ = [
    "Adaptive",
    "LimiterRecorder",
    "Rejection",
    "client_ip",
    "get_pool",
    "limit_concurrency",
    "render_rejection",
]

ViewT = TypeVar("ViewT", bound=Callable[..., Any])


@dataclass(frozen=True)
class _Options:
    """The decorator's arguments, checked once at decoration time."""

    limit: int
    adaptive: Adaptive | None  # "auto" or Adaptive(...): ``limit`` is where it starts
    key_of: KeyFunc | None
    scope: str
    wait: float | None  # seconds to wait for a slot; None: reject at once
    status: int
    retry_after: int | None
    handler: RejectionHandler | None


def _options(limit: object, **kw: Any) -> _Options:
    what = "limit_concurrency: "
    if limit is None or (callable(limit) and not isinstance(limit, int)):
        raise TypeError(
            "limit_concurrency needs a limit: write @limit_concurrency(10), "
            "not a bare @limit_concurrency"
        )
    validate.one_of(kw["scope"], SCOPES, what=what + "scope")
    adaptive = _adaptive(limit, kw["scope"])
    if adaptive is not None:
        limit = adaptive.initial
    validate.one_of(kw["on_limit"], ("reject", "wait"), what=what + "on_limit")
    timeout = kw["timeout"]
    if timeout is not None:
        timeout = validate.non_negative_number(timeout, what=what + "timeout")
    if kw["on_limit"] == "wait" and timeout is None:
        raise ValueError(what + "on_limit='wait' needs a timeout (seconds to wait for a slot)")
    status = validate.positive_int(kw["status"], what=what + "status")
    if not 400 <= status <= 599:
        raise ValueError(f"{what}status must be a 4xx or 5xx code, not {status!r}")
    retry_after = kw["retry_after"]
    if retry_after is not None:
        retry_after = validate.whole_seconds(retry_after, what=what + "retry_after")
    if kw["response"] is not None and not callable(kw["response"]):
        raise ValueError(what + "response must be a callable (request, rejection)")
    return _Options(
        limit=validate.positive_int(limit, what=what + "limit"),
        adaptive=adaptive,
        key_of=key_function(kw["key"]),
        scope=kw["scope"],
        wait=timeout if kw["on_limit"] == "wait" else None,
        status=status,
        retry_after=retry_after,
        handler=kw["response"],
    )


def _adaptive(limit: object, scope: str) -> Adaptive | None:
    if limit == "auto":
        limit = Adaptive()
    if not isinstance(limit, Adaptive):
        return None
    if scope == "cluster":
        # Each host sees its own latency; one cluster-wide limit would need the
        # hosts to agree on it. A host-scope "auto" on every host does the same job.
        raise ValueError(
            "limit_concurrency: an adaptive limit works with scope='process' or 'host', "
            "not 'cluster'"
        )
    return limit


class _FirstByte(StreamRecorder):
    """Tells the gradient a stream's time to first byte, at its first chunk."""

    def __init__(self, limiter: _Limiter, pool: Pool, key: str, started: float) -> None:
        self.limiter, self.pool, self.key, self.started = limiter, pool, key, started

    def chunk(self, nbytes: int) -> None:
        limiter = self.limiter
        if limiter is not None:
            self.limiter = None  # type: ignore[assignment]  # once per stream
            limiter.learn(self.pool, self.key, time.monotonic() - self.started)


class _Limiter:
    """What ``inner`` and ``ainner`` share: the key, the pool, rejection, admission."""

    def __init__(self, options: _Options, pool_name: str) -> None:
        self.options = options
        self.pool_name = pool_name
        self.waits = options.wait is not None
        self.timeout = options.wait or 0.0
        # Neither a wait nor Redis: ``inner`` calls ``pool.try_acquire`` itself.
        self.at_once = not self.waits and options.scope != "cluster"
        self._pool: Pool | None = None
        self.gradient = None if options.adaptive is None else Gradient(options.adaptive)

    def learn(self, pool: Pool, key: str, seconds: float) -> None:
        """A sample of time to first byte moves an adaptive limit (process-wide, per pool)."""
        if self.gradient is not None:
            pool.limit = self.gradient.sample(seconds, in_use=pool.in_use(key))

    def watch(self, response: Any, pool: Pool, key: str, started: float) -> Any:
        """An adaptive limit learns from this response: a stream at its first chunk."""
        if self.gradient is None:
            return response
        if isinstance(response, StreamingResponse):
            response.add_recorder(_FirstByte(self, pool, key, started))
        else:  # the view made the whole body
            self.learn(pool, key, time.monotonic() - started)
        return response

    def enter(
        self, args: tuple[Any, ...]
    ) -> tuple[HttpRequest, Pool, str | None, HttpResponseBase | None]:
        """The request, the pool, the slot key (None: this request is not limited)
        and the refusal to answer with at once (the worker is draining), if any.
        """
        request = args[0] if args and isinstance(args[0], HttpRequest) else _find_request(args)
        key_of = self.options.key_of
        key = "" if key_of is None else key_of(request)
        pool = self._pool
        if pool is None:  # settings are read on first use, not at import
            pool = self._pool = get_pool(self.options.scope, self.pool_name, self.options.limit)
        if key is None:
            return request, pool, None, None
        if process_drain.refusing:  # one attribute read per request
            return request, pool, str(key), self.reject(request, pool, str(key), draining=True)
        return request, pool, str(key), None

    def reject(
        self, request: HttpRequest, pool: Pool, key: str, *, draining: bool = False
    ) -> HttpResponseBase:
        o = self.options
        retry_after = conf.STREAMER_RETRY_AFTER if o.retry_after is None else o.retry_after
        rejection = Rejection(
            pool=pool.name,
            key=key,
            limit=o.limit,
            # A drain is a server condition, whatever the view's own status
            # for "too many": 503, and always a Retry-After (another worker
            # takes over within seconds).
            status=503 if draining else o.status,
            retry_after=(retry_after or 1) if draining else retry_after,
            waited=0.0 if draining else self.timeout,
            draining=draining,
        )
        tell_rejected(pool, rejection)
        return render_rejection(request, rejection, o.handler)

    def take(self, pool: Pool, key: str) -> PoolLease | None:
        if self.options.scope == "cluster":  # the queue lives in Redis; 0 tries once
            return cluster.acquire(pool, key, timeout=self.timeout)
        if self.waits:
            return pool.acquire(key, timeout=self.timeout)
        return pool.try_acquire(key)

    async def atake(self, pool: Pool, key: str) -> PoolLease | None:
        if self.options.scope == "cluster":
            return await cluster.aacquire(pool, key, timeout=self.timeout)
        if self.waits:
            return await pool.aacquire(key, timeout=self.timeout)
        return pool.try_acquire(key)


def _find_request(args: tuple[Any, ...]) -> HttpRequest:
    # A function view gets (request, ...); dispatch() decorated directly gets
    # (self, request, ...); method_decorator passes (request, ...).
    for arg in args[:2]:  # (args[0] is tried inline first)
        if isinstance(arg, HttpRequest):
            return arg
    raise TypeError("limit_concurrency: the decorated view got no HttpRequest argument")


def limit_concurrency(
    limit: int | str | Adaptive | None = None,
    *,
    key: str | KeyFunc | None = None,
    scope: str = "process",
    on_limit: str = "reject",
    timeout: float | None = None,
    name: str | None = None,
    status: int = 503,
    retry_after: int | None = None,
    response: RejectionHandler | None = None,
) -> Callable[[ViewT], ViewT]:
    """Cap concurrent responses of a view at ``limit`` per key.

    ``limit="auto"`` (or ``Adaptive(min=..., max=...)``) finds the concurrency
    at which the view's time to first byte starts to grow, and holds it there
    (process and host scope; see ``docs/limiting.md``).

    The slot is held from admission until the response is done (the stream
    completed, failed or was aborted, or the server closed the response); if
    the view raises, at once. See the README for every argument.
    """
    options = _options(
        limit,
        key=key,
        scope=scope,
        on_limit=on_limit,
        timeout=timeout,
        status=status,
        retry_after=retry_after,
        response=response,
    )

    def decorator(view: ViewT) -> ViewT:
        pool_name = name or f"{view.__module__}.{view.__qualname__}"
        check_name(pool_name, what="limit_concurrency: pool")
        wrapper = _wrap(view, _Limiter(options, pool_name))
        wrapper.limit_pool_name = pool_name
        wrapper.limit_scope = options.scope
        return cast(ViewT, wrapper)

    return decorator


def _wrap(view: Any, limiter: _Limiter) -> Any:
    if iscoroutinefunction(view):

        async def ainner(*args: Any, **kwargs: Any) -> Any:
            request, pool, key, refused = limiter.enter(args)
            if refused is not None:
                return refused
            if key is None:
                return await view(*args, **kwargs)
            slot: Slot | None  # get_pool's pools make their leases Slots
            slot = pool.try_acquire(key) if limiter.at_once else await limiter.atake(pool, key)  # type: ignore[assignment]
            if slot is None:
                return limiter.reject(request, pool, key)
            try:
                started = time.monotonic()
                response = limiter.watch(await view(*args, **kwargs), pool, key, started)
                return hold_until_done(response, slot)
            except BaseException:
                slot.release()
                raise

        return markcoroutinefunction(functools.wraps(view)(ainner))

    def inner(*args: Any, **kwargs: Any) -> Any:
        request, pool, key, refused = limiter.enter(args)
        if refused is not None:
            return refused
        if key is None:
            return view(*args, **kwargs)
        slot: Slot | None  # get_pool's pools make their leases Slots
        slot = pool.try_acquire(key) if limiter.at_once else limiter.take(pool, key)  # type: ignore[assignment]
        if slot is None:
            return limiter.reject(request, pool, key)
        try:
            started = time.monotonic()
            response = limiter.watch(view(*args, **kwargs), pool, key, started)
            return hold_until_done(response, slot)
        except BaseException:
            slot.release()
            raise

    return functools.wraps(view)(inner)
