"""Host-wide name -> row assignment, shared through ``names.bin``.

``names.bin`` is a table of fixed 256-byte records (kind, length, row, UTF-8
name), so no name can be read as two, whatever characters it holds. Row 0 of
each kind is ``other``; the first ``max_names`` names of a kind get rows 1..N,
first come first served, and later names are counted under ``other``.

A process asks the file only for names it has not seen. Its cache holds at
most the names that have rows, and once a kind is full any unknown name is
``other`` with no file I/O and no lock. The file lock is never waited on: if
another process holds it for longer than a few short tries, the name is
counted under ``other`` this once (the worker may run an event loop).
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
import unicodedata

from ..statedir import UnsafeStateError, open_private_file
from .layout import BadFile

__all__ = ["NAME_BYTES", "OTHER", "Names", "check_name"]

OTHER = "other"
RECORD = struct.Struct("<BBHI248s")  # kind, (reserved), length, row, name
NAME_BYTES = 248
KINDS = {"stream": 1, "pool": 2}
_LOCK_TRIES = 5


def check_name(name: object, *, what: str = "stream") -> str:
    """``name`` if it can label figures; otherwise a ``ValueError`` naming it.

    Refused: non-strings, empty names, control characters and line or
    paragraph separators (which once relabelled other streams' figures), and
    names over 248 UTF-8 bytes.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} name {name!r} must be a non-empty string")
    if name.isprintable() and len(name) <= NAME_BYTES // 4:
        return name  # the common case, in C: no control character, short enough
    for ch in name:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            raise ValueError(f"{what} name {name!r} contains the control character {ch!r}")
    if len(name.encode("utf-8")) > NAME_BYTES:
        raise ValueError(f"{what} name {name[:40]!r}... is over {NAME_BYTES} UTF-8 bytes")
    return name


def _valid(name: str) -> bool:
    try:
        check_name(name)
    except ValueError:
        return False
    return True


def read_table(data: bytes) -> dict[tuple[str, str], int]:
    """``(kind, name) -> row`` from the file's bytes; damaged records are skipped."""
    kinds = {v: k for k, v in KINDS.items()}
    table: dict[tuple[str, str], int] = {}
    for at in range(0, len(data) - RECORD.size + 1, RECORD.size):
        kind, _, length, row, raw = RECORD.unpack_from(data, at)
        try:
            name = raw[:length].decode("utf-8")
        except UnicodeDecodeError:
            continue
        if kind in kinds and row > 0 and length <= NAME_BYTES and _valid(name):
            table[(kinds[kind], name)] = row
    return table


class Names:
    """The names table of one metrics directory, as one process sees it."""

    def __init__(self, directory: str, max_names: int) -> None:
        self.path = os.path.join(directory, "names.bin")
        self.max_names = max_names
        self._cache: dict[tuple[str, str], int] = {}
        self._full: set[str] = set()  # kinds with every row taken: unknown names are other
        self._lock = threading.Lock()

    def after_fork(self) -> None:
        """In a forked child: a lock held by a parent's thread would never be freed."""
        self._lock = threading.Lock()

    def forget(self) -> None:
        """Drop what this process knows (the table was reset)."""
        with self._lock:
            self._cache = {}
            self._full = set()

    def row(self, kind: str, name: str) -> int:
        row = self._cache.get((kind, name))
        if row is not None:
            return row
        if kind in self._full or name == OTHER or not _valid(name):
            return 0
        with self._lock:
            row = self._assign(kind, name)
            if row:  # "other" answers are not cached: a full kind is in _full
                self._cache[(kind, name)] = row
            return row or 0

    def _assign(self, kind: str, name: str) -> int | None:
        """The row of ``name``; None when the lock was busy (not cached)."""
        fd = open_private_file(self.path)
        try:
            if not _try_flock(fd, fcntl.LOCK_EX):
                return None
            table = read_table(_read_all(fd))
            row = table.get((kind, name))
            if row is not None:
                return row
            taken = sum(1 for k in table if k[0] == kind)
            if taken >= self.max_names:
                self._full.add(kind)
                return 0
            raw = name.encode("utf-8")
            record = RECORD.pack(KINDS[kind], 0, len(raw), taken + 1, raw)
            # Whole records only: a short file from a crash is padded over.
            end = os.fstat(fd).st_size // RECORD.size * RECORD.size
            os.pwrite(fd, record, end)
            return taken + 1
        finally:
            os.close(fd)

    @staticmethod
    def empty() -> dict[str, list[str]]:
        """The table with no names: every row is ``other``."""
        return {kind: [OTHER] for kind in KINDS}

    @property
    def cached(self) -> int:
        """How many names this process remembers (bounded by the cap)."""
        return len(self._cache)

    def all(self) -> dict[str, list[str]]:
        """Row names by kind, row 0 being ``other`` (a missing row is ``other`` too)."""
        out: dict[str, list[str]] = self.empty()
        try:
            fd = open_private_file(self.path, create=False)
        except FileNotFoundError:
            return out
        except UnsafeStateError as exc:  # a symlink, or not ours: never read it
            raise BadFile(str(exc)) from exc
        try:
            data = _read_all(fd)
        finally:
            os.close(fd)
        for (kind, name), row in read_table(data).items():
            if row <= self.max_names:
                labels = out[kind]
                labels.extend([OTHER] * (row + 1 - len(labels)))
                labels[row] = name
        return out


def _read_all(fd: int) -> bytes:
    parts = []
    offset = 0
    while chunk := os.pread(fd, 1 << 16, offset):
        parts.append(chunk)
        offset += len(chunk)
    return b"".join(parts)


def _try_flock(fd: int, kind: int) -> bool:
    """Take a flock without ever waiting more than about a millisecond."""
    for attempt in range(_LOCK_TRIES):
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            time.sleep(0.0002 * (attempt + 1))
    return False
