"""Circuit breakers and standing per registry, for the resolver's bulkheads (shell layer,
stdlib only).

`Breakers` ranks each key (a registry host) by what it has shown: `PROVEN` (it answered; the
last `MAX_PROVEN` remembered), `FAILING` (its last request timed out) or `NEW` (never heard
from) — `bulkhead.Lanes` trusts each rank with threads accordingly.

A registry whose last request timed out is not waited on: one job at a time asks it again as
a *probe*, in the background (its review is answered at once, short-circuited, while the
probe's answer fills the caches for the next review), and other jobs are refused at once,
saying why (`ShortCircuited`). An answer closes the breaker. After `break_after` consecutive
timeouts the key is not even probed for `break_for` seconds. Outcomes are reported by whoever
talks to the registry (`success`, `timeout`).

The clock is injected (`time.monotonic` by default) so tests step time instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

MAX_IDLE_LANES = 1024
"""Breakers kept; beyond it, those not refusing jobs are dropped (made-up hosts cannot grow
this without bound)."""

MAX_PROVEN = 4096
"""Keys remembered as having answered, the least recently answering forgotten first."""

PROVEN, FAILING, NEW = 0, 1, 2
"""A key's standing (`Breakers.rank`), in the order freed threads go to them."""


class ShortCircuited(Exception):
    """`Lanes.submit` refused: the key's breaker is open. The message says why, for the pod
    author's denial."""


class _Breaker:
    __slots__ = ("failures", "open_until", "probe")

    def __init__(self) -> None:
        self.failures = 0  # consecutive timeouts
        self.open_until = 0.0  # not even probed before this time (0: not opened)
        self.probe: object | None = None  # the one probe in flight

    def refusing(self, now: float) -> bool:
        """Timing out, and either open or with its probe in flight."""
        return self.failures > 0 and (now < self.open_until or self.probe is not None)


class Breakers:
    """A circuit breaker per key, and which keys have answered (module docstring); shared by
    the lanes of one resolver."""

    def __init__(
        self,
        *,
        break_after: int = 5,
        break_for: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if break_after < 1:
            raise ValueError(f"break_after must be at least 1, got {break_after}")
        self._break_after = break_after
        self._break_for = break_for
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, _Breaker] = {}
        self._proven: OrderedDict[str, None] = OrderedDict()  # answered, most recent last
        self._listeners: list[Callable[[str], None]] = []
        self.new_answered = float("-inf")
        """When a key answered for the first time (remembered)."""

    def admit(self, key: str, job: object) -> bool:
        """Let `job` through (False), or make it the key's probe (True: its waiter should not
        wait for it), or raise ShortCircuited: the key is timing out and either open or
        already probed."""
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None or not breaker.failures:
                return False
            now = self._clock()
            if breaker.refusing(now):
                raise ShortCircuited(self._why(key, breaker, now))
            breaker.probe = job
            return True

    def probing(self, key: str) -> str:
        """Why the waiter of `key`'s probe is answered at once."""
        with self._lock:
            breaker = self._breakers.get(key)
            failures = breaker.failures if breaker is not None else 0
        return (
            f"registry {key} did not answer in time ({_timeouts(failures)}); "
            "one request is asking it again"
        )

    def finished(self, key: str, job: object) -> None:
        """`job` ended; if it was the probe and reported nothing (it needed no request),
        the next job may probe."""
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is not None and breaker.probe is job:
                breaker.probe = None

    def success(self, key: str) -> None:
        """The registry answered (whatever it said): the breaker closes, the key is proven
        (and the listeners told, when it was not)."""
        with self._lock:
            failing = self._breakers.pop(key, None) is not None
            if key in self._proven:
                self._proven.move_to_end(key)
                if not failing:
                    return
            else:
                self.new_answered = self._clock()
                self._proven[key] = None
                while len(self._proven) > MAX_PROVEN:
                    self._proven.popitem(last=False)
            listeners = list(self._listeners)
        for listener in listeners:  # outside the lock: a listener may take its own
            listener(key)

    def know(self, keys: Iterable[str]) -> None:
        """Count `keys` as having answered (named by the operator; none is told)."""
        with self._lock:
            for key in keys:
                self._proven[key] = None
                self._proven.move_to_end(key)
            while len(self._proven) > MAX_PROVEN:
                self._proven.popitem(last=False)

    def listen(self, listener: Callable[[str], None]) -> None:
        """Call `listener(key)` whenever a key becomes proven (it answered)."""
        with self._lock:
            self._listeners.append(listener)

    def timeout(self, key: str) -> None:
        """The registry did not answer in time: one more consecutive timeout, and the key is
        FAILING (only probed, one job at a time) until it answers; from `break_after` on, each
        timeout stops even the probes for `break_for` seconds."""
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                if len(self._breakers) >= MAX_IDLE_LANES:
                    self._forget()
                breaker = self._breakers[key] = _Breaker()
            breaker.failures += 1
            if breaker.failures >= self._break_after:
                breaker.open_until = self._clock() + self._break_for
            breaker.probe = None

    def rank(self, key: str) -> int:
        """`PROVEN` (it answered, and has not timed out since), `FAILING` (its last request
        timed out) or `NEW` (never heard from, or forgotten)."""
        with self._lock:
            if key in self._breakers:
                return FAILING
            return PROVEN if key in self._proven else NEW

    def short_circuited(self) -> list[str]:
        """The keys refusing jobs now, sorted."""
        now = self._clock()
        with self._lock:
            return sorted(k for k, b in self._breakers.items() if b.refusing(now))

    def _why(self, key: str, breaker: _Breaker, now: float) -> str:
        if now >= breaker.open_until:
            return (
                f"registry {key} did not answer in time ({_timeouts(breaker.failures)}); "
                "one request is asking it again"
            )
        return (
            f"registry {key} is short-circuited after {_timeouts(breaker.failures)} "
            f"(asked again in {max(0.0, breaker.open_until - now):.1f}s)"
        )

    def _forget(self) -> None:
        """Drop the breakers that are not refusing (counting timeouts of hosts seen once)."""
        now = self._clock()
        for key in [k for k, b in self._breakers.items() if not b.refusing(now)]:
            del self._breakers[key]


def _timeouts(n: int) -> str:
    return f"{n} consecutive timeout{'s' if n != 1 else ''}"
