"""One process's view of a metrics directory: its own file, and the readers' calls.

Each process writes its figures into its own mapped file (:mod:`.procfile`):
an update is one store into a mapped array of doubles, visible to readers at
once and kept by the kernel if the process is SIGKILLed. Each file is locked
(``F_OFD_SETLK``) by its process for its life, so a reader knows a dead
process by being able to take the lock: no pid checks, no pid reuse trouble.
Readers (:mod:`.directory`) sum the live files plus an archive of the dead
ones, so totals never go backwards and dead processes' gauges vanish.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref

from ..statedir import ensure_private_dir
from .directory import MetricsDir
from .layout import POOL, STREAM, Geometry
from .names import Names
from .procfile import ProcessFile
from .reading import Snapshot

__all__ = ["Store"]

log = logging.getLogger("django_streamer")
_stores: weakref.WeakSet[Store] = weakref.WeakSet()
_fork_hook: list[bool] = []  # registered on the first Store, not at import


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
        self.dir = MetricsDir(directory, self.names)
        self.rebind_interval = rebind_interval
        self.errors: dict[str, int] = {}  # this process's store failures, by cause
        self._logged: set[tuple[str, str]] = set()  # the problems logged, once each
        self._file: ProcessFile | None = None
        self._check_at = 0.0
        # Held for every write of figures: an attribute, not a method, as a
        # stream takes it three times.
        self.lock = threading.Lock()
        self._free_active: list[int] = []
        self._unfiled_errors = 0  # failures before this process had a file
        # Pool name -> (file, offset of its row): a limited request writes its
        # pool's row twice, and finding it costs more than the writes.
        self._pool_rows: dict[str, tuple[ProcessFile, int]] = {}
        # Stream name -> (file, offset of its row, row): the same, per stream.
        self._stream_rows: dict[str, tuple[ProcessFile, int, int]] = {}
        _stores.add(self)
        if not _fork_hook:
            _fork_hook.append(True)
            os.register_at_fork(after_in_child=_after_fork_in_child)

    def _after_fork(self) -> None:
        # The parent's file is the parent's: keeping its descriptor would keep
        # its life lock held after the parent dies. A child makes its own.
        if self._file is not None:
            self._file.drop()
        self._file = None
        self._forget_rows()
        self.lock = threading.Lock()
        self.names.after_fork()
        self.errors = {}  # "logged once per process": the child logs its own
        self._logged = set()
        self._unfiled_errors = 0

    # -- failures ----------------------------------------------------------

    def report(self, cause: str, exc: BaseException) -> None:
        """Count a store failure; log the first of each problem in this process.

        One problem (an unsafe directory, a full disk) reached by streams and by
        pools alike is logged once: the key is the exception, not who met it.
        """
        problem = (type(exc).__name__, str(exc))
        first = problem not in self._logged
        if first and len(self._logged) < 100:  # bounded: messages may carry paths
            self._logged.add(problem)
        self.errors[cause] = self.errors.get(cause, 0) + 1
        with self.lock:
            if self._file is not None:
                self._file.add_error(1)
            else:
                self._unfiled_errors += 1
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
        with self.lock:
            if self._file is f:
                self._bind(f)
            assert self._file is not None
            return self._file

    def _bind(self, old: ProcessFile | None) -> None:
        if old is not None:  # unlinked under us (a reset, a deleted directory)
            log.warning("django-streamer metrics: %s was removed; starting a new file", old.path)
            old.drop()
            self._file = None
            self._forget_rows()
            self.names.forget()
        ensure_private_dir(self.directory, owned_from=self.owned_from)
        with contextlib.suppress(BlockingIOError):
            self.compact(blocking=False)  # a new process tidies what dead ones left
        self._file = ProcessFile(self.directory, self.geometry)
        self._file.add_error(self._unfiled_errors)
        self._unfiled_errors = 0
        self._check_at = time.monotonic() + self.rebind_interval
        self._free_active = list(range(self.max_active - 1, -1, -1))

    def _forget_rows(self) -> None:
        # With the file dropped: its mapping holds a copy of the descriptor,
        # so a cached reference would keep its life lock (in a forked child,
        # the parent's file alive after the parent died).
        self._pool_rows = {}
        self._stream_rows = {}

    def stream_row(self, name: str) -> int:
        return self.names.row("stream", name)

    def pool_row(self, name: str) -> int:
        return self.names.row("pool", name)

    def pool_figures(self, name: str) -> tuple[ProcessFile, int]:
        """This process's file and where pool ``name``'s row starts in ``values``.

        As :meth:`stream_figures`: one lookup and a clock read while the file
        is current and was checked within ``rebind_interval``.
        """
        found = self._pool_rows.get(name)
        if found is not None and found[0] is self._file and time.monotonic() < self._check_at:
            return found
        f = self.file()
        if found is not None and found[0] is f:
            return found
        row = self.pool_row(name)
        found = (f, f.pool_at(row, "admitted") - POOL.offsets["admitted"])
        if row:  # "other" may be a busy names lock's answer this once: not kept
            if len(self._pool_rows) >= 1024:
                self._pool_rows.clear()
            self._pool_rows[name] = found
        return found

    def stream_figures(self, name: str, now: float) -> tuple[ProcessFile, int, int]:
        """This process's file, where stream ``name``'s row starts in ``values``,
        and the row; ``now`` is the caller's ``time.monotonic()``.

        Per stream: one lookup while the file is current and was checked
        within ``rebind_interval`` (what :meth:`file` does, without its call).
        """
        found = self._stream_rows.get(name)
        if found is not None and found[0] is self._file and now < self._check_at:
            return found
        f = self.file()
        if found is not None and found[0] is f:
            return found
        row = self.stream_row(name)
        found = (f, f.stream_at(row, "started") - STREAM.offsets["started"], row)
        if row:  # "other" may be a busy names lock's answer this once: not kept
            if len(self._stream_rows) >= 1024:
                self._stream_rows.clear()
            self._stream_rows[name] = found
        return found

    def take_active(self, f: ProcessFile, row: int, path: str) -> int:
        """Claim a row of ``f``'s active-streams table; -1 (and counted hidden) if full."""
        with self.lock:
            slot = self.take_active_locked(f)
        if slot >= 0:
            f.put_active(slot, row, path)
        return slot

    def take_active_locked(self, f: ProcessFile) -> int:
        """``take_active`` for a caller holding ``lock``; the caller fills the row
        (``f.put_active``) after it lets go.
        """
        if f is not self._file or not self._free_active:
            f.add_hidden(1)
            return -1
        return self._free_active.pop()

    def free_active(self, f: ProcessFile, slot: int) -> None:
        with self.lock:
            self.free_active_locked(f, slot)

    def free_active_locked(self, f: ProcessFile, slot: int) -> None:
        """``free_active`` for a caller holding ``lock`` (one lock round for a stream's end)."""
        if slot < 0:
            f.add_hidden(-1)
            return
        f.clear_active(slot)
        if f is self._file:
            self._free_active.append(slot)

    # -- reading -----------------------------------------------------------

    def compact(self, *, blocking: bool = True) -> int:
        """Fold the files of dead processes into the archive; return how many."""
        own = self._file.path if self._file is not None else None
        return self.dir.compact(skip=own, blocking=blocking)

    def snapshot(self) -> Snapshot:
        """Every figure, summed over the archive and the live processes."""
        ensure_private_dir(self.directory, owned_from=self.owned_from)
        self.compact()
        return self.dir.snapshot()

    def reset(self) -> int:
        """Forget every name and figure, host wide; return how many files went.

        Live processes notice their file is gone within ``rebind_interval``
        and start new ones; what they record meanwhile is dropped.
        """
        ensure_private_dir(self.directory, owned_from=self.owned_from)
        removed = self.dir.reset()
        with self.lock:
            if self._file is not None:
                self._file.drop()
            self._file = None
            self._forget_rows()
            self.names.forget()
        return removed


def _after_fork_in_child() -> None:
    for store in list(_stores):
        store._after_fork()
