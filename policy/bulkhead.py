"""Bulkheads and circuit breakers for the resolver's thread pools (shell layer, stdlib only).

A `Lanes` runs jobs on one shared `ThreadPoolExecutor`, at most `cap` at a time per key (a
registry host): a job beyond its key's share waits in that key's queue, holding no thread,
and a waiter that gives up (its review's deadline) takes its job out of the queue. So a slow
or dead registry holds at most `cap` of the pool's threads, and images on other registries
keep theirs.

Each key also has a circuit breaker: after `break_after` consecutive timeouts the key is
short-circuited for `break_for` seconds (`submit` refuses at once, saying why); then one job
is let through as a probe (half-open): an answer closes the breaker, another timeout opens it
again. Outcomes are reported by whoever talks to the registry (`success`, `timeout`).

The clock is injected (`time.monotonic` by default) so tests step time instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

MAX_IDLE_LANES = 1024
"""Breakers kept; beyond it, those not refusing jobs are dropped (made-up hosts cannot grow
this without bound)."""


class ShortCircuited(Exception):
    """`Lanes.submit` refused: the key's breaker is open. The message says why, for the pod
    author's denial."""


@dataclass(frozen=True)
class LaneStats:
    """One key's pressure: jobs running and jobs queued."""

    in_flight: int
    queued: int


class _Breaker:
    __slots__ = ("failures", "open_until", "probe")

    def __init__(self) -> None:
        self.failures = 0  # consecutive timeouts
        self.open_until = 0.0  # open before this time (0: closed)
        self.probe: object | None = None  # half-open: the one probe in flight

    def refusing(self, now: float) -> bool:
        """Open, or half-open with its probe in flight."""
        return bool(self.open_until) and (now < self.open_until or self.probe is not None)


class Breakers:
    """A circuit breaker per key (module docstring), shared by the lanes of one resolver."""

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

    def admit(self, key: str, job: object) -> None:
        """Let `job` through, or raise ShortCircuited; after the open window the first job
        admitted is the probe."""
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None or not breaker.open_until:
                return
            now = self._clock()
            if breaker.refusing(now):
                raise ShortCircuited(self._why(key, breaker, now))
            breaker.probe = job

    def finished(self, key: str, job: object) -> None:
        """`job` ended; if it was the probe and reported nothing (it needed no request),
        the next job may probe."""
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is not None and breaker.probe is job:
                breaker.probe = None

    def success(self, key: str) -> None:
        """The registry answered (whatever it said): the breaker closes."""
        with self._lock:
            self._breakers.pop(key, None)

    def timeout(self, key: str) -> None:
        """The registry did not answer in time: one more consecutive timeout; at
        `break_after` (or when probing) the breaker opens for `break_for` seconds."""
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                if len(self._breakers) >= MAX_IDLE_LANES:
                    self._forget()
                breaker = self._breakers[key] = _Breaker()
            breaker.failures += 1
            if breaker.failures >= self._break_after or breaker.probe is not None:
                breaker.open_until = self._clock() + self._break_for
                breaker.probe = None

    def short_circuited(self) -> list[str]:
        """The keys refusing jobs now, sorted."""
        now = self._clock()
        with self._lock:
            return sorted(k for k, b in self._breakers.items() if b.refusing(now))

    def _why(self, key: str, breaker: _Breaker, now: float) -> str:
        if breaker.probe is not None:
            return (
                f"registry {key} is short-circuited after {breaker.failures} consecutive "
                "timeouts (one request is probing it)"
            )
        return (
            f"registry {key} is short-circuited after {breaker.failures} consecutive timeouts "
            f"(asked again in {max(0.0, breaker.open_until - now):.1f}s)"
        )

    def _forget(self) -> None:
        """Drop the breakers that are not open (counting timeouts of hosts seen once)."""
        now = self._clock()
        for key in [k for k, b in self._breakers.items() if not b.refusing(now)]:
            del self._breakers[key]


class _Lane:
    __slots__ = ("in_flight", "queue")

    def __init__(self) -> None:
        self.in_flight = 0
        # queued jobs: their future, their function, and whether their waiter's time is up
        self.queue: deque[tuple[Future[Any], Callable[[], Any], Callable[[], bool]]] = deque()


class Lanes:
    """Per-key bulkheads over one thread pool, checked against `breakers` (module docstring).
    A key's lane exists only while it has jobs running or queued."""

    def __init__(self, pool: ThreadPoolExecutor, *, cap: int, breakers: Breakers) -> None:
        if cap < 1:
            raise ValueError(f"cap must be at least 1, got {cap}")
        self._pool = pool
        self.cap = cap
        self.breakers = breakers
        self._lock = threading.Lock()
        self._lanes: dict[str, _Lane] = {}
        self._running = 0

    def submit(
        self, key: str, fn: Callable[[], T], *, expired: Callable[[], bool] = lambda: False
    ) -> Future[T]:
        """Run `fn` on the pool when `key` has a free slot; ShortCircuited when its breaker
        is open. Cancelling the future before it starts takes the job out of the queue; so
        does `expired()` turning true while it waits (its waiter has given up: it is
        cancelled rather than started)."""
        future: Future[T] = Future()
        self.breakers.admit(key, future)
        with self._lock:
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane()
            if lane.in_flight < self.cap:
                lane.in_flight += 1
                self._pool.submit(self._run, key, future, fn)
            else:
                lane.queue.append((future, fn, expired))
        return future

    def _run(self, key: str, future: Future[Any], fn: Callable[[], Any]) -> None:
        try:
            if future.set_running_or_notify_cancel():
                with self._lock:
                    self._running += 1
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to whoever waits on the future
                    future.set_exception(exc)
                finally:
                    with self._lock:
                        self._running -= 1
        finally:
            self.breakers.finished(key, future)
            self._finished(key)

    def _finished(self, key: str) -> None:
        """A job of `key` ended: start the next one queued (skipping cancelled ones), else
        free the slot."""
        with self._lock:
            lane = self._lanes[key]
            while lane.queue:
                future, fn, expired = lane.queue.popleft()
                if future.cancelled() or (expired() and future.cancel()):
                    self.breakers.finished(key, future)  # a probe never run lets another probe
                    continue
                self._pool.submit(self._run, key, future, fn)
                return
            lane.in_flight -= 1
            if lane.in_flight == 0:
                del self._lanes[key]

    def busy(self, key: str) -> str:
        """Why a job of `key` still queued at its deadline was not run (a job waits only
        while its key has `cap` jobs in flight)."""
        return f"registry {key} is busy: {self.cap} requests in flight"

    def stats(self) -> dict[str, LaneStats]:
        """Keys with jobs running or queued."""
        with self._lock:
            return {
                key: LaneStats(
                    lane.in_flight, sum(1 for f, _, _ in lane.queue if not f.cancelled())
                )
                for key, lane in self._lanes.items()
            }

    @property
    def running(self) -> int:
        """Jobs running on pool threads now."""
        with self._lock:
            return self._running
