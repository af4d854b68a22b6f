"""When an SSE stream pings and when it ends. Plain Python, no Django."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

from ..recorder import Outcome
from .events import comment, retry_hint

__all__ = ["DEFAULT_RETRY", "Schedule"]

# A drained or bounded stream tells the client to come back this soon
# (milliseconds) unless the stream set its own ``retry``.
DEFAULT_RETRY = 1000


class Schedule:
    """When to ping and when to end; the same rules for the sync and async adapters.

    On a drain, the stream ends at a random moment within ``drain_spread``
    seconds, so that a worker's clients do not all reconnect in one instant.
    """

    def __init__(
        self,
        *,
        ping: float | None,
        retry: int | None,
        max_duration: float | None,
        drain_spread: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ping = math.inf if ping is None else ping
        self.retry = retry
        self.drain_spread = drain_spread
        self.clock = clock
        now = clock()
        self.last_sent = now
        self.end_at = math.inf if max_duration is None else now + max_duration
        self.drain_at = math.inf
        self.outcome: Outcome | None = None  # set when the schedule ended the stream

    def opening(self) -> str:
        # Sent at once, so the headers go out (a WSGI server sends them with
        # the first body bytes) and the client's retry delay is set early.
        self.last_sent = self.clock()
        return comment() if self.retry is None else retry_hint(self.retry)

    def drain(self, *, spread: bool = True) -> None:
        # A stream that starts while the worker drains ends at once (spread=False).
        delay = random.uniform(0, self.drain_spread) if spread else 0.0
        self.drain_at = min(self.drain_at, self.clock() + delay)

    def ending(self, now: float) -> str | None:
        """The closing block, if the stream must end now."""
        if now >= self.drain_at:
            self.outcome = Outcome.DRAINED
            return retry_hint(self.retry or DEFAULT_RETRY, "draining")
        if now >= self.end_at:
            self.outcome = Outcome.COMPLETED
            return retry_hint(self.retry or DEFAULT_RETRY, "max_duration")
        return None

    def timeout(self, now: float) -> float | None:
        """How long to wait for the source before something else is due (None: no limit)."""
        due = min(self.last_sent + self.ping, self.end_at, self.drain_at)
        return None if due == math.inf else max(0.0, due - now)

    def ping_due(self, now: float) -> bool:
        return now >= self.last_sent + self.ping

    def sent(self, now: float) -> None:
        self.last_sent = now
