"""How many SSE source threads a process may hold. Plain Python, no Django.

A sync source is read by a helper thread, and a closed stream's thread ends
only when its source next yields: one blocked in a call without a timeout
keeps its thread until the call returns. The budget bounds how many such
threads, live or lingering, a process holds at once.
"""

from __future__ import annotations

import threading

__all__ = ["SOURCE_THREADS", "ThreadBudget"]


class ThreadBudget:
    """A count of the threads taken and not yet given back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held = 0

    @property
    def held(self) -> int:
        return self._held

    def take(self, limit: int) -> bool:
        """Count one more thread, unless ``limit`` are already held."""
        with self._lock:
            if self._held >= limit:
                return False
            self._held += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._held -= 1


# The process's SSE source threads (a lock and a counter: nothing starts at import).
SOURCE_THREADS = ThreadBudget()
