"""Hardening of the metrics store (issue 7): hostile directories and files,
full filesystems, failures that must not break requests, bounded names, lost
streams, and the races around process files."""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import math
import os
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.test import Client

from django_streamer.checks import check_configuration
from django_streamer.core import ofdlock
from django_streamer.core.metrics import (
    Store,
    StreamMetrics,
    check_name,
    record_admitted,
    record_released,
)
from django_streamer.core.metrics.layout import HEADER_SIZE, Geometry
from django_streamer.core.recorder import Outcome
from django_streamer.core.statedir import UnsafeStateError

from .forking import in_child, killed_child, stream

OUTCOMES = ("completed", "aborted", "failed", "lost", "drained")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- 1. state directory safety -------------------------------------------------


def test_a_directory_others_can_write_is_refused_naming_it(tmp_path: Path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    with pytest.raises(UnsafeStateError, match=str(shared)) as caught:
        Store(str(shared)).file()
    assert "chmod 700" in str(caught.value)


def test_a_per_user_directory_made_by_someone_else_is_refused(tmp_path: Path):
    top = tmp_path / "django-streamer-0"
    top.mkdir(mode=0o700)
    os.chown(top, 4242, 4242)  # another user got there first
    with pytest.raises(UnsafeStateError, match="owned by uid 4242"):
        Store(str(top / "proj" / "metrics"), owned_from=str(top)).file()


@pytest.fixture
def unsafe_dir(tmp_path, settings):
    path = tmp_path / "metrics"
    path.mkdir()
    os.chmod(path, 0o777)
    settings.STREAMER_METRICS_DIR = str(path)
    return path


@pytest.mark.django_db
def test_unsafe_dir_streams_are_served_logged_once_and_the_endpoint_says_why(unsafe_dir, caplog):
    client = Client()
    with caplog.at_level(logging.WARNING, logger="django_streamer"):
        for _ in range(3):
            body = b"".join(client.get("/stream/?kind=sync&items=3&tag=u"))
            assert len(body) == 3 * 33
    assert sum("unsafe state directory" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(ImproperlyConfigured, match=str(unsafe_dir)):
        client.get("/streaming/metrics/", REMOTE_ADDR="127.0.0.1")
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    client.force_login(staff)
    with pytest.raises(ImproperlyConfigured, match="STREAMER_METRICS_DIR"):
        client.get("/admin/streaming/data.json")


def test_the_system_check_names_the_unsafe_dir_and_has_no_side_effects(unsafe_dir, settings):
    [error] = [m for m in check_configuration() if m.id == "django_streamer.E008"]
    assert str(unsafe_dir) in error.msg
    settings.STREAMER_METRICS_DIR = str(unsafe_dir.parent / "not-yet")
    assert [m for m in check_configuration() if m.id == "django_streamer.E008"] == []
    assert not (unsafe_dir.parent / "not-yet").exists()


# -- 2. full filesystem: OSError, never SIGBUS ---------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:  # CI runs as root: this must work there
        pytest.fail(f"cannot mount a test tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(directory: Path, leave: int) -> None:
    """Fill the filesystem of ``directory`` but ``leave`` bytes."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        stat = os.statvfs(directory)
        free = stat.f_bavail * stat.f_frsize
        os.ftruncate(fd, max(0, os.fstat(fd).st_size - (leave - free)))
    finally:
        os.close(fd)


def test_a_full_tmpfs_is_an_oserror_at_creation_not_sigbus(tiny_tmpfs: Path):
    metrics = tiny_tmpfs / "m"
    fill(tiny_tmpfs, leave=16 * 1024)  # room for the names, not for a process file

    def record() -> int:
        store = Store(str(metrics))
        try:  # before the fix: SIGBUS once the active-streams table reached a new page
            for _ in range(600):
                StreamMetrics(store, "s", "/x").start()
        except OSError:
            return 3
        return 0

    status = in_child(record)
    assert not os.WIFSIGNALED(status), f"killed by signal {os.WTERMSIG(status)}"
    assert os.WEXITSTATUS(status) == 3
    assert list(metrics.glob("p-*")) == [] and list(metrics.glob(".new-*")) == []


def test_folding_on_a_full_tmpfs_is_an_error_and_keeps_the_dead_file(tiny_tmpfs: Path):
    metrics = tiny_tmpfs / "m"
    in_child(lambda: stream(Store(str(metrics), max_active=8), "s", [7], Outcome.COMPLETED))
    [dead] = metrics.glob("p-*.bin")
    fill(tiny_tmpfs, leave=0)

    def fold() -> int:
        try:
            Store(str(metrics), max_active=8).compact()  # what child_exit runs
        except OSError:
            return 3
        return 0

    status = in_child(fold)
    assert not os.WIFSIGNALED(status) and os.WEXITSTATUS(status) == 3
    assert dead.exists()  # its figures are kept for a later fold
    os.unlink(tiny_tmpfs / "filler")
    assert Store(str(metrics)).snapshot().streams["s"]["bytes"] == 7


# -- 3. failure degrades, rebinding, validation --------------------------------


def test_a_worker_whose_file_was_unlinked_rebinds(tmp_path: Path):
    store = Store(str(tmp_path), rebind_interval=0.0)
    stream(store, "s", [1], Outcome.COMPLETED)
    [first] = tmp_path.glob("p-*.bin")
    first.unlink()
    stream(store, "s", [10], Outcome.COMPLETED)
    [second] = tmp_path.glob("p-*.bin")
    assert second != first
    assert Store(str(tmp_path)).snapshot().streams["s"]["bytes"] == 10


def test_a_replaced_file_is_noticed_within_the_rebind_interval(tmp_path: Path):
    # A stream finds its row in a per-name cache: that must notice the new file too.
    store = Store(str(tmp_path), rebind_interval=0.2)
    stream(store, "s", [1], Outcome.COMPLETED)
    [first] = tmp_path.glob("p-*.bin")
    first.unlink()
    time.sleep(0.25)
    stream(store, "s", [10], Outcome.COMPLETED)
    [second] = tmp_path.glob("p-*.bin")
    assert second != first
    assert Store(str(tmp_path)).snapshot().streams["s"]["bytes"] == 10


def test_a_deleted_directory_is_made_again_and_the_worker_rebinds(tmp_path: Path):
    directory = tmp_path / "m"
    store = Store(str(directory), rebind_interval=0.0)
    stream(store, "s", [1], Outcome.COMPLETED)
    shutil.rmtree(directory)
    stream(store, "s", [10], Outcome.COMPLETED)
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert Store(str(directory)).snapshot().streams["s"]["bytes"] == 10


def test_failures_before_the_file_existed_are_counted_once_it_does(tmp_path: Path):
    store = Store(str(tmp_path))
    store.report("early", OSError("no space"))
    store.file()
    assert Store(str(tmp_path)).snapshot().store_errors == 1


def write_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, data)
    os.close(fd)


def valid_bytes(max_names: int = 2, max_active: int = 1) -> bytearray:
    geometry = Geometry(max_names, max_active)
    return bytearray(geometry.header(1, 0.0).ljust(geometry.size, b"\0"))


def bad_files() -> dict[str, bytes]:
    nan = valid_bytes()
    struct.pack_into("<d", nan, HEADER_SIZE + 8, math.nan)
    inf = valid_bytes()
    struct.pack_into("<d", inf, HEADER_SIZE, math.inf)
    row = valid_bytes()
    at = Geometry(2, 1).active_base
    struct.pack_into("<i4xdd", row, at, 9999, 1.0, 0.0)  # a row past max_names
    huge = valid_bytes()
    struct.pack_into("<I", huge, 12, 10**9)  # claims a billion names
    return {
        "garbage": b"hello world" * 10,
        "short": bytes(valid_bytes())[:-8],
        "nan": bytes(nan),
        "inf": bytes(inf),
        "row": bytes(row),
        "huge": bytes(huge),
        "magic": b"XXXX" + bytes(valid_bytes())[4:],
    }


@pytest.mark.parametrize("kind", sorted(bad_files()))
def test_a_bad_file_is_quarantined_never_summed(tmp_path: Path, kind: str, caplog):
    store = Store(str(tmp_path))
    stream(store, "s", [5], Outcome.COMPLETED)
    write_file(tmp_path / f"p-1-{kind}.bin", bad_files()[kind])
    write_file(tmp_path / "archive.bin", bad_files()[kind])
    with caplog.at_level(logging.ERROR, logger="django_streamer"):
        snap = store.snapshot()
    assert snap.streams["s"]["bytes"] == 5 and snap.processes == 1
    assert not (tmp_path / f"p-1-{kind}.bin").exists()
    assert not (tmp_path / "archive.bin").exists()
    assert len(list(tmp_path.glob("bad-*"))) == 2
    assert sum("not a valid metrics file" in r.getMessage() for r in caplog.records) == 2


def test_a_symlinked_process_file_is_quarantined_not_followed(tmp_path: Path):
    target = tmp_path.parent / f"{tmp_path.name}-target"
    target.write_bytes(bytes(valid_bytes()))
    (tmp_path / "p-1-link.bin").symlink_to(target)
    Store(str(tmp_path)).snapshot()
    assert not (tmp_path / "p-1-link.bin").is_symlink()
    assert target.read_bytes() == bytes(valid_bytes())  # untouched


def test_a_symlinked_names_table_is_quarantined_and_the_scrape_still_answers(tmp_path: Path):
    store = Store(str(tmp_path))
    stream(store, "s", [5], Outcome.COMPLETED)
    target = tmp_path.parent / f"{tmp_path.name}-names"
    target.write_bytes(b"")
    os.unlink(tmp_path / "names.bin")
    (tmp_path / "names.bin").symlink_to(target)
    snap = store.snapshot()
    assert snap.streams["other"]["bytes"] == 5  # unlabelled, but served
    assert not (tmp_path / "names.bin").is_symlink()
    assert target.read_bytes() == b""


def test_200_scrapes_of_bad_files_leak_no_descriptors(tmp_path: Path):
    store = Store(str(tmp_path))
    store.snapshot()
    before = open_fds()
    for i in range(200):
        write_file(tmp_path / f"p-1-{i}.bin", bad_files()["short"])
        store.snapshot()
    assert open_fds() == before


def test_store_errors_are_counted_in_the_snapshot(tmp_path: Path):
    store = Store(str(tmp_path))
    store.file()
    store.report("a test cause", OSError("boom"))
    store.report("a test cause", OSError("boom"))
    assert store.errors == {"a test cause": 2}
    assert Store(str(tmp_path)).snapshot().store_errors == 2


# -- 4. names ------------------------------------------------------------------

SEPARATORS = ["\n", "\r", "\t", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("sep", SEPARATORS)
def test_check_name_refuses_separators_naming_the_stream(sep: str):
    with pytest.raises(ValueError, match=r"stream name 'a.*b'"):
        check_name(f"a{sep}b")


def test_check_name_refuses_empty_long_and_non_strings():
    for bad in ("", "x" * 249, 5, None):
        with pytest.raises(ValueError):
            check_name(bad)
    assert check_name("a b é ü/ok") == "a b é ü/ok"


def test_separators_never_relabel_other_streams(tmp_path: Path):
    store = Store(str(tmp_path))
    for sep in SEPARATORS:
        stream(store, f"victim{sep}stream\tpool", [1], Outcome.COMPLETED)
    stream(store, "victim", [100], Outcome.COMPLETED)
    stream(store, "é ü: ok", [10], Outcome.COMPLETED)
    snap = Store(str(tmp_path)).snapshot()
    assert snap.streams["victim"]["bytes"] == 100
    assert snap.streams["é ü: ok"]["bytes"] == 10
    assert snap.streams["other"]["bytes"] == len(SEPARATORS)
    assert sorted(snap.streams) == ["other", "victim", "é ü: ok"]


def test_names_past_the_cap_cost_no_io_and_no_memory(tmp_path: Path, monkeypatch):
    store = Store(str(tmp_path), max_names=3)
    for i in range(4):
        store.stream_row(f"s{i}")
    opened = []
    real_open = os.open

    def counting_open(*args: Any, **kwargs: Any) -> int:
        opened.append(args)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    rows = {store.stream_row("long name " * 20 + str(i)) for i in range(10_000)}
    assert rows == {0} and opened == []
    assert store.names.cached <= 3


def test_a_held_names_lock_never_blocks_a_lookup(tmp_path: Path):
    store = Store(str(tmp_path))
    store.stream_row("first")
    holder = os.open(tmp_path / "names.bin", os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # e.g. a stopped process
    try:
        began = time.monotonic()
        assert store.stream_row("second") == 0  # counted as other, this once
        assert time.monotonic() - began < 0.05
    finally:
        os.close(holder)
    assert store.stream_row("second") == 2  # not cached as other


@pytest.mark.django_db
def test_streamer_reset_names_forgets_names_and_figures(tmp_path: Path, settings):
    settings.STREAMER_METRICS_DIR = str(tmp_path / "m")
    settings.STREAMER_METRICS_MAX_NAMES = 1
    from django_streamer.metrics import get_store

    store = get_store()
    stream(store, "taken", [1], Outcome.COMPLETED)
    stream(store, "late", [1], Outcome.COMPLETED)
    assert sorted(store.snapshot().streams) == ["other", "taken"]
    out = io.StringIO()
    call_command("streamer_reset_names", stdout=out)
    assert "file(s) removed" in out.getvalue()
    assert store.snapshot().streams == {}
    stream(store, "late", [1], Outcome.COMPLETED)
    assert sorted(store.snapshot().streams) == ["late"]


def test_a_full_active_table_says_how_many_are_not_shown(tmp_path: Path):
    store = Store(str(tmp_path), max_active=2)
    recs = [StreamMetrics(store, "s", f"/{i}") for i in range(3)]
    for rec in recs:
        rec.start()
    snap = store.snapshot()
    assert len(snap.active) == 2 and snap.active_hidden == 1
    assert snap.streams["s"]["active"] == 3
    for rec in recs:
        rec.finish(Outcome.COMPLETED)
    snap = store.snapshot()
    assert snap.active == [] and snap.active_hidden == 0


# -- 7. lost outcomes ----------------------------------------------------------


def test_a_sigkilled_process_counts_its_active_streams_as_lost(tmp_path: Path):
    def hold() -> None:
        child = Store(str(tmp_path))
        stream(child, "s", [5], Outcome.COMPLETED)
        for _ in range(2):
            StreamMetrics(child, "s", "/held").start()

    with killed_child(hold):
        pass
    e = Store(str(tmp_path)).snapshot().streams["s"]
    assert (e["started"], e["completed"], e["lost"], e["active"]) == (3, 1, 2, 0)
    assert e["started"] == sum(e[o] for o in OUTCOMES) + e["active"]  # type: ignore[misc, operator]


# -- 8. races ------------------------------------------------------------------


def test_a_new_file_is_locked_when_it_appears_and_stale_temporaries_are_swept(tmp_path: Path):
    stale = tmp_path / ".new-1-dead"
    write_file(stale, b"")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    seen: list[bool] = []
    stop = threading.Event()

    def watch() -> None:  # another process's compact() would look exactly so
        while not stop.is_set():
            for p in tmp_path.glob("p-*.bin"):
                with contextlib.suppress(FileNotFoundError):
                    fd = os.open(p, os.O_RDWR)
                    seen.append(ofdlock.is_locked(fd, 0))
                    os.close(fd)

    watcher = threading.Thread(target=watch)
    watcher.start()
    hold, release = os.pipe()  # children live (files locked) until this closes
    children = []
    try:
        for _ in range(30):
            pid = os.fork()
            if pid == 0:
                os.close(release)
                Store(str(tmp_path)).file()
                os.read(hold, 1)
                os._exit(0)
            children.append(pid)
        time.sleep(0.2)
    finally:
        stop.set()
        watcher.join()
        os.close(release)
        for pid in children:
            os.waitpid(pid, 0)
        os.close(hold)
    assert len(seen) > 30 and all(seen)
    assert not stale.exists()


@pytest.mark.parametrize("pools", [False, True])
def test_a_forked_child_does_not_keep_its_parents_file_alive(tmp_path: Path, pools: bool):
    # The store keeps its rows' places per name, with the file: those must not
    # keep the parent's mapping (and so its descriptor and life lock) either.
    read, write = os.pipe()

    def parent() -> None:
        store = Store(str(tmp_path))
        stream(store, "s", [3], Outcome.COMPLETED)
        if pools:
            record_admitted(store, "p", 2, 0.0)
            record_released(store, "p")
        if os.fork() == 0:  # a grandchild that outlives its parent
            os.write(write, str(os.getpid()).encode())
            time.sleep(30)
            os._exit(0)

    in_child(parent)
    grandchild = int(os.read(read, 32))
    try:
        assert Store(str(tmp_path)).compact() == 1
        assert list(tmp_path.glob("p-*.bin")) == []
    finally:
        os.kill(grandchild, signal.SIGKILL)
        os.close(read)
        os.close(write)


def test_the_mirror_lock_is_private_and_close_on_exec(tmp_path: Path, settings):
    settings.STREAMER_METRICS_DIR = str(tmp_path / "m")
    from django_streamer.metrics import get_store, open_mirror_lock

    get_store().file()
    fd = open_mirror_lock()
    try:
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert os.fstat(fd).st_mode & 0o777 == 0o600
    finally:
        os.close(fd)


def test_a_stream_finished_before_it_started_takes_no_row_and_hides_nothing(tmp_path: Path):
    store = Store(str(tmp_path), max_active=1)
    StreamMetrics(store, "s", "/never").finish(Outcome.ABORTED)
    rec = StreamMetrics(store, "s", "/shown")
    rec.start()  # the only row is still free
    snap = store.snapshot()
    assert [a["path"] for a in snap.active] == ["/shown"] and snap.active_hidden == 0
    rec.finish(Outcome.COMPLETED)
    assert store.snapshot().active_hidden == 0


def test_a_reused_active_record_shows_the_new_stream_only(tmp_path: Path):
    # A finished stream's record is the next one handed out; when the row and
    # path are the same, only the times are written again (bytes back to 0).
    store = Store(str(tmp_path), max_active=1)
    reader = Store(str(tmp_path))

    def active(rec: StreamMetrics) -> dict[str, Any]:
        rec.start()
        [entry] = reader.snapshot().active
        rec.chunk(50)
        [after] = reader.snapshot().active
        assert after["bytes"] == 50
        rec.finish(Outcome.COMPLETED)
        assert reader.snapshot().active == []
        return entry

    first = active(StreamMetrics(store, "a", "/one"))
    time.sleep(0.01)
    same = active(StreamMetrics(store, "a", "/one"))
    other_path = active(StreamMetrics(store, "a", "/two"))
    other_name = active(StreamMetrics(store, "b", "/two"))
    assert [
        (e["stream"], e["path"], e["bytes"]) for e in (first, same, other_path, other_name)
    ] == [
        ("a", "/one", 0),
        ("a", "/one", 0),
        ("a", "/two", 0),
        ("b", "/two", 0),
    ]
    assert same["started"] > first["started"]
