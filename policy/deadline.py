"""A time budget shared by every request made for one decision."""

from __future__ import annotations

import math
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
