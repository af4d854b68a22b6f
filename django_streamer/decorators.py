"""``@limit_concurrency``: a cap on concurrent responses whose slot lasts as long as the stream.

Limiters that release at view return do not limit streams at all: the view
returns before the first byte is sent. Here the slot is released when the
response is done: the stream completed, failed or was aborted, or the server
closed the response (for any response, streaming or not).
"""

from __future__ import annotations

import functools
import ipaddress
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.module_loading import import_string

from . import cluster
from .conf import conf, default_state_dir
from .core.limiter import Backend, HostBackend, Pool, PoolLease, ProcessBackend
from .core.recorder import Outcome, StreamRecorder
from .response import StreamingResponse

ViewT = TypeVar("ViewT", bound=Callable[..., Any])
KeyFunc = Callable[[HttpRequest], "str | None"]

SCOPES = ("process", "host", "cluster")


@dataclass(frozen=True)
class Rejection:
    """What a rejection handler is told."""

    pool: str
    key: str
    limit: int
    status: int
    retry_after: int | None
    waited: float


class LimiterRecorder:
    """Receives limiter events; the metrics registry subclasses it."""

    def admitted(self, pool: Pool, lease: PoolLease) -> None:
        """A request got a slot after waiting ``lease.waited`` seconds."""

    def rejected(self, pool: Pool, rejection: Rejection) -> None:
        """A request was turned away."""

    def released(self, pool: Pool, lease: PoolLease) -> None:
        """A slot was given back."""


# The metrics registry appends itself here in AppConfig.ready().
limiter_recorders: list[LimiterRecorder] = []

# -- backends and pools ----------------------------------------------------

_lock = threading.Lock()
_process_backend = ProcessBackend()
_host_backends: dict[str, HostBackend] = {}
_pools: dict[tuple[str, int, str], Pool] = {}


def backend_for(scope: str) -> Backend:
    if scope == "process":
        return _process_backend
    if scope == "host":
        directory = conf.STREAMER_LIMITER_DIR or default_state_dir("pools")
        with _lock:
            backend = _host_backends.get(directory)
            if backend is None:
                backend = _host_backends[directory] = HostBackend(directory)
        return backend
    if scope == "cluster":
        return cluster.get_backend()
    raise ValueError(f"scope {scope!r} has no backend; use one of {SCOPES}")


def get_pool(scope: str, name: str, limit: int) -> Pool:
    """The pool for (scope, name), made on first use; backends resolve settings then."""
    backend = backend_for(scope)
    where = id(backend)  # backends are kept for the life of the process
    with _lock:
        pool = _pools.get((scope, where, name))
        if pool is None:
            pool = _pools[(scope, where, name)] = Pool(name=name, limit=limit, backend=backend)
        elif pool.limit != limit:
            raise ValueError(
                f"pool {name!r} ({scope}) is used with limit {pool.limit} and {limit}; "
                "views sharing a name must share a limit"
            )
        return pool


# -- keys ------------------------------------------------------------------


def client_ip(request: HttpRequest) -> str:
    """REMOTE_ADDR, or the right-most address of STREAMER_IP_HEADER when set.

    The right-most entry is the one your own proxy added; entries to its left
    came from the client and can be forged.
    """
    header = conf.STREAMER_IP_HEADER
    if header:
        value = request.META.get(header, "")
        if value:
            candidate = value.split(",")[-1].strip()
            try:
                return str(ipaddress.ip_address(candidate))
            except ValueError:
                pass
    return str(request.META.get("REMOTE_ADDR", ""))


def _key_ip(request: HttpRequest) -> str:
    return "ip:" + client_ip(request)


def _key_user(request: HttpRequest) -> str:
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return "ip:" + client_ip(request)


def _key_header(meta_name: str) -> KeyFunc:
    def key(request: HttpRequest) -> str:
        # Requests without the header share one slot set, so omitting it
        # cannot get around the limit.
        return "header:" + str(request.META.get(meta_name, ""))

    return key


def key_function(spec: object) -> KeyFunc | None:
    """Turn a ``key=`` argument into a function, or fail naming what is wrong."""
    if spec is None:
        return None
    if callable(spec):
        return cast(KeyFunc, spec)
    if spec == "ip":
        return _key_ip
    if spec == "user":
        return _key_user
    if isinstance(spec, str) and spec.startswith("header:") and spec[7:].strip():
        name = spec[7:].strip()
        return _key_header("HTTP_" + name.upper().replace("-", "_"))
    raise ValueError(
        f"key={spec!r} is not a key spec: use None, 'ip', 'user', 'header:X-Name' "
        "or a callable (request) -> str | None"
    )


# -- releasing -------------------------------------------------------------


class _Slot(StreamRecorder):
    """Holds a lease until the stream finishes or the response is closed."""

    def __init__(self, pool: Pool, lease: PoolLease) -> None:
        self.pool = pool
        self.lease = lease

    def release(self) -> None:
        if not self.lease.released:
            self.lease.release()
            for recorder in limiter_recorders:
                recorder.released(self.pool, self.lease)

    def finish(self, outcome: Outcome) -> None:
        self.release()

    def __del__(self) -> None:
        # Last resort, should the response be dropped unsent and never closed:
        # the response is the only holder of this object.
        if not self.lease.released:
            self.lease.release()


def _hold_until_done(response: HttpResponseBase, slot: _Slot) -> None:
    """Tie the slot to the response's life, whatever kind of response it is."""
    closers: list[Callable[[], object]] = response._resource_closers  # type: ignore[attr-defined]
    closers.append(slot.release)  # the server closes every response it sent
    if isinstance(response, StreamingResponse):
        # Also when the stream ends without close(): Django's ASGI handler
        # skips close() when the stream raised.
        response.stream.recorders.add(slot)
    elif isinstance(response, StreamingHttpResponse):
        content = response.streaming_content
        if response.is_async:
            response.streaming_content = _arelease_after(cast(AsyncIterator[bytes], content), slot)
        else:
            response.streaming_content = _release_after(cast(Iterator[bytes], content), slot)


def _release_after(content: Iterator[bytes], slot: _Slot) -> Iterator[bytes]:
    try:
        yield from content
    finally:
        slot.release()


async def _arelease_after(content: AsyncIterator[bytes], slot: _Slot) -> AsyncIterator[bytes]:
    try:
        async for part in content:
            yield part
    finally:
        slot.release()


# -- the decorator -----------------------------------------------------------


def _find_request(args: tuple[Any, ...]) -> HttpRequest:
    # A function view gets (request, ...); dispatch() decorated directly gets
    # (self, request, ...); method_decorator passes (request, ...).
    for arg in args[:2]:
        if isinstance(arg, HttpRequest):
            return arg
    raise TypeError("limit_concurrency: the decorated view got no HttpRequest argument")


def limit_concurrency(
    limit: int,
    *,
    key: str | KeyFunc | None = None,
    scope: str = "process",
    on_limit: str = "reject",
    timeout: float | None = None,
    name: str | None = None,
    status: int = 503,
    retry_after: int | None = None,
    response: Callable[[HttpRequest, Rejection], HttpResponseBase] | None = None,
) -> Callable[[ViewT], ViewT]:
    """Cap concurrent responses of a view at ``limit`` per key.

    The slot is held from admission until the response is done (the stream
    completed, failed or was aborted, or the server closed the response); if
    the view raises, at once. See the README for every argument.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit_concurrency: limit must be an int >= 1, got {limit!r}")
    if scope not in SCOPES:
        raise ValueError(f"limit_concurrency: scope must be one of {SCOPES}, got {scope!r}")
    if on_limit not in ("reject", "wait"):
        raise ValueError(
            f"limit_concurrency: on_limit must be 'reject' or 'wait', got {on_limit!r}"
        )
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
    ):
        raise ValueError(f"limit_concurrency: timeout must be seconds >= 0, got {timeout!r}")
    if on_limit == "wait" and timeout is None:
        raise ValueError(
            "limit_concurrency: on_limit='wait' needs a timeout (seconds to wait for a slot)"
        )
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"limit_concurrency: status must be a 4xx or 5xx code, got {status!r}")
    if retry_after is not None and (
        isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0
    ):
        raise ValueError(
            f"limit_concurrency: retry_after must be whole seconds >= 0, got {retry_after!r}"
        )
    if response is not None and not callable(response):
        raise ValueError("limit_concurrency: response must be a callable (request, rejection)")
    key_of = key_function(key)
    wait = on_limit == "wait"
    wait_seconds = float(timeout or 0)
    patience = wait_seconds if wait else 0.0  # cluster waits: 0 tries once

    def decorator(view: ViewT) -> ViewT:
        pool_name = name or f"{view.__module__}.{view.__qualname__}"
        pool_ref: list[Pool] = []

        def pool() -> Pool:
            if not pool_ref:
                pool_ref.append(get_pool(scope, pool_name, limit))
            return pool_ref[0]

        def admit_key(request: HttpRequest) -> str | None:
            if key_of is None:
                return ""
            value = key_of(request)
            return None if value is None else str(value)

        def reject(request: HttpRequest, the_pool: Pool, slot_key: str) -> HttpResponseBase:
            rejection = Rejection(
                pool=the_pool.name,
                key=slot_key,
                limit=limit,
                status=status,
                retry_after=conf.STREAMER_RETRY_AFTER if retry_after is None else retry_after,
                waited=wait_seconds if wait else 0.0,
            )
            for recorder in limiter_recorders:
                recorder.rejected(the_pool, rejection)
            return render_rejection(request, rejection, response)

        def admitted(the_pool: Pool, lease: PoolLease) -> _Slot:
            for recorder in limiter_recorders:
                recorder.admitted(the_pool, lease)
            return _Slot(the_pool, lease)

        if iscoroutinefunction(view):

            async def ainner(*args: Any, **kwargs: Any) -> Any:
                request = _find_request(args)
                slot_key = admit_key(request)
                if slot_key is None:
                    return await view(*args, **kwargs)
                the_pool = pool()
                if scope == "cluster":  # the queue lives in Redis
                    lease = await cluster.aacquire(the_pool, slot_key, timeout=patience)
                elif wait:
                    lease = await the_pool.aacquire(slot_key, timeout=wait_seconds)
                else:
                    lease = the_pool.try_acquire(slot_key)
                if lease is None:
                    return reject(request, the_pool, slot_key)
                slot = admitted(the_pool, lease)
                try:
                    result = await view(*args, **kwargs)
                except BaseException:
                    slot.release()
                    raise
                _hold_until_done(result, slot)
                return result

            wrapper = functools.wraps(view)(ainner)
            markcoroutinefunction(wrapper)
        else:

            def inner(*args: Any, **kwargs: Any) -> Any:
                request = _find_request(args)
                slot_key = admit_key(request)
                if slot_key is None:
                    return view(*args, **kwargs)
                the_pool = pool()
                if scope == "cluster":  # the queue lives in Redis
                    lease = cluster.acquire(the_pool, slot_key, timeout=patience)
                elif wait:
                    lease = the_pool.acquire(slot_key, timeout=wait_seconds)
                else:
                    lease = the_pool.try_acquire(slot_key)
                if lease is None:
                    return reject(request, the_pool, slot_key)
                slot = admitted(the_pool, lease)
                try:
                    result = view(*args, **kwargs)
                except BaseException:
                    slot.release()
                    raise
                _hold_until_done(result, slot)
                return result

            wrapper = functools.wraps(view)(inner)
        wrapper.limit_pool_name = pool_name  # type: ignore[attr-defined]
        wrapper.limit_scope = scope  # type: ignore[attr-defined]
        return cast(ViewT, wrapper)

    return decorator


def render_rejection(
    request: HttpRequest,
    rejection: Rejection,
    handler: Callable[[HttpRequest, Rejection], HttpResponseBase] | None,
) -> HttpResponseBase:
    """The rejection response: the decorator's handler, the settings-wide one, or ours."""
    if handler is None and conf.STREAMER_LIMIT_HANDLER:
        handler = import_string(conf.STREAMER_LIMIT_HANDLER)
    if handler is not None:
        result = handler(request, rejection)
    else:
        result = HttpResponse(
            f"Too many concurrent requests for {rejection.pool}; try again later.\n",
            status=rejection.status,
            content_type="text/plain; charset=utf-8",
        )
    if rejection.retry_after is not None and not result.has_header("Retry-After"):
        result["Retry-After"] = str(rejection.retry_after)
    return result
