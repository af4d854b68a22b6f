"""The background parts of a cluster backend: breaker, heartbeat, wake-ups. No Django.

One of each per process and backend, whatever the number of streams:

* :class:`Breaker` says whether Redis is usable now. The first failed call
  opens it; while open no request talks to Redis (each would wait for a
  timeout), and the heartbeat thread probes every ``probe`` seconds and closes
  it. The outage is logged once when it starts and once when it ends.
* :class:`Heartbeat`: one thread that renews every lease of the process in one
  round trip every ``lease / 3`` seconds, and probes while the breaker is open.
* :class:`Wakeups`: one pub/sub connection and thread; a release publishes
  the pool key's digest and the waiters of that key in this process retry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("django_streamer.cluster")

Waker = Callable[[], None]


class Breaker:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.is_open = False
        self.opened_at = 0.0
        self.errors = 0  # calls that failed, for the metrics
        self._lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.errors += 1
            if self.is_open:
                return
            self.is_open = True
            self.opened_at = self.clock()
        log.warning(
            "django-streamer: Redis unreachable (%s); cluster pools use their fallback", exc
        )

    def recovered(self) -> None:
        with self._lock:
            if not self.is_open:
                return
            self.is_open = False
            lasted = self.clock() - self.opened_at
        log.warning("django-streamer: Redis reachable again after %.1f s", lasted)


class Heartbeat:
    """Calls ``beat()`` every ``interval`` seconds (``probe`` while the breaker is open)."""

    def __init__(
        self, *, beat: Callable[[], None], breaker: Breaker, interval: float, probe: float
    ) -> None:
        self._beat = beat
        self._breaker = breaker
        self.interval = interval
        self.probe = probe
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        self._wake.set()

    def ensure_running(self) -> None:
        if self._thread is not None or self.stopped:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="streamer-cluster-heartbeat", daemon=True
                )
                self._thread.start()

    def poke(self) -> None:
        """Beat now (the breaker just opened: start probing)."""
        self._wake.set()

    def _run(self) -> None:
        while not self.stopped:
            pause = self.probe if self._breaker.is_open else self.interval
            self._wake.wait(pause)
            self._wake.clear()
            if self.stopped:
                return
            try:
                self._beat()
            except Exception:  # the thread must outlive any one bad beat
                log.exception("django-streamer: cluster heartbeat failed")


class Wakeups:
    """One subscriber connection per process; wakers registered per pool-key digest."""

    def __init__(self, *, subscribe: Callable[[], object], channel: str) -> None:
        self._subscribe = subscribe  # () -> a redis-py PubSub, not yet subscribed
        self.channel = channel
        self._lock = threading.Lock()
        self._wakers: dict[str, set[Waker]] = {}
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True  # the thread ends within a second (its read timeout)

    def add(self, digest: str, waker: Waker) -> None:
        with self._lock:
            self._wakers.setdefault(digest, set()).add(waker)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="streamer-cluster-wakeups", daemon=True
                )
                self._thread.start()

    def remove(self, digest: str, waker: Waker) -> None:
        with self._lock:
            wakers = self._wakers.get(digest)
            if wakers is not None:
                wakers.discard(waker)
                if not wakers:
                    del self._wakers[digest]

    def wake(self, digest: str) -> None:
        with self._lock:
            wakers = list(self._wakers.get(digest, ()))
        for waker in wakers:
            waker()

    def _run(self) -> None:
        while not self.stopped:
            try:
                self._listen()
            except Exception:  # Redis down or restarted: waiters poll meanwhile
                self.connected.clear()
                time.sleep(0.5)

    def _listen(self) -> None:
        pubsub = self._subscribe()
        try:
            pubsub.subscribe(self.channel)  # type: ignore[attr-defined]
            while not self.stopped:
                message = pubsub.get_message(timeout=1.0)  # type: ignore[attr-defined]
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    self.connected.set()
                elif message["type"] == "message":
                    data = message["data"]
                    self.wake(data.decode() if isinstance(data, bytes) else str(data))
        finally:
            pubsub.close()  # type: ignore[attr-defined]
