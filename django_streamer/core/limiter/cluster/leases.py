"""The cluster leases one process holds, and which of them are still worth renewing. No Django."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from .heartbeat import log


@dataclass(frozen=True)
class Keys:
    base: str  # prefix{digest}: the hash tag keeps a pool key's Redis keys together
    digest: str
    index: str = ""  # the pool's index of its pool keys (for counting a keyed pool)

    def k(self, suffix: str) -> str:
        return f"{self.base}:{suffix}"


class ClusterLease:
    __slots__ = ("_release", "epoch", "ident", "keys", "lost", "released", "renewed")

    def __init__(
        self,
        release: Callable[[ClusterLease], None],
        keys: Keys,
        ident: str,
        now: float,
        epoch: str,
    ) -> None:
        self._release = release
        self.keys = keys
        self.ident = ident
        self.renewed = now  # when the last renewal that succeeded was sent
        self.epoch = epoch  # the Redis (scripts.py's epoch) that counts it
        self.lost = False
        self.released = False

    def release(self) -> None:
        self._release(self)


class LeaseBook:
    """Leases held by this process, by id; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: dict[str, ClusterLease] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def add(self, lease: ClusterLease) -> None:
        with self._lock:
            self._leases[lease.ident] = lease

    def hand_on(self, old: ClusterLease, new: ClusterLease) -> bool:
        """Add ``new``, which takes ``old``'s Redis entry over, unless that was lost."""
        with self._lock:  # ``lose`` cannot come between the check and the add
            if old.lost:
                return False
            self._leases[new.ident] = new
            return True

    def close(self, lease: ClusterLease) -> bool:
        """Mark ``lease`` released; False if it already was, or is not this book's.

        Not this book's: lost (dropped by ``to_renew``), or a lease of the
        parent process seen in a forked child (whose book starts empty): its
        Redis entry is the parent's to release or hand on.
        """
        with self._lock:
            if lease.released:
                return False
            lease.released = True
            if self._leases.get(lease.ident) is not lease:
                return False
            del self._leases[lease.ident]
            return True

    def to_renew(self, now: float, lease_time: float) -> list[ClusterLease]:
        """Leases renewed less than ``lease_time`` ago; the others are lost (logged once).

        A lost lease may have expired in Redis and its slot gone to someone
        else: renewing it (which re-adds a missing lease) could over-admit.
        """
        live = []
        with self._lock:
            for lease in list(self._leases.values()):
                if now - lease.renewed < lease_time:
                    live.append(lease)
                else:
                    self._lose(lease, "not renewed in time")
        return live

    def lose(self, lease: ClusterLease, *, why: str) -> None:
        """``lease``'s Redis entry is gone: never renewed, released or handed on.

        Whoever holds that entry now loses it: ``lease`` itself, or the lease
        that took it over since (a hand-off, while the renewal was on its way).
        """
        with self._lock:
            lease.lost = True
            holder = self._leases.get(lease.ident)
            if holder is not None:
                self._lose(holder, why)

    def _lose(self, lease: ClusterLease, why: str) -> None:
        lease.lost = True
        del self._leases[lease.ident]
        log.warning("django-streamer: cluster lease %s lost (%s)", lease.ident, why)
