"""One process's writer, and any process's reader, of a metrics directory.

Each process writes its figures into its own mapped file (:mod:`.procfile`):
an update is one store into a mapped array of doubles, visible to readers at
once and kept by the kernel if the process is SIGKILLed. Each file is locked
(``F_OFD_SETLK``) by its process for its life, so a reader knows a dead
process by being able to take the lock: no pid checks, no pid reuse trouble.

Readers sum the live files plus ``archive.bin``, into which the files of dead
processes are folded before they are deleted. So totals never go backwards,
dead processes' gauges vanish, and the directory holds about one file per live
process. A file that fails validation is renamed aside (``bad-...``), logged,
and never summed.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import os
import threading
import time
import weakref

from .. import ofdlock
from ..statedir import (
    UnsafeStateError,
    check_private_dir,
    ensure_private_dir,
    open_private_file,
    reserve,
)
from .layout import BadFile, Geometry
from .names import Names
from .procfile import ProcessFile
from .reading import Image, Snapshot, accumulate, fold, load, open_checked

__all__ = ["Store"]

log = logging.getLogger("django_streamer")
ARCHIVE = "archive.bin"
_stores: weakref.WeakSet[Store] = weakref.WeakSet()


class Store:
    """The metrics directory ``directory``, made private on first use.

    ``owned_from`` (an ancestor, e.g. the per-user ``/dev/shm`` directory)
    is checked to be ours and private too. Figures are written only once
    :meth:`file` succeeds; its errors are the caller's to degrade.
    """

    def __init__(
        self,
        directory: str,
        *,
        max_names: int = 100,
        max_active: int = 512,
        owned_from: str | None = None,
        rebind_interval: float = 1.0,
    ) -> None:
        self.directory = directory
        self.owned_from = owned_from
        self.geometry = Geometry(max_names, max_active)
        self.max_names = max_names
        self.max_active = max_active
        self.names = Names(directory, max_names)
        self.rebind_interval = rebind_interval
        self.errors: dict[str, int] = {}  # this process's store failures, by cause
        self._file: ProcessFile | None = None
        self._check_at = 0.0
        self._lock = threading.Lock()
        self._free_active: list[int] = []
        _stores.add(self)

    def _after_fork(self) -> None:
        # The parent's file is the parent's: keeping its descriptor would keep
        # its life lock held after the parent dies. A child makes its own.
        if self._file is not None:
            self._file.drop()
        self._file = None
        self._lock = threading.Lock()

    # -- failures ----------------------------------------------------------

    def report(self, cause: str, exc: BaseException) -> None:
        """Count a store failure; log the first of each cause in this process."""
        first = cause not in self.errors
        self.errors[cause] = self.errors.get(cause, 0) + 1
        f = self._file
        if f is not None:
            with self._lock:
                f.add_error()
        if first:
            log.warning("django-streamer metrics: %s failed, figures dropped: %s", cause, exc)

    # -- writing -----------------------------------------------------------

    def file(self) -> ProcessFile:
        """This process's file, made on first use and again if it was unlinked.

        Whether the file is still in the directory is checked at most every
        ``rebind_interval`` seconds: one clock read per call otherwise.
        """
        f = self._file
        if f is not None:
            now = time.monotonic()
            if now < self._check_at:
                return f
            self._check_at = now + self.rebind_interval
            if f.still_named():
                return f
        with self._lock:
            if self._file is f:
                self._bind(f)
            assert self._file is not None
            return self._file

    def _bind(self, old: ProcessFile | None) -> None:
        if old is not None:  # unlinked under us (a reset, a deleted directory)
            log.warning("django-streamer metrics: %s was removed; starting a new file", old.path)
            old.drop()
            self._file = None
            self.names.forget()
        ensure_private_dir(self.directory, owned_from=self.owned_from)
        with contextlib.suppress(BlockingIOError):
            self.compact(blocking=False)  # a new process tidies what dead ones left
        self._file = ProcessFile(self.directory, self.geometry)
        self._check_at = time.monotonic() + self.rebind_interval
        self._free_active = list(range(self.max_active - 1, -1, -1))

    def stream_row(self, name: str) -> int:
        return self.names.row("stream", name)

    def pool_row(self, name: str) -> int:
        return self.names.row("pool", name)

    def lock(self) -> threading.Lock:
        return self._lock

    def take_active(self, f: ProcessFile, row: int, path: str) -> int:
        """Claim a row of ``f``'s active-streams table; -1 (and counted hidden) if full."""
        with self._lock:
            if f is not self._file or not self._free_active:
                f.add_hidden(1)
                return -1
            slot = self._free_active.pop()
        f.put_active(slot, row, path)
        return slot

    def free_active(self, f: ProcessFile, slot: int) -> None:
        if slot < 0:
            with self._lock:
                f.add_hidden(-1)
            return
        f.clear_active(slot)
        with self._lock:
            if f is self._file:
                self._free_active.append(slot)

    # -- reading -----------------------------------------------------------

    def _entries(self, prefix: str) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(os.path.join(self.directory, n) for n in names if n.startswith(prefix))

    def _dir_lock(self, exclusive: bool, blocking: bool = True) -> int:
        fd = open_private_file(os.path.join(self.directory, ".lock"))
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            fcntl.flock(fd, mode if blocking else mode | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def quarantine(self, path: str, why: object) -> None:
        """Rename a bad file aside, so it is never read again, and say so."""
        aside = os.path.join(self.directory, f"bad-{int(time.time())}-{os.path.basename(path)}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, aside)
            log.error("django-streamer metrics: %s is not a valid metrics file (%s); "
                      "moved to %s", path, why, aside)  # fmt: skip

    def _dead(self, path: str) -> tuple[int, Image] | None:
        """(fd, image) of a dead process's file, locked by us; None if it lives."""
        try:
            fd = open_checked(path)
        except FileNotFoundError:
            return None
        except BadFile as exc:
            self.quarantine(path, exc)
            return None
        try:
            if not ofdlock.lock_byte(fd, 0):
                os.close(fd)
                return None  # its process is alive
            return fd, load(fd)
        except BadFile as exc:
            os.close(fd)
            self.quarantine(path, exc)
            return None
        except BaseException:
            os.close(fd)
            raise

    def _read(self, path: str) -> Image | None:
        """A validated copy of ``path``; a bad one is quarantined, a missing one None."""
        try:
            fd = open_checked(path)
        except FileNotFoundError:
            return None
        except BadFile as exc:
            self.quarantine(path, exc)
            return None
        try:
            return load(fd)
        except BadFile as exc:
            self.quarantine(path, exc)
            return None
        finally:
            os.close(fd)

    def compact(self, *, blocking: bool = True) -> int:
        """Fold the files of dead processes into the archive; return how many.

        ``blocking=False`` gives up (``BlockingIOError``) rather than wait for
        another process's compaction or snapshot.
        """
        problem = check_private_dir(self.directory)
        if problem is not None:
            raise UnsafeStateError(f"unsafe metrics directory: {problem}")
        try:
            lock_fd = self._dir_lock(exclusive=True, blocking=blocking)
        except FileNotFoundError:
            return 0  # no directory yet: nothing to fold
        dead: list[tuple[str, int, Image]] = []
        try:
            own = self._file.path if self._file is not None else None
            for path in self._entries("p-"):
                got = self._dead(path) if path != own else None
                if got is not None:
                    dead.append((path, *got))
            if dead:
                self._write_archive([image for _, _, image in dead])
            for path, _, _ in dead:
                os.unlink(path)
            self._sweep_unfinished()
        finally:
            for _, fd, _ in dead:
                os.close(fd)
            os.close(lock_fd)
        return len(dead)

    def _sweep_unfinished(self) -> None:
        # A ``.new-`` file older than a minute is from a process that died
        # while creating it (creation takes microseconds).
        for path in self._entries(".new-"):
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(path).st_mtime < time.time() - 60:
                    os.unlink(path)

    def _write_archive(self, dead: list[Image]) -> None:
        """Fold ``dead`` into a new archive, written with plain writes, then renamed in."""
        path = os.path.join(self.directory, ARCHIVE)
        old = self._read(path)
        if old is not None:
            geometry, values = old.geometry, old.values
        else:
            geometry = Geometry(dead[0].geometry.max_names, 0)
            values = array.array("d")
            values.frombytes(geometry.header(0, time.time()).ljust(geometry.size, b"\0"))
        for image in dead:
            fold(image, values, geometry)
        tmp = os.path.join(self.directory, ".archive.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # left by a compaction that died; we hold the directory lock
        fd = open_private_file(tmp, exclusive=True)
        try:
            reserve(fd, geometry.size)
            os.pwrite(fd, values.tobytes(), 0)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            os.close(fd)

    def snapshot(self) -> Snapshot:
        """Every figure, summed over the archive and the live processes."""
        ensure_private_dir(self.directory, owned_from=self.owned_from)
        self.compact()
        names = self.names.all()
        snap = Snapshot(taken_at=time.time())
        lock_fd = self._dir_lock(exclusive=False)
        try:
            archive = os.path.join(self.directory, ARCHIVE)
            for path in [archive, *self._entries("p-")]:
                image = self._read(path)
                if image is not None:
                    snap.processes += path != archive
                    accumulate(image, names, snap)
        finally:
            os.close(lock_fd)
        return snap

    def reset(self) -> int:
        """Forget every name and figure, host wide; return how many files went.

        Live processes notice their file is gone within ``rebind_interval``
        and start new ones; what they record meanwhile is dropped.
        """
        ensure_private_dir(self.directory, owned_from=self.owned_from)
        lock_fd = self._dir_lock(exclusive=True)
        removed = 0
        try:
            for path in [self.names.path, os.path.join(self.directory, ARCHIVE)]:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed += 1
            for path in self._entries("p-"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed += 1
        finally:
            os.close(lock_fd)
        with self._lock:
            if self._file is not None:
                self._file.drop()
            self._file = None
            self.names.forget()
        return removed


def _after_fork_in_child() -> None:
    for store in list(_stores):
        store._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
