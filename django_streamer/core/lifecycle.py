"""A stream's consumption lifecycle: one state, and every allowed move in one table."""

from __future__ import annotations

import enum
import threading


class State(enum.Enum):
    NEW = "new"  # nothing taken yet
    SENDFILE = "sendfile"  # offered to the server's ``wsgi.file_wrapper``
    PREPARED = "prepared"  # the first chunk was made before the response started
    STREAMING = "streaming"  # chunks are being handed to the server
    CLOSED = "closed"  # closed; nothing more can be taken

    # Members are singletons: hash by identity (C) rather than Enum's
    # Python-level ``hash(self._name_)``, which cost ~13 calls per request.
    __hash__ = object.__hash__


# Where each state may go. SENDFILE -> NEW: the server iterated after all.
MOVES: dict[State, frozenset[State]] = {
    State.NEW: frozenset({State.SENDFILE, State.PREPARED, State.STREAMING, State.CLOSED}),
    State.SENDFILE: frozenset({State.NEW, State.CLOSED}),
    State.PREPARED: frozenset({State.STREAMING, State.CLOSED}),
    State.STREAMING: frozenset({State.CLOSED}),
    State.CLOSED: frozenset(),
}


class Lifecycle:
    """The state of one stream; ``move`` is the only way to change it."""

    __slots__ = ("_lock", "name", "state")

    def __init__(self, name: str) -> None:
        self.name = name
        self.state = State.NEW
        self._lock = threading.Lock()

    def move(self, to: State, *, allowed: frozenset[State] | None = None) -> State:
        """Go to ``to``, from ``allowed`` (default: any state that may); return the old state.

        An illegal move raises ``RuntimeError`` naming the stream: a stream
        consumed twice is a programming error, never silently served twice.
        """
        lock = self._lock
        lock.acquire()  # one lock round per move; not ``with`` (the hot path, architecture.md)
        try:
            old = self.state
            if to not in MOVES[old] or (allowed is not None and old not in allowed):
                if to is State.STREAMING or to is State.PREPARED:
                    raise RuntimeError(
                        f"stream {self.name!r} can be consumed only once (it is {old.value})"
                    )
                raise RuntimeError(
                    f"stream {self.name!r}: cannot go from {old.value} to {to.value}"
                )
            self.state = to
            return old
        finally:
            lock.release()

    def try_move(self, to: State) -> bool:
        """Go to ``to`` if that move is allowed from here; say whether it happened."""
        lock = self._lock
        lock.acquire()
        try:
            if to not in MOVES[self.state]:
                return False
            self.state = to
            return True
        finally:
            lock.release()
