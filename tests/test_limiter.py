"""@limit_concurrency through Django, in-process."""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from asgiref.sync import iscoroutinefunction
from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.test import RequestFactory, override_settings
from django.utils.decorators import method_decorator
from django.views import View

from django_streamer import Rejection, limit_concurrency, stream_response
from django_streamer.checks import check_settings
from django_streamer.decorators import LimiterRecorder, get_pool
from django_streamer.extensions import extensions

rf = RequestFactory()


def unique() -> str:
    return "pool-" + uuid.uuid4().hex[:8]


def gate_stream(gate: threading.Event) -> Iterator[bytes]:
    yield b"first"
    gate.wait(5)
    yield b"second"


def test_the_slot_lasts_as_long_as_the_stream_not_the_view_call():
    name = unique()

    @limit_concurrency(1, name=name)
    def view(request):
        return stream_response(iter([b"a", b"b"]), flush_interval=0)

    first = view(rf.get("/"))
    assert first.status_code == 200
    # The view has returned, nothing is sent yet: the slot is still held.
    second = view(rf.get("/"))
    assert second.status_code == 503
    assert second["Retry-After"] == "5"
    assert list(first) == [b"a", b"b"]  # the stream completes...
    third = view(rf.get("/"))  # ...and its slot is free again
    assert third.status_code == 200
    third.close()


@pytest.mark.parametrize("kind", ["ours", "plain", "plain-async", "http"])
def test_any_response_holds_its_slot_until_closed(kind):
    name = unique()

    async def agen() -> AsyncIterator[bytes]:
        yield b"x"

    @limit_concurrency(1, name=name)
    def view(request):
        if kind == "ours":
            return stream_response(iter([b"x"]))
        if kind == "plain":
            return StreamingHttpResponse(iter([b"x"]))
        if kind == "plain-async":
            return StreamingHttpResponse(agen())
        return HttpResponse(b"x")

    first = view(rf.get("/"))
    assert view(rf.get("/")).status_code == 503
    first.close()  # what every server does once the response is sent
    assert get_pool("process", name, 1).in_use() == 0
    again = view(rf.get("/"))
    assert again.status_code == 200
    again.close()


def test_a_view_that_raises_frees_its_slot_at_once():
    name = unique()

    @limit_concurrency(1, name=name)
    def view(request):
        raise KeyError("boom")

    for _ in range(3):
        with pytest.raises(KeyError):
            view(rf.get("/"))
    assert get_pool("process", name, 1).in_use() == 0


def test_a_dropped_response_frees_its_slot_when_collected():
    import gc

    name = unique()

    @limit_concurrency(1, name=name)
    def view(request):
        return HttpResponse(b"x")

    view(rf.get("/"))  # never closed, never referenced
    gc.collect()
    assert get_pool("process", name, 1).in_use() == 0


def test_an_aborted_stream_frees_its_slot():
    name = unique()
    gate = threading.Event()

    @limit_concurrency(1, name=name)
    def view(request):
        return stream_response(gate_stream(gate), flush_interval=0)

    response = view(rf.get("/"))
    it = iter(response)
    next(it)
    response.close()  # the client went away
    assert get_pool("process", name, 1).in_use() == 0


def test_a_failing_stream_frees_its_slot_even_without_close():
    # Django's ASGI handler does not call close() when the stream raised.
    name = unique()

    def failing() -> Iterator[bytes]:
        yield b"x"
        raise RuntimeError("source broke")

    @limit_concurrency(1, name=name)
    def view(request):
        return stream_response(failing(), flush_interval=0)

    response = view(rf.get("/"))
    with pytest.raises(RuntimeError):
        list(response)
    assert get_pool("process", name, 1).in_use() == 0


def test_async_views_stay_async_and_keep_their_signature():
    @limit_concurrency(2, name=unique())
    async def aview(request: HttpRequest, pk: int) -> HttpResponse:
        return HttpResponse(str(pk))

    @limit_concurrency(2, name=unique())
    def sview(request: HttpRequest, pk: int) -> HttpResponse:
        return HttpResponse(str(pk))

    assert iscoroutinefunction(aview)
    assert not iscoroutinefunction(sview)
    assert str(inspect.signature(aview)) == str(inspect.signature(sview))
    assert list(inspect.signature(aview).parameters) == ["request", "pk"]
    assert aview.__name__ == "aview"
    response = asyncio.run(aview(rf.get("/"), pk=7))
    assert response.content == b"7"


def test_async_view_holds_its_slot_for_the_stream():
    name = unique()

    async def agen() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    @limit_concurrency(1, name=name)
    async def view(request):
        return stream_response(agen(), flush_interval=0)

    async def main():
        first = await view(rf.get("/"))
        second = await view(rf.get("/"))
        assert second.status_code == 503
        assert [c async for c in first] == [b"a", b"b"]
        third = await view(rf.get("/"))
        assert third.status_code == 200
        third.close()

    asyncio.run(main())


def test_class_based_views_through_method_decorator_and_on_dispatch():
    dispatch_name, method_name = unique(), unique()

    @method_decorator(limit_concurrency(1, name=method_name), name="get")
    class ByMethod(View):
        def get(self, request):
            return stream_response(iter([b"x"]))

    class OnDispatch(View):
        @limit_concurrency(1, name=dispatch_name)
        def dispatch(self, request, *args, **kwargs):
            return super().dispatch(request, *args, **kwargs)

        def get(self, request):
            return stream_response(iter([b"x"]))

    for cls, name in ((ByMethod, method_name), (OnDispatch, dispatch_name)):
        view = cls.as_view()
        first = view(rf.get("/"))
        assert view(rf.get("/")).status_code == 503
        first.close()
        assert get_pool("process", name, 1).in_use() == 0


def test_wait_mode_admits_when_a_slot_frees():
    name = unique()
    events: list[str] = []

    @limit_concurrency(1, name=name, on_limit="wait", timeout=5)
    def view(request):
        events.append("view ran")
        return HttpResponse(b"x")

    def close_first() -> None:
        events.append("first closed")
        first.close()

    first = view(rf.get("/"))
    threading.Timer(0.2, close_first).start()
    second = view(rf.get("/"))  # blocks until the timer closes the first
    assert second.status_code == 200
    # Without the limit the second view would have run before the close.
    assert events == ["view ran", "first closed", "view ran"]
    second.close()


def test_wait_mode_rejects_after_the_timeout():
    name = unique()

    @limit_concurrency(1, name=name, on_limit="wait", timeout=0.2, status=429, retry_after=30)
    def view(request):
        return HttpResponse(b"x")

    first = view(rf.get("/"))
    second = view(rf.get("/"))
    assert second.status_code == 429
    assert second["Retry-After"] == "30"
    first.close()


def test_async_wait_mode():
    name = unique()
    events: list[str] = []

    @limit_concurrency(1, name=name, on_limit="wait", timeout=5)
    async def view(request):
        events.append("view ran")
        return HttpResponse(b"x")

    def close_first(first: HttpResponse) -> None:
        events.append("first closed")
        first.close()

    async def main():
        first = await view(rf.get("/"))
        asyncio.get_running_loop().call_later(0.1, close_first, first)
        second = await view(rf.get("/"))
        assert second.status_code == 200
        second.close()

    asyncio.run(main())
    # Without the limit the second view would have run before the close.
    assert events == ["view ran", "first closed", "view ran"]


def with_user(request: HttpRequest, user: Any) -> HttpRequest:
    request.user = user
    return request


class User:
    is_authenticated = True

    def __init__(self, pk: int) -> None:
        self.pk = pk


def test_per_user_pools():
    @limit_concurrency(1, key="user", name=unique(), status=429)
    def view(request):
        return HttpResponse(b"x")

    alice = view(with_user(rf.get("/"), User(1)))
    bob = view(with_user(rf.get("/"), User(2)))
    assert alice.status_code == bob.status_code == 200
    assert view(with_user(rf.get("/"), User(1))).status_code == 429
    # Anonymous users fall back to their address.
    anon = view(with_user(rf.get("/", REMOTE_ADDR="10.0.0.1"), AnonymousUser()))
    assert anon.status_code == 200
    other = with_user(rf.get("/", REMOTE_ADDR="10.0.0.2"), AnonymousUser())
    assert view(other).status_code == 200
    same = with_user(rf.get("/", REMOTE_ADDR="10.0.0.1"), AnonymousUser())
    assert view(same).status_code == 429
    for r in (alice, bob, anon):
        r.close()


def test_ip_keys_and_the_trusted_proxy_header():
    @limit_concurrency(1, key="ip", name=unique())
    def view(request):
        return HttpResponse(b"x")

    a = view(rf.get("/", REMOTE_ADDR="10.0.0.1"))
    assert view(rf.get("/", REMOTE_ADDR="10.0.0.1")).status_code == 503
    assert view(rf.get("/", REMOTE_ADDR="10.0.0.2")).status_code == 200
    with override_settings(
        STREAMER_IP_HEADER="HTTP_X_FORWARDED_FOR", STREAMER_TRUSTED_PROXIES=["10.9.9.0/24"]
    ):
        # Behind the proxy every request comes from its address; the
        # right-most forwarded entry is the one the proxy vouches for.
        via = view(rf.get("/", REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR="1.1.1.1, 8.8.8.8"))
        assert via.status_code == 200
        spoofed = rf.get("/", REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR="9.9.9.9, 8.8.8.8")
        assert view(spoofed).status_code == 503
    a.close()
    via.close()


def test_header_keys_and_callable_keys():
    @limit_concurrency(1, key="header:X-Tenant", name=unique())
    def by_header(request):
        return HttpResponse(b"x")

    t1 = by_header(rf.get("/", HTTP_X_TENANT="a"))
    assert by_header(rf.get("/", HTTP_X_TENANT="b")).status_code == 200
    assert by_header(rf.get("/", HTTP_X_TENANT="a")).status_code == 503
    t1.close()

    @limit_concurrency(1, key=lambda r: r.GET.get("k"), name=unique())
    def by_callable(request):
        return HttpResponse(b"x")

    held = by_callable(rf.get("/?k=1"))
    assert by_callable(rf.get("/?k=1")).status_code == 503
    # None means "not limited".
    assert all(by_callable(rf.get("/")).status_code == 200 for _ in range(3))
    held.close()


def test_memory_does_not_grow_with_distinct_keys():
    name = unique()

    @limit_concurrency(1, key="ip", name=name)
    def view(request):
        return HttpResponse(b"x")

    for i in range(2000):
        view(rf.get("/", REMOTE_ADDR=f"10.0.{i // 250}.{i % 250}")).close()
    pool = get_pool("process", name, 1)
    assert pool._queues == {}
    assert not [k for k in pool.backend._counts if k[0] == name]  # type: ignore[attr-defined]


def test_custom_rejection_responses():
    def handler(request: HttpRequest, rejection: Rejection) -> HttpResponse:
        return HttpResponse(f"busy {rejection.pool} {rejection.limit}", status=rejection.status)

    name = unique()

    @limit_concurrency(1, name=name, response=handler, status=429)
    def view(request):
        return HttpResponse(b"x")

    held = view(rf.get("/"))
    busy = view(rf.get("/"))
    assert (busy.status_code, busy.content) == (429, f"busy {name} 1".encode())
    assert busy["Retry-After"] == "5"
    held.close()


def settings_handler(request: HttpRequest, rejection: Rejection) -> HttpResponse:
    return HttpResponse("from settings", status=rejection.status)


def test_settings_wide_rejection_handler():
    name = unique()

    @limit_concurrency(1, name=name)
    def view(request):
        return HttpResponse(b"x")

    held = view(rf.get("/"))
    with override_settings(STREAMER_LIMIT_HANDLER="tests.test_limiter.settings_handler"):
        assert view(rf.get("/")).content == b"from settings"
    held.close()


def test_limiter_events_reach_the_recorders(monkeypatch):
    events: list[tuple[str, str]] = []

    class Spy(LimiterRecorder):
        def admitted(self, pool, lease):
            events.append(("admitted", pool.name))

        def rejected(self, pool, rejection):
            events.append(("rejected", pool.name))

        def released(self, pool, lease):
            events.append(("released", pool.name))

    monkeypatch.setattr(extensions, "limiter_recorders", (Spy(),))
    name = unique()

    @limit_concurrency(1, name=name)
    def view(request):
        return stream_response(iter([b"x"]))

    first = view(rf.get("/"))
    view(rf.get("/"))
    list(first)
    first.close()
    # The site-wide cap's pool ("streams") hears of every stream too.
    ours = [event for event in events if event[1] == name]
    assert ours == [("admitted", name), ("rejected", name), ("released", name)]
    assert events.count(("admitted", "streams")) == events.count(("released", "streams")) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit_concurrency: limit must be a positive int"),
        ({"limit": 1.5}, "limit_concurrency: limit must be a positive int"),
        ({"limit": 1, "scope": "galaxy"}, "scope must be one of"),
        ({"limit": 1, "key": "ip-address"}, "is not a key spec"),
        ({"limit": 1, "key": "header:"}, "is not a key spec"),
        ({"limit": 1, "on_limit": "queue"}, "on_limit must be one of 'reject', 'wait'"),
        ({"limit": 1, "on_limit": "wait"}, "needs a timeout"),
        ({"limit": 1, "on_limit": "wait", "timeout": -1}, "timeout must be a number of seconds"),
        ({"limit": 1, "status": 200}, "status must be a 4xx or 5xx"),
        ({"limit": 1, "retry_after": -5}, "retry_after must be whole seconds"),
    ],
)
def test_bad_arguments_fail_at_decoration_time(kwargs, message):
    with pytest.raises(ValueError, match=message):
        limit_concurrency(**kwargs)


def test_views_sharing_a_name_must_share_a_limit():
    name = unique()

    @limit_concurrency(1, name=name)
    def a(request):
        return HttpResponse(b"x")

    @limit_concurrency(2, name=name)
    def b(request):
        return HttpResponse(b"x")

    a(rf.get("/")).close()
    with pytest.raises(ValueError, match="used with limit 1 and 2"):
        b(rf.get("/"))


@pytest.mark.parametrize(
    ("settings_kw", "check_id"),
    [
        ({"STREAMER_LIMITER_DIR": __file__ + "/under-a-file"}, "django_streamer.E004"),
        ({"STREAMER_LIMITER_DIR": 42}, "django_streamer.E004"),
        ({"STREAMER_LIMIT_HANDLER": "tests.nowhere.handler"}, "django_streamer.E005"),
        ({"STREAMER_RETRY_AFTER": -1}, "django_streamer.E006"),
        ({"STREAMER_IP_HEADER": "X-Real-IP"}, "django_streamer.W003"),
    ],
)
def test_limiter_checks(settings_kw, check_id):
    with override_settings(**settings_kw):
        messages = check_settings()
    assert [m.id for m in messages] == [check_id]
    assert messages[0].hint


def test_host_scope_through_the_decorator(tmp_path):
    name = unique()
    with override_settings(STREAMER_LIMITER_DIR=str(tmp_path)):

        @limit_concurrency(1, scope="host", name=name)
        def view(request):
            return stream_response(iter([b"x"]))

        first = view(rf.get("/"))
        assert view(rf.get("/")).status_code == 503
        assert list(tmp_path.iterdir())  # the pool's lock file lives there
        list(first)
        again = view(rf.get("/"))
        assert again.status_code == 200
        again.close()
