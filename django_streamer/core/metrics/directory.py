"""A metrics directory as readers see it: folding dead files, summing, resetting.

Readers never map another process's file: they ``pread`` it whole and check
it (:func:`.layout.parse`), so a bad file costs no descriptor and no
``SIGBUS``. A file that fails is renamed aside (``bad-...``), logged, and never
summed. The archive is rewritten with plain writes under a temporary name and
renamed in, so a full disk is an ``OSError``: this is what runs in the gunicorn
master's ``child_exit``.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import logging
import os
import time

from .. import ofdlock
from ..statedir import UnsafeStateError, check_private_dir, open_private_file, reserve
from .layout import BadFile, Geometry
from .names import Names
from .reading import Image, Snapshot, accumulate, fold, load, open_checked

__all__ = ["ARCHIVE", "MetricsDir"]

log = logging.getLogger("django_streamer")
ARCHIVE = "archive.bin"


class MetricsDir:
    """The files of one metrics directory: ``p-*.bin``, ``archive.bin``, ``names.bin``."""

    def __init__(self, path: str, names: Names) -> None:
        self.path = path
        self.names = names

    def entries(self, prefix: str) -> list[str]:
        try:
            found = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return sorted(os.path.join(self.path, n) for n in found if n.startswith(prefix))

    def lock(self, *, exclusive: bool, blocking: bool = True) -> int:
        """Serialise folding against readers: a flock on ``.lock``; its descriptor."""
        fd = open_private_file(os.path.join(self.path, ".lock"))
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            fcntl.flock(fd, mode if blocking else mode | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def quarantine(self, path: str, why: object) -> None:
        """Rename a bad file aside, so it is never read again, and say so."""
        aside = os.path.join(self.path, f"bad-{int(time.time())}-{os.path.basename(path)}")
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, aside)
            log.error("django-streamer metrics: %s is not a valid metrics file (%s); "
                      "moved to %s", path, why, aside)  # fmt: skip

    def _open(self, path: str) -> int | None:
        """A descriptor of ``path`` checked as ours; None if it is missing or bad (quarantined)."""
        try:
            return open_checked(path)
        except FileNotFoundError:
            return None
        except BadFile as exc:
            self.quarantine(path, exc)
            return None

    def read(self, path: str) -> Image | None:
        """A validated copy of ``path``; a bad one is quarantined, a missing one None."""
        fd = self._open(path)
        if fd is None:
            return None
        try:
            return load(fd)
        except BadFile as exc:
            self.quarantine(path, exc)
            return None
        finally:
            os.close(fd)

    def _dead(self, path: str) -> tuple[int, Image] | None:
        """(fd, image) of a dead process's file, its life lock now ours; None if it lives."""
        fd = self._open(path)
        if fd is None:
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

    def compact(self, *, skip: str | None = None, blocking: bool = True) -> int:
        """Fold the files of dead processes into the archive; return how many.

        ``blocking=False`` gives up (``BlockingIOError``) rather than wait for
        another process's compaction or snapshot.
        """
        problem = check_private_dir(self.path)
        if problem is not None:
            raise UnsafeStateError(f"unsafe metrics directory: {problem}")
        try:
            lock_fd = self.lock(exclusive=True, blocking=blocking)
        except FileNotFoundError:
            return 0  # no directory yet: nothing to fold
        dead: list[tuple[str, int, Image]] = []
        try:
            for path in self.entries("p-"):
                got = self._dead(path) if path != skip else None
                if got is not None:
                    dead.append((path, *got))
            if dead:
                self._write_archive([image for _, _, image in dead])
            for path, _, _ in dead:  # a crash before this counts them twice, never zero times
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
        for path in self.entries(".new-"):
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(path).st_mtime < time.time() - 60:
                    os.unlink(path)

    def _write_archive(self, dead: list[Image]) -> None:
        """Fold ``dead`` into a new archive, written with plain writes, then renamed in."""
        path = os.path.join(self.path, ARCHIVE)
        old = self.read(path)
        if old is not None:
            geometry, values = old.geometry, old.values
        else:
            geometry = Geometry(dead[0].geometry.max_names, 0)
            values = array.array("d")
            values.frombytes(geometry.header(0, time.time()).ljust(geometry.size, b"\0"))
        for image in dead:
            fold(image, values, geometry)
        tmp = os.path.join(self.path, ".archive.tmp")
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
        """Every figure, summed over the archive and the live processes' files."""
        try:
            names = self.names.all()
        except BadFile as exc:
            self.quarantine(self.names.path, exc)
            names = self.names.empty()
        snap = Snapshot(taken_at=time.time())
        lock_fd = self.lock(exclusive=False)
        try:
            archive = os.path.join(self.path, ARCHIVE)
            for path in [archive, *self.entries("p-")]:
                image = self.read(path)
                if image is not None:
                    snap.processes += path != archive
                    accumulate(image, names, snap)
        finally:
            os.close(lock_fd)
        return snap

    def reset(self) -> int:
        """Remove the names, the archive and every process file; how many went."""
        lock_fd = self.lock(exclusive=True)
        removed = 0
        try:
            paths = [self.names.path, os.path.join(self.path, ARCHIVE), *self.entries("p-")]
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                    removed += 1
        finally:
            os.close(lock_fd)
        return removed
