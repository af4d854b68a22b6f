"""A released cluster lease's last milliseconds: deferred, and perhaps handed on. No Django.

* :class:`Releaser` keeps the releases of a process for ``release_delay``
  seconds (longer while every key among them may still be handed on, up to
  the reuse window): the process's next ACQUIRE carries them (one round trip
  for both), or a background thread sends every one still pending in one call.
* While a release of a pool key is still pending here, an admission of the
  same key can take its Redis entry back instead of asking Redis (a hand-off,
  ``ClusterBackend.hand_off``): the lease id, still held and renewed in Redis,
  changes owner inside this process, so Redis's count never moves and cannot
  pass the limit. :class:`Quiet` says when that is fair: only while the last
  ACQUIRE reply for the key, sent less than :data:`REUSE_WINDOW` ago, said
  nobody was queued for it.

Why a window bounds a remote waiter's delay: a waiter stays queued only while
the key is full, and every ACQUIRE that Redis runs after it queued reports it.
So from ``REUSE_WINDOW`` after it queued no hand-off is allowed here; the next
admission of the key goes to Redis carrying the pending release, which frees
the slot, wakes the waiter (pub/sub) and, the waiter being ahead, refuses or
queues the local newcomer. With no admission, the release goes within
``release_delay``. 25 ms plus the 5 ms delay and a few round trips stays well
inside the 100 ms wake-up bound, and is long enough that a busy key costs one
Redis round trip per window instead of one per request.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .heartbeat import log
from .leases import ClusterLease, Keys

if TYPE_CHECKING:
    from .backend import ClusterBackend

REUSE_WINDOW = 0.025  # seconds an ACQUIRE reply that saw no waiter allows hand-offs
QUIET_KEYS = 4096  # pool keys remembered (cleared when full: a forgotten key asks Redis)


class Quiet:
    """When each pool key (by ``Keys.base``) was last seen with nobody queued."""

    def __init__(self, *, window: float) -> None:
        self.window = window
        # base -> (send time of that ACQUIRE, the leases its reply counted)
        self._seen: dict[str, tuple[float, int]] = {}

    def heard(self, base: str, sent: float, queued: int, held: int) -> None:
        """An ACQUIRE reply for ``base``, sent at ``sent``, found ``queued`` waiters
        and ``held`` leases (this admission's included)."""
        # The send time, not the reply's: the reply describes Redis at some moment
        # after it, so a waiter queued since is covered by the window.
        if queued:
            self._seen.pop(base, None)
            return
        if len(self._seen) >= QUIET_KEYS:
            self._seen.clear()
        self._seen[base] = (sent, held)

    def allows(self, base: str, now: float, limit: int) -> bool:
        """A hand-off of ``base`` under ``limit`` is fair and keeps Redis's count within it.

        A hand-off leaves the count as it is: fine only if it is not over
        ``limit`` already (a limit lowered since those leases were admitted).
        """
        seen = self._seen.get(base)
        return seen is not None and now - seen[0] < self.window and seen[1] <= limit

    def left(self, bases: set[str], now: float) -> float:
        """Seconds until one of ``bases`` may no longer be handed on (0: one already may not)."""
        earliest = None
        for base in bases:
            seen = self._seen.get(base)
            if seen is None:
                return 0.0
            earliest = seen[0] if earliest is None else min(earliest, seen[0])
        return 0.0 if earliest is None else max(0.0, earliest + self.window - now)


class Releaser:
    """Sends the releases no admission carried, ``delay`` seconds after the first of them.

    One thread per process, asleep while nothing is pending. Releases wait in
    ``_pending`` (pairs of pool-key base and lease id, the Lua's arguments) with
    their leases alongside; an admission of this process takes them all first
    (``take``) and sends them in its own round trip, or takes one back to reuse
    (``reclaim``), so under load most releases cost none of their own.
    """

    def __init__(
        self,
        *,
        send: Callable[[list[str]], None],
        delay: float,
        hold: Callable[[set[str]], float] | None = None,
    ) -> None:
        self._send = send  # one round trip for every pair; errors are its own
        self.delay = delay
        # Further seconds the pending releases of these pool keys may wait (a
        # hand-off may still take them back), or 0 to send them now.
        self._hold = hold
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._leases: list[ClusterLease] = []  # one per pair, in the same order
        # Pairs a call took and may not have delivered (``resend``): sent again,
        # never handed on (Redis may have released them already).
        self._again: list[str] = []
        self._wake = threading.Event()
        # Held while pairs taken by ``flush`` are on their way: the exit's flush
        # waits for the thread's send in flight, which a daemon thread frozen
        # at interpreter shutdown would otherwise never finish.
        self._sending = threading.Lock()
        self._thread: threading.Thread | None = None
        self.stopped = False

    def __len__(self) -> int:
        """Releases waiting to be sent."""
        return (len(self._pending) + len(self._again)) // 2

    def add(self, lease: ClusterLease) -> None:
        with self._lock:
            first = not self._pending and not self._again
            self._pending += (lease.keys.base, lease.ident)
            self._leases.append(lease)
            self._start_locked()
        if first:
            self._wake.set()

    def resend(self, pairs: list[str]) -> None:
        """Pairs from ``take`` whose call failed or was cancelled in flight: Redis
        may or may not have run it, and releasing twice does nothing, so they go
        again (with the next admission or from the thread) rather than wait out
        their lease."""
        with self._lock:
            first = not self._pending and not self._again
            self._again += pairs
            self._start_locked()
        if first:
            self._wake.set()

    def keep(self, pairs: list[str]) -> None:
        """Pairs to send once Redis answers (the heartbeat flushes them then),
        kept without waking the thread (it would spin while Redis is away).

        Releases that could not be sent, and the lease of an ACQUIRE that
        failed: a stalled Redis still runs what it had received, after the
        caller gave up, and that lease would hold a slot for a whole lease.
        """
        with self._lock:
            self._again += pairs

    def _start_locked(self) -> None:
        if self._thread is None and not self.stopped:
            self._thread = threading.Thread(
                target=self._run, name="streamer-cluster-releases", daemon=True
            )
            self._thread.start()
            # A process that exits (a worker recycled, a script's end) sends
            # its last releases rather than leaving them to the lease.
            atexit.register(self._at_exit, os.getpid())

    def take(self) -> list[str]:
        """Every pending release (base, id, base, id...), now the caller's to send."""
        if not self._pending and not self._again:
            return []
        with self._lock:
            taken = self._pending + self._again if self._again else self._pending
            self._pending, self._leases, self._again = [], [], []
        return taken

    def reclaim(self, base: str, usable: Callable[[ClusterLease], bool]) -> ClusterLease | None:
        """The newest pending release of ``base`` that is ``usable``, no longer to be sent.

        Under the lock that ``take`` holds: a release already taken by a sender
        is on its way to Redis and is not found here.
        """
        if not self._pending:
            return None
        with self._lock:
            for i in range(len(self._leases) - 1, -1, -1):
                lease = self._leases[i]
                if lease.keys.base == base and usable(lease):
                    del self._leases[i]
                    del self._pending[2 * i : 2 * i + 2]
                    return lease
        return None

    def flush(self) -> None:
        """Send what is pending now, on this thread (after a send already in flight)."""
        # Bounded: a send times out within ~0.1 s, and a lock inherited
        # held across a fork must not hang a child for good.
        held = self._sending.acquire(timeout=1.0)
        try:
            taken = self.take()
            if taken:
                self._send(taken)
        finally:
            if held:
                self._sending.release()

    def stop(self) -> None:
        self.stopped = True
        self._wake.set()

    def _at_exit(self, pid: int) -> None:
        if os.getpid() == pid:  # not in a forked child: these are the parent's
            try:
                self.flush()
            except Exception:
                log.exception("django-streamer: cluster release failed")

    def _linger(self) -> None:
        """Keep the pending releases while every one of their keys may still be handed on.

        Under load a key's releases are mostly taken back by the next
        admission; sending the few pending every ``delay`` would cost a round
        trip each, and the next admission one more (nothing left to take back).
        Bounded by the reuse window: then the next admission goes to Redis
        carrying them, or this thread sends them.
        """
        if self._hold is None:
            return
        with self._lock:
            bases = {lease.keys.base for lease in self._leases}
        left = self._hold(bases)
        if left > 0 and not self.stopped:
            time.sleep(left)

    def _run(self) -> None:
        while not self.stopped:
            self._wake.wait()
            self._wake.clear()
            if self.stopped:
                return
            time.sleep(self.delay)  # the releases of the next few ms ride along
            self._linger()
            try:
                self.flush()
            except Exception:
                log.exception("django-streamer: cluster release failed")


def hand_off(backend: ClusterBackend, keys: Keys, limit: int) -> ClusterLease | None:
    """A pending release of ``keys`` taken back for this admission: no round trip.

    Only while Redis's last reply for the key is recent, saw no waiter and
    counted no more than ``limit`` leases (:class:`Quiet`), and only a lease
    certainly still alive in Redis: not lost, and renewed within half a lease
    (the heartbeat, every third of one, renews it again long before it could
    expire).
    """
    b = backend
    now = b.clock()
    if b.breaker.is_open or not b.quiet.allows(keys.base, now, limit):
        return None
    alive_since = now - b.lease / 2
    old = b.releases.reclaim(
        keys.base, lambda lease: not lease.lost and lease.renewed > alive_since
    )
    if old is None:
        return None
    # The same id in Redis (count, owner set, expiry): only the Python object is new.
    lease = ClusterLease(b.release, keys, old.ident, old.renewed, old.epoch)
    if not b.leases.hand_on(old, lease):
        return None  # a late renewal found it gone meanwhile
    b.handoffs += 1
    b.heartbeat.ensure_running()
    return lease
