"""This process's metrics file: created whole and locked before anyone sees it.

The file is made under a temporary name with ``O_EXCL``, its life lock taken
and its space reserved, and only then renamed to ``p-<pid>-<id>.bin``: no
other process's :meth:`Store.compact` can ever find it unlocked and fold it.
Reserving the space means a full filesystem is an ``OSError`` here, never a
``SIGBUS`` at a later mapped write.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
import uuid

from .. import ofdlock
from ..statedir import open_private_file, reserve
from .layout import ACTIVE, ERRORS_AT, HIDDEN_AT, POOL, STREAM, Geometry

__all__ = ["ProcessFile"]


class ProcessFile:
    """A mapped metrics file this process writes: rows of doubles and active streams."""

    def __init__(self, directory: str, geometry: Geometry) -> None:
        self.geometry = geometry
        self.stream_base = geometry.stream_base
        self.pool_base = geometry.pool_base
        self.active_base = geometry.active_base
        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp = os.path.join(directory, f".new-{token}")
        self.path = os.path.join(directory, f"p-{token}.bin")
        self.fd = open_private_file(tmp, exclusive=True)
        try:
            if not ofdlock.lock_byte(self.fd, 0):
                raise RuntimeError(f"cannot lock {tmp}, which this process just made")
            reserve(self.fd, geometry.size)
            os.pwrite(self.fd, geometry.header(os.getpid(), time.time()), 0)
            self.map = mmap.mmap(self.fd, geometry.size)
            os.rename(tmp, self.path)
        except BaseException:
            os.close(self.fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        st = os.fstat(self.fd)
        self.identity = (st.st_dev, st.st_ino)
        self.values = memoryview(self.map).cast("d")
        # (row, path) last written into each active-streams record: the store
        # hands out the record freed last, so a worker's next stream often
        # finds its row and path there already.
        self._held: list[tuple[int, str] | None] = [None] * geometry.max_active

    def still_named(self) -> bool:
        """True while ``path`` still names this file (it was not unlinked or replaced)."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.identity

    def stream_at(self, row: int, figure: str) -> int:
        return self.stream_base + row * STREAM.width + STREAM.offsets[figure]

    def pool_at(self, row: int, figure: str) -> int:
        return self.pool_base + row * POOL.width + POOL.offsets[figure]

    def add_error(self, count: int) -> None:
        self.values[ERRORS_AT] += count

    def add_hidden(self, delta: int) -> None:
        self.values[HIDDEN_AT] += delta

    def put_active(self, slot: int, row: int, path: str) -> int:
        """Fill record ``slot``; return where its bytes sent are in ``values``,
        for the stream to update as it goes."""
        at = self.active_base + slot * ACTIVE.size
        sent = (at + 16) // 8
        held = (row, path)
        if self._held[slot] == held:  # only the times to write: a third of the work
            values = self.values
            values[sent] = 0.0
            values[sent - 1] = time.time()  # last: a non-zero start marks it taken
        else:
            path_bytes = path.encode("utf-8", "replace")[:200]
            ACTIVE.pack_into(self.map, at, row, time.time(), 0.0, path_bytes)
            self._held[slot] = held
        return sent

    def clear_active(self, slot: int) -> None:
        # A zero ``started`` marks the record free for readers.
        self.values[(self.active_base + slot * ACTIVE.size + 8) // 8] = 0.0

    def drop(self) -> None:
        """Close the descriptor, so its life lock goes with it.

        The mapping is left to the garbage collector: recorders still holding
        it keep writing into memory nobody reads, which is what dropping
        their figures means.
        """
        with contextlib.suppress(OSError):
            os.close(self.fd)
