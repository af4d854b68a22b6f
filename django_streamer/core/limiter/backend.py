"""The one interface every place that counts slots implements.

A backend counts held slots per (pool, key); it never waits. The process and
host backends implement it, and the cluster (Redis) backend will too. Waiting,
fairness and wake-ups are the :class:`~.pool.Pool`'s job, the same for all.
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol


class Lease(Protocol):
    """One slot taken from a backend."""

    def release(self) -> None:
        """Give the slot back. Called at most once per lease by the pool."""


class Backend(Protocol):
    """Counts slots; two methods and one flag.

    ``try_acquire`` takes a slot of ``key`` in ``pool`` without blocking, or
    returns None when ``limit`` are held. ``in_use`` counts the held slots
    across every process the backend spans. ``local_only`` says whether every
    release happens in this process: when it is False, a waiter cannot be woken
    by releases elsewhere and the pool polls for them.

    After a fork the child owns none of the leases it inherited: releasing one
    there must do nothing (see :func:`after_fork_in_child`).
    """

    local_only: bool

    def try_acquire(self, pool: str, key: str, limit: int) -> Lease | None:
        """Take a slot without blocking, or return None."""

    def in_use(self, pool: str, key: str, limit: int) -> int:
        """Slots of ``key`` held right now (by any process the backend spans)."""


def after_fork_in_child(owner: object) -> None:
    """Call ``owner._after_fork()`` in every forked child while ``owner`` lives.

    Weak, so that registering does not keep ``owner`` alive for good.
    """
    ref = weakref.ref(owner)

    def hook() -> None:
        alive = ref()
        if alive is not None:
            alive._after_fork()  # type: ignore[attr-defined]

    os.register_at_fork(after_in_child=hook)
