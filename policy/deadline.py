"""A time budget shared by every request made for one decision."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class Deadline:
    """A point in time after which no more work should start.

    `Deadline(2.0)` expires two seconds after construction on `clock` (monotonic by
    default); `Deadline.never()` never expires.
    """

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if math.isnan(seconds) or seconds < 0:
            raise ValueError(f"deadline must be a non-negative number of seconds, not {seconds!r}")
        self._clock = clock
        self._end = clock() + seconds

    @classmethod
    def never(cls) -> Deadline:
        """A deadline that never expires (remaining() is infinite)."""
        return cls(math.inf)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self._end - self._clock())

    @property
    def expired(self) -> bool:
        """Whether no time is left."""
        return self.remaining() <= 0.0

    def timeout(self, cap: float) -> float:
        """A timeout for one operation: `cap`, shortened to the time left."""
        return min(cap, self.remaining())

    def __repr__(self) -> str:
        return f"Deadline(remaining={self.remaining():.3f})"

    def outlives(self, other: Deadline, *, by: float = 0.0) -> bool:
        """Whether this deadline ends more than `by` seconds after `other`."""
        return self.remaining() > other.remaining() + by


class SharedDeadline(Deadline):
    """The deadline of a call shared by several reviews: the latest of the deadlines joined
    to it, so the call is not cut short while any of them still has time.

    It starts as a copy of the first deadline (never changing that one) and only grows.
    """

    def __init__(self, first: Deadline) -> None:
        self._clock = first._clock
        self._end = first._end
        self._lock = threading.Lock()

    def join(self, other: Deadline) -> None:
        """Extend this deadline to `other`'s end if that is later."""
        end = other._end if other._clock is self._clock else self._clock() + other.remaining()
        with self._lock:
            if end > self._end:
                self._end = end
