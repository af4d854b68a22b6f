"""Issue 7 (and the limiter parts of 8): the limiter's shared state and slot lifetime."""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import os
import random
import shutil
import stat
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, override_settings
from django.urls import path

from django_streamer import limit_concurrency, stream_response
from django_streamer.checks import check_settings
from django_streamer.conf import state_dir
from django_streamer.core import ofdlock
from django_streamer.core.limiter import Backend, HostBackend, Pool, ProcessBackend
from django_streamer.core.limiter import host as host_module
from django_streamer.core.recorder import Outcome, StreamRecorder
from django_streamer.core.statedir import UnsafeStateError
from django_streamer.decorators import LimiterRecorder, get_pool
from django_streamer.extensions import extensions
from django_streamer.keys import client_ip
from django_streamer.views import access_denied
from tests.conftest import call_asgi, wsgi_iter

rf = RequestFactory()
NOBODY = 65534


def unique() -> str:
    return "pool-" + uuid.uuid4().hex[:8]


# -- 7.1 the directory and its files -----------------------------------------


def test_a_limiter_dir_made_by_someone_else_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(UnsafeStateError, match=f"{theirs} is owned by uid {NOBODY}"):
        HostBackend(str(theirs))
    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)
    with pytest.raises(UnsafeStateError, match="has mode 0777"):
        HostBackend(str(open_to_all))


def test_the_per_user_dir_of_the_default_must_be_ours_too(tmp_path: Path) -> None:
    user_dir = tmp_path / "django-streamer-0"
    user_dir.mkdir(mode=0o700)
    os.chown(user_dir, NOBODY, NOBODY)
    # The pools dir below it would be ours, but the squatter owns its parent.
    with pytest.raises(UnsafeStateError, match=f"{user_dir} is owned by uid {NOBODY}"):
        HostBackend(str(user_dir / "project" / "pools"), owned_from=str(user_dir))


def test_an_unsafe_setting_is_improperly_configured_and_a_check(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)

    @limit_concurrency(1, scope="host", name=unique())
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"x")

    with override_settings(STREAMER_LIMITER_DIR=str(theirs)):
        messages = [m for m in check_settings() if m.id == "django_streamer.E004"]
        assert len(messages) == 1 and str(theirs) in messages[0].msg
        with pytest.raises(ImproperlyConfigured, match=f"STREAMER_LIMITER_DIR is unsafe.*{theirs}"):
            view(rf.get("/"))
    # The check made nothing: it has no side effects.
    missing = tmp_path / "not-yet"
    with override_settings(STREAMER_LIMITER_DIR=str(missing)):
        assert [m for m in check_settings() if m.id == "django_streamer.E004"] == []
    assert not missing.exists()


def test_a_symlinked_key_file_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    backend = HostBackend(str(tmp_path / "pools"))
    target = tmp_path / "victim"
    target.write_bytes(b"precious")
    os.symlink(target, backend.path("p", "k"))
    with pytest.raises(UnsafeStateError, match="is a symlink"):
        Pool(name="p", limit=1, backend=backend).try_acquire("k")
    assert target.read_bytes() == b"precious"


def test_files_are_private(tmp_path: Path) -> None:
    backend = HostBackend(str(tmp_path / "a" / "pools"))
    lease = Pool(name="p", limit=1, backend=backend).try_acquire("k")
    assert lease is not None
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(backend.directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(backend.path("p", "k")).st_mode) == 0o600
    lease.release()


# -- 7.3 a failing directory --------------------------------------------------


def test_a_limiter_dir_that_cannot_be_made_is_a_clear_error() -> None:
    @limit_concurrency(1, scope="host", name=unique())
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"x")

    under_a_file = __file__ + "/pools"
    with (
        override_settings(STREAMER_LIMITER_DIR=under_a_file),
        pytest.raises(ImproperlyConfigured, match="is not a real directory"),
    ):
        view(rf.get("/"))


def test_a_limiter_dir_deleted_at_runtime_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_module, "_RECHECK", 0.05)
    directory = tmp_path / "pools"
    pool = Pool(name="p", limit=1, backend=HostBackend(str(directory)))
    lease = pool.try_acquire("old")
    assert lease is not None
    lease.release()  # its descriptor is cached, on a file about to vanish
    shutil.rmtree(directory)
    fresh = pool.try_acquire("new")
    assert fresh is not None and pool.in_use("new") == 1
    time.sleep(0.06)  # a kept descriptor is trusted for _RECHECK after its last check
    again = pool.try_acquire("old")  # the cached descriptor is stale: reopened
    assert again is not None and pool.in_use("old") == 1
    assert pool.try_acquire("old") is None
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
    fresh.release()
    again.release()


# -- 7.4 bounded key files ----------------------------------------------------


def _stress(directory: str, spare: int, keys: int, rounds: int, counts: Any, seed: int) -> None:
    """A worker process: take and give back slots, counting the holders of each key."""
    rng = random.Random(seed)
    pool = Pool(name="stress", limit=2, backend=HostBackend(directory, spare=spare))
    for _ in range(rounds):
        k = rng.randrange(keys)
        lease = pool.try_acquire(f"k{k}")
        if lease is None:
            continue
        with counts.get_lock():
            counts[k] += 1
            if counts[k] > 2:
                counts[keys] = 1  # the flag: a slot had two holders
        time.sleep(rng.random() * 0.0005)
        with counts.get_lock():
            counts[k] -= 1
        lease.release()
    counts[keys + 1 + seed] = 1  # this worker finished


def test_many_processes_never_exceed_the_limit_and_files_stay_bounded(tmp_path: Path) -> None:
    directory = str(tmp_path / "pools")
    keys, workers = 3, 8
    counts = multiprocessing.get_context("fork").Array("i", keys + 1 + workers)
    ctx = multiprocessing.get_context("fork")
    # Half keep no spare descriptors, so every release tries to remove the file.
    procs = [
        ctx.Process(target=_stress, args=(directory, i % 2, keys, 1500, counts, i))
        for i in range(workers)
    ]
    started = time.monotonic()
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
    assert all(p.exitcode == 0 for p in procs)
    assert time.monotonic() - started < 20
    assert counts[keys] == 0, "a slot had more holders than the limit"
    assert all(counts[keys + 1 + i] for i in range(workers))
    # Nothing is held now: what is left is at most the spares cached at exit.
    assert len(os.listdir(directory)) <= workers // 2


def test_a_free_key_file_is_removed_when_its_descriptor_is_not_cached(tmp_path: Path) -> None:
    backend = HostBackend(str(tmp_path / "pools"), spare=0)
    pool = Pool(name="p", limit=2, backend=backend)
    for i in range(200):
        lease = pool.try_acquire(f"ip:{i}")
        assert lease is not None
        lease.release()
    assert os.listdir(backend.directory) == []
    a, b = pool.try_acquire("k"), pool.try_acquire("k")
    assert a is not None and b is not None
    a.release()  # b still holds: the file must stay
    assert os.path.exists(backend.path("p", "k"))
    b.release()
    assert os.listdir(backend.directory) == []


def test_a_kept_descriptor_of_a_file_removed_from_outside_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(host_module, "_RECHECK", 0.05)
    directory = str(tmp_path / "pools")
    stale = HostBackend(directory)
    pool = Pool(name="p", limit=1, backend=stale)
    lease = pool.try_acquire("k")
    assert lease is not None
    lease.release()  # cached descriptor on inode A
    os.unlink(stale.path("p", "k"))  # as an operator would; no backend removes a kept file
    other = Pool(name="p", limit=1, backend=HostBackend(directory, spare=0))
    theirs = other.try_acquire("k")  # on a new inode B
    assert theirs is not None
    time.sleep(0.06)
    # Locking inode A would succeed; the recheck sees B and refuses.
    assert pool.try_acquire("k") is None
    theirs.release()


def test_a_file_another_process_keeps_a_descriptor_of_is_not_removed(tmp_path: Path) -> None:
    """The sentinel, not a path check per admission, is what keeps two holders apart."""
    directory = str(tmp_path / "pools")
    keeper = Pool(name="p", limit=1, backend=HostBackend(directory))
    lease = keeper.try_acquire("k")
    assert lease is not None
    lease.release()  # the keeper keeps its descriptor (a spare)
    path = keeper.backend.path("p", "k")  # type: ignore[attr-defined]
    inode = os.stat(path).st_ino

    def drop_and_hold(ready: int, done: int) -> int:
        # A process that keeps no descriptor: every release tries to remove the file.
        dropper = Pool(name="p", limit=1, backend=HostBackend(directory, spare=0))
        for _ in range(3):
            mine = dropper.try_acquire("k")
            if mine is None:
                return 1
            mine.release()
        # Else the file was removed under the keeper's descriptor.
        same = os.path.exists(path) and os.stat(path).st_ino == inode
        held = dropper.try_acquire("k")
        if held is None:
            return 2
        os.write(ready, b"s" if same else b"r")
        os.read(done, 1)
        return 0

    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report with an exit code, never return into pytest
        code = 99
        try:
            os.close(ready_r)
            os.close(done_w)  # so that the parent closing its end is an EOF here
            code = drop_and_hold(ready_w, done_r)
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        said = os.read(ready_r, 1)
        assert said, "the child failed before it held the slot"
        # The child holds slot 0: the keeper's descriptor, used with no path
        # check, must be of that same file and be refused.
        assert keeper.try_acquire("k") is None
        assert said == b"s", "the file was removed while the keeper kept a descriptor"
    finally:
        os.close(done_w)  # the child's read returns: it may exit
        _, status = os.waitpid(pid, 0)
        os.close(ready_r)
    assert os.waitstatus_to_exitcode(status) == 0
    assert os.path.exists(path)  # the keeper still keeps its descriptor
    # Once the keeper drops its descriptor too, the file goes: files stay bounded.
    keeper.backend._max_spare = 0  # type: ignore[attr-defined]
    lease = keeper.try_acquire("k")
    assert lease is not None
    lease.release()
    assert os.listdir(directory) == []


def test_two_processes_dropping_one_file_at_once_still_remove_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each dropper's first try sees the other's sentinel; the later must still remove it."""
    directory = str(tmp_path / "pools")
    backends = [HostBackend(directory), HostBackend(directory)]  # OFD locks: as two processes
    for backend in backends:
        lease = backend.try_acquire("p", "k", 2)
        assert lease is not None
        lease.release()  # kept, with its sentinel
    path = backends[0].path("p", "k")
    real = ofdlock.lock_from
    both_tried = threading.Barrier(2, timeout=5)
    seen = threading.local()

    def lock_from(fd: int, offset: int) -> bool:
        got = real(fd, offset)
        if not getattr(seen, "tried", False):  # hold each first try until both have tried
            seen.tried = True
            both_tried.wait()
        return got

    monkeypatch.setattr(ofdlock, "lock_from", lock_from)
    threads = [
        threading.Thread(target=host_module._discard, args=(path, b._pop_spare(path)))
        for b in backends
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert not os.path.exists(path)


# -- 7.5 responses never closed -----------------------------------------------


class _Spy(LimiterRecorder):
    def __init__(self) -> None:
        self.events: list[str] = []

    def admitted(self, pool: Any, lease: Any) -> None:
        self.events.append("admitted")

    def released(self, pool: Any, lease: Any) -> None:
        self.events.append("released")


class _Outcomes(StreamRecorder):
    seen: list[Outcome] = []

    def finish(self, outcome: Outcome) -> None:
        self.seen.append(outcome)


LEAK_POOL = unique()


@limit_concurrency(1, name=LEAK_POOL)
def _limited_stream(request: HttpRequest) -> Any:
    response = stream_response(iter([b"x"] * 3))
    response.stream.recorders.add(_Outcomes())
    return response


def _raise_after_view(get_response: Any) -> Any:
    def middleware(request: HttpRequest) -> Any:
        response = get_response(request)  # noqa: F841  (the traceback keeps it alive)
        raise RuntimeError("a middleware failed after the view returned")

    return middleware


urlpatterns = [path("leak/", _limited_stream)]


@override_settings(ROOT_URLCONF=__name__, MIDDLEWARE=[f"{__name__}._raise_after_view"])
@pytest.mark.parametrize("handler", ["wsgi", "asgi"])
def test_a_response_dropped_by_a_raising_middleware_frees_its_slot_at_once(
    handler: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_streamer import metrics

    spy = _Spy()
    monkeypatch.setattr(
        extensions,
        "limiter_recorders",
        (
            spy,
            metrics.PoolRecorder(),
        ),
    )
    _Outcomes.seen = []
    gc.disable()  # prove it: no garbage collection may help
    try:
        for _ in range(3):
            # Django's own handlers, as a server drives them; the view's
            # response is dropped and never closed, the 500 is sent and closed.
            if handler == "wsgi":
                status, _, body = wsgi_iter("/leak/")
                assert status.startswith("500")
                body.close()
            else:
                assert asyncio.run(call_asgi("/leak/")).status == 500
            assert get_pool("process", LEAK_POOL, 1).in_use() == 0
            assert spy.events[-1] == "released"
        assert _Outcomes.seen == [Outcome.ABORTED] * 3
    finally:
        gc.enable()
    deadline = time.monotonic() + 1
    while metrics.snapshot_json()["pools"].get(LEAK_POOL, {}).get("in_use") != 0:
        assert time.monotonic() < deadline, metrics.snapshot_json()["pools"].get(LEAK_POOL)
        time.sleep(0.05)


def test_a_collected_slot_tells_the_recorders(monkeypatch) -> None:
    spy = _Spy()
    monkeypatch.setattr(extensions, "limiter_recorders", (spy,))
    name = unique()

    @limit_concurrency(1, name=name)
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"x")

    view(rf.get("/"))  # dropped, never closed
    gc.collect()
    assert spy.events == ["admitted", "released"]
    assert get_pool("process", name, 1).in_use() == 0


def test_a_recorder_raising_in_admitted_does_not_leak_the_lease(monkeypatch) -> None:
    class Broken(LimiterRecorder):
        def admitted(self, pool: Any, lease: Any) -> None:
            raise OSError("metrics store gone")

    monkeypatch.setattr(extensions, "limiter_recorders", (Broken(),))
    name = unique()

    @limit_concurrency(1, name=name)
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"x")

    with pytest.raises(OSError, match="metrics store gone"):
        view(rf.get("/"))
    assert get_pool("process", name, 1).in_use() == 0


# -- 7.8 client IP, atomic release, fork ----------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("10.0.0.1, 203.0.113.9:51234", "203.0.113.9"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("203.0.113.9, unknown", "unknown"),
        ("203.0.113.9, ", ""),
    ],
)
def test_client_ip_parses_ports_and_keeps_unusable_entries(header: str, expected: str) -> None:
    request = rf.get("/", HTTP_X_FORWARDED_FOR=header, REMOTE_ADDR="127.0.0.1")
    with override_settings(STREAMER_IP_HEADER="HTTP_X_FORWARDED_FOR"):
        assert client_ip(request) == expected


@override_settings(STREAMER_IP_HEADER="HTTP_X_FORWARDED_FOR")
@pytest.mark.parametrize("peer", ["198.51.100.7", "10.1.2.3", "2001:db8::5"])
def test_a_peer_that_is_no_trusted_proxy_cannot_choose_its_address(peer: str) -> None:
    # Issue 20: the header was believed from anyone, so a client could key
    # itself as any address (a fresh one per request: no limit at all).
    request = rf.get("/", HTTP_X_FORWARDED_FOR="203.0.113.9", REMOTE_ADDR=peer)
    assert client_ip(request) == peer
    with override_settings(STREAMER_TRUSTED_PROXIES=["10.0.0.0/8", "2001:db8::/32"]):
        assert client_ip(request) == (peer if peer == "198.51.100.7" else "203.0.113.9")


@override_settings(STREAMER_IP_HEADER="HTTP_X_FORWARDED_FOR")
def test_a_spoofing_client_gets_no_fresh_ip_key_per_request() -> None:
    name = unique()

    @limit_concurrency(1, key="ip", name=name)
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"x")

    first = view(rf.get("/", HTTP_X_FORWARDED_FOR="1.1.1.1", REMOTE_ADDR="198.51.100.7"))
    second = view(rf.get("/", HTTP_X_FORWARDED_FOR="2.2.2.2", REMOTE_ADDR="198.51.100.7"))
    assert (first.status_code, second.status_code) == (200, 503)
    first.close()


@override_settings(
    STREAMER_IP_HEADER="HTTP_X_FORWARDED_FOR", STREAMER_TRUSTED_PROXIES=["127.0.0.1", "10.0.0.0/8"]
)
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("203.0.113.9, 10.0.0.5", "203.0.113.9"),  # a load balancer, then our nginx
        ("6.6.6.6, 203.0.113.9, 10.0.0.5", "203.0.113.9"),  # the client forged the first
        ("10.0.0.7, 10.0.0.5", "10.0.0.7"),  # every hop trusted: the left-most
    ],
)
def test_the_header_is_read_from_the_right_past_trusted_proxies(header: str, expected: str) -> None:
    assert client_ip(rf.get("/", HTTP_X_FORWARDED_FOR=header, REMOTE_ADDR="127.0.0.1")) == expected


@override_settings(
    STREAMER_IP_HEADER="HTTP_X_FORWARDED_FOR",
    STREAMER_METRICS_ALLOW=["203.0.113.9"],
    STREAMER_METRICS_TOKEN=None,
)
def test_a_forged_header_from_an_untrusted_peer_does_not_open_the_metrics_endpoint() -> None:
    forged = rf.get("/", HTTP_X_FORWARDED_FOR="203.0.113.9", REMOTE_ADDR="198.51.100.7")
    denied = access_denied(forged)
    assert denied is not None and denied.status_code == 403
    relayed = rf.get("/", HTTP_X_FORWARDED_FOR="203.0.113.9", REMOTE_ADDR="127.0.0.1")
    assert access_denied(relayed) is None


@override_settings(STREAMER_IP_HEADER="HTTP_X_FORWARDED_FOR", STREAMER_TRUSTED_PROXIES=[])
def test_a_unix_socket_peer_is_trusted_and_no_listed_proxy_trusts_no_ip_peer() -> None:
    assert client_ip(rf.get("/", HTTP_X_FORWARDED_FOR="203.0.113.9", REMOTE_ADDR="")) == (
        "203.0.113.9"
    )
    assert client_ip(rf.get("/", HTTP_X_FORWARDED_FOR="9.9.9.9", REMOTE_ADDR="127.0.0.1")) == (
        "127.0.0.1"
    )


@override_settings(
    STREAMER_IP_HEADER="HTTP_X_FORWARDED_FOR",
    STREAMER_METRICS_ALLOW=["127.0.0.1", "192.0.2.1"],
    STREAMER_METRICS_TOKEN=None,
)
@pytest.mark.parametrize("entry", ["unknown", "", "192.0.2.1:8080"])
def test_the_metrics_allowlist_fails_closed_on_an_unusable_entry(entry: str) -> None:
    # REMOTE_ADDR is the (allowed) proxy: it must not stand in for the client.
    request = rf.get("/", HTTP_X_FORWARDED_FOR=f"10.9.9.9, {entry}", REMOTE_ADDR="127.0.0.1")
    denied = access_denied(request)
    if entry.startswith("192.0.2.1"):
        assert denied is None
    else:
        assert denied is not None and denied.status_code == 403


@override_settings(STREAMER_IP_HEADER="HTTP_X_FORWARDED_FOR")
def test_ip_keys_use_the_raw_unusable_entry_not_the_proxy_address() -> None:
    name = unique()

    @limit_concurrency(1, key="ip", name=name)
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"x")

    a = view(rf.get("/", HTTP_X_FORWARDED_FOR="unknown", REMOTE_ADDR="127.0.0.1"))
    b = view(rf.get("/", HTTP_X_FORWARDED_FOR="garbage", REMOTE_ADDR="127.0.0.1"))
    assert (a.status_code, b.status_code) == (200, 200)  # two keys, not one
    assert get_pool("process", name, 1).in_use("ip:unknown") == 1
    a.close()
    b.close()


def test_two_threads_releasing_one_slot_release_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from django_streamer.core.limiter import PoolLease

    spy = _Spy()
    monkeypatch.setattr(extensions, "limiter_recorders", (spy,))
    release = PoolLease.release

    def slow_release(self: PoolLease) -> bool:
        time.sleep(0.01)  # widen the window between "is it released?" and releasing
        return release(self)

    monkeypatch.setattr(PoolLease, "release", slow_release)
    name = unique()

    @limit_concurrency(100, name=name)
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"x")

    for _ in range(20):
        response = view(rf.get("/"))
        barrier = threading.Barrier(2)

        def close(response: HttpResponse = response, barrier: Any = barrier) -> None:
            barrier.wait()
            response.close()

        threads = [threading.Thread(target=close) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert spy.events.count("released") == spy.events.count("admitted") == 20
    assert get_pool("process", name, 100).in_use() == 0


@pytest.mark.parametrize("kind", ["host", "process"])
def test_a_forked_child_drops_inherited_leases_without_freeing_the_parents(
    kind: str, tmp_path: Path
) -> None:
    backend = HostBackend(str(tmp_path / "pools")) if kind == "host" else ProcessBackend()
    pool = Pool(name="p", limit=2, backend=backend)
    lease = pool.try_acquire("k")
    assert lease is not None
    pid = os.fork()
    if pid == 0:  # the child: report with an exit code, never return into pytest
        code = 1
        try:
            lease.release()  # not the child's: a no-op
            mine = pool.try_acquire("k")  # host: the one slot the parent does not hold
            more = pool.try_acquire("k")  # process: the child's count starts empty
            if kind == "host":
                ok = mine is not None and more is None and pool.in_use("k") == 2
            else:
                ok = mine is not None and more is not None and pool.in_use("k") == 2
            if ok:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent still holds its slot, however the child ended.
    assert pool.in_use("k") == 1
    if isinstance(backend, HostBackend):
        fd = os.open(backend.path("p", "k"), os.O_RDONLY)
        try:
            locked = [ofdlock.is_locked(fd, slot) for slot in range(2)]
        finally:
            os.close(fd)
        assert locked.count(True) == 1
    lease.release()
    assert pool.in_use("k") == 0


# -- 8 decorator mistakes and the rejection body --------------------------------


def test_a_bare_decorator_says_it_needs_a_limit() -> None:
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"x")

    with pytest.raises(TypeError, match=r"needs a limit: write @limit_concurrency\(10\)"):
        limit_concurrency(view)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs a limit"):
        limit_concurrency()


def test_the_default_rejection_body_names_no_view() -> None:
    @limit_concurrency(1)
    def secret_internal_view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(b"x")

    first = secret_internal_view(rf.get("/"))
    second = secret_internal_view(rf.get("/"))
    assert second.status_code == 503
    assert b"secret_internal_view" not in second.content
    assert __name__.encode() not in second.content
    first.close()


def test_the_check_walks_the_default_dir_from_the_per_user_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_dir = tmp_path / "django-streamer-0"
    (user_dir / "project").mkdir(parents=True, mode=0o700)
    user_dir.chmod(0o755)  # as older code left it: others may look in
    pools = user_dir / "project" / "pools"
    real = state_dir
    monkeypatch.setattr(
        "django_streamer.checks.state_dir",
        lambda setting, part: (
            (str(pools), str(user_dir)) if part == "pools" else real(setting, part)
        ),
    )
    messages = [m for m in check_settings() if m.id == "django_streamer.E004"]
    assert len(messages) == 1 and f"{user_dir} has mode 0755" in messages[0].msg
    assert not pools.exists()  # a check makes nothing
    user_dir.chmod(0o700)
    assert [m for m in check_settings() if m.id == "django_streamer.E004"] == []


def test_both_backends_are_the_one_backend_interface(tmp_path: Path) -> None:
    backends: list[Backend] = [ProcessBackend(), HostBackend(str(tmp_path / "pools"))]
    assert [b.local_only for b in backends] == [True, False]


def test_keys_seen_once_do_not_push_a_busy_key_out_of_the_cache(tmp_path: Path) -> None:
    backend = HostBackend(str(tmp_path / "pools"), spare=2)
    pool = Pool(name="p", limit=1, backend=backend)
    busy = pool.try_acquire("busy")
    assert busy is not None
    inode = os.stat(backend.path("p", "busy")).st_ino
    for i in range(5):  # the cache fills with one-off keys while "busy" is held
        lease = pool.try_acquire(f"ip:{i}")
        assert lease is not None
        lease.release()
    busy.release()  # cached, evicting the oldest one-off key (whose file goes)
    assert len(os.listdir(backend.directory)) == 2
    again = pool.try_acquire("busy")
    assert again is not None and os.stat(backend.path("p", "busy")).st_ino == inode
    again.release()
