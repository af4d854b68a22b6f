"""An adaptive limit: the concurrency at which time to first byte starts to grow.

After Netflix's concurrency-limits (``VegasLimit``'s no-load time, ``Gradient2Limit``'s
smoothed gradient) and Envoy's adaptive concurrency filter (a measured minimum as
the baseline). The no-load time is the fastest time to first byte seen; it
drifts up slowly (1 % per 100 samples), so a backend that got slower for good is
learned, if slowly. "Now" is a short average. While now stays within
``tolerance`` times the no-load time the limit grows by a queue allowance
(the square root of the limit); once requests queue it shrinks in proportion,
never below half per step, and each step is smoothed, so one slow request does
not halve the limit. A limit that is not used (under half of it in use) is not
raised: an idle server learns nothing of its capacity. Plain Python: the Django
layer feeds it samples and moves the pool's limit.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from .. import validate

__all__ = ["Adaptive", "Gradient"]


@dataclass(frozen=True)
class Adaptive:
    """Bounds and tuning of an adaptive limit: ``@limit_concurrency(Adaptive(max=50))``."""

    min: int = 1
    max: int = 200
    initial: int = 10
    tolerance: float = 1.5  # now may be this many times the no-load time before shrinking
    smoothing: float = 0.2  # how much of each step is taken

    def __post_init__(self) -> None:
        what = "Adaptive"
        validate.positive_int(self.min, what=f"{what}: min")
        validate.positive_int(self.max, what=f"{what}: max")
        validate.positive_int(self.initial, what=f"{what}: initial")
        if not self.min <= self.initial <= self.max:
            raise ValueError(
                f"{what}: needs min <= initial <= max, not {self.min}, {self.initial}, {self.max}"
            )
        if validate.positive_number(self.tolerance, what=f"{what}: tolerance") < 1:
            raise ValueError(f"{what}: tolerance must be >= 1, not {self.tolerance!r}")
        smoothing = validate.positive_number(self.smoothing, what=f"{what}: smoothing")
        if smoothing > 1:
            raise ValueError(f"{what}: smoothing must be in (0, 1], not {self.smoothing!r}")


class _Average:
    """An exponential moving average over about ``window`` samples."""

    def __init__(self, window: int) -> None:
        self.factor = 2 / (window + 1)
        self.value = 0.0
        self.count = 0

    def add(self, sample: float) -> float:
        if self.count == 0:
            self.value = sample
        else:
            self.value += (sample - self.value) * self.factor
        self.count += 1
        return self.value


class Gradient:
    """The current limit, moved by each sample of time to first byte (thread-safe)."""

    # Per sample, the no-load time may rise by this factor (1 % per 100 samples).
    DRIFT = 1.0001

    def __init__(self, bounds: Adaptive, *, short: int = 10) -> None:
        self.bounds = bounds
        self.estimate = float(bounds.initial)
        self.no_load = math.inf
        self._short = _Average(short)
        self._lock = threading.Lock()

    @property
    def limit(self) -> int:
        return int(self.estimate)

    def sample(self, seconds: float, *, in_use: int) -> int:
        """Record one request's time to first byte (``in_use`` slots were held); the limit."""
        b = self.bounds
        with self._lock:
            now = self._short.add(seconds)
            no_load = self.no_load = min(self.no_load * self.DRIFT, seconds)
            if in_use < self.estimate / 2:
                return self.limit  # not the limit that bounds anything now
            gradient = max(0.5, min(1.0, b.tolerance * no_load / max(now, 1e-9)))
            target = self.estimate * gradient + math.sqrt(self.estimate)
            step = self.estimate * (1 - b.smoothing) + target * b.smoothing
            self.estimate = float(min(b.max, max(b.min, step)))
            return self.limit
