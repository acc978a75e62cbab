"""Bulkheads and circuit breakers for the resolver's thread pools (shell layer, stdlib only).

A `Lanes` runs jobs on one shared `ThreadPoolExecutor`, at most `cap` at a time per key (a
registry host): a job beyond its key's share waits in that key's queue, holding no thread,
and a waiter that gives up (its review's deadline) takes its job out of the queue. So a slow
or dead registry holds at most `cap` of the pool's threads, and images on other registries
keep theirs. Nor is the pool handed more jobs than it has threads: when many registries are
slow at once (64 hosts × their share is far more than the pool), jobs wait in their lanes,
and each thread that frees goes first to a registry whose last answers were not timeouts,
the one with the fewest jobs running; registries timing out may hold at most half the
threads together. A registry nobody waits on gets the next thread, not the end of a pool
queue of hostile jobs.

A queue is waited on only while its registry is answering: once the oldest job in flight for
a key has run `patience` seconds, the registry is slow right now, and its queued jobs give up
at once (their futures are cancelled: "busy") instead of holding their reviews — and the
webhook's request threads — until the deadline; a job submitted then is refused at once. A
registry that is merely busy with quick answers keeps its queue.

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


class Slow(ShortCircuited):
    """`Lanes.submit` refused: the key's share is full of jobs running longer than the
    patience (the registry is slow right now)."""


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

    def failing(self, key: str) -> bool:
        """Whether `key`'s last answers were timeouts (cleared by any answer)."""
        with self._lock:
            breaker = self._breakers.get(key)
            return breaker is not None and breaker.failures > 0

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
    __slots__ = ("in_flight", "queue", "started", "timer")

    def __init__(self) -> None:
        self.in_flight = 0
        self.started: dict[int, float] = {}  # running jobs (by future id): when they started
        self.timer: threading.Timer | None = None  # sweeps the queue once jobs run too long
        # queued jobs: their future, their function, and whether their waiter's time is up
        self.queue: deque[tuple[Future[Any], Callable[[], Any], Callable[[], bool]]] = deque()


def _idle(lane: _Lane) -> bool:
    return lane.in_flight == 0 and not lane.queue


class Lanes:
    """Per-key bulkheads over one thread pool, checked against `breakers` (module docstring).
    A key's lane exists only while it has jobs running or queued."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        *,
        cap: int,
        breakers: Breakers,
        patience: float = float("inf"),
        clock: Callable[[], float] = time.monotonic,
        threads: int | None = None,
    ) -> None:
        if cap < 1:
            raise ValueError(f"cap must be at least 1, got {cap}")
        self._pool = pool
        self.cap = cap
        # Jobs handed to the pool at most: its threads (`ThreadPoolExecutor._max_workers`).
        self._threads = threads if threads is not None else getattr(pool, "_max_workers", 32)
        self._submitted = 0
        self.breakers = breakers
        self.patience = patience
        self._clock = clock
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
            if lane.in_flight < self.cap and self._submitted < self._threads:
                failing = self.breakers.failing(key)
                if not failing or self._failing_running() < self._threads // 2:
                    self._start(key, lane, future, fn)
                    return future
            oldest = min(lane.started.values(), default=None)
            if (
                lane.in_flight >= self.cap
                and oldest is not None
                and self._clock() - oldest >= self.patience
            ):
                self.breakers.finished(key, future)
                raise Slow(self.slow(key))
            lane.queue.append((future, fn, expired))
            self._arm(key, lane, oldest)
        return future

    def _failing_running(self) -> int:
        """Jobs handed to the pool for registries whose last answers were timeouts (lock)."""
        return sum(
            lane.in_flight for name, lane in self._lanes.items() if self.breakers.failing(name)
        )

    def _start(self, key: str, lane: _Lane, future: Future[Any], fn: Callable[[], Any]) -> None:
        """Hand a job to the pool (lock held)."""
        lane.in_flight += 1
        self._submitted += 1
        self._pool.submit(self._run, key, future, fn)

    def _arm(self, key: str, lane: _Lane, oldest: float | None) -> None:
        """Sweep `key`'s queue once its oldest running job has run `patience` (lock held)."""
        if lane.timer is not None or self.patience == float("inf"):
            return
        start = oldest if oldest is not None else self._clock()
        wait = max(0.0, start + self.patience - self._clock())
        lane.timer = threading.Timer(wait, self._sweep, args=(key,))
        lane.timer.daemon = True
        lane.timer.start()

    def _sweep(self, key: str) -> None:
        """If `key`'s oldest running job has run `patience`, cancel its queued jobs (their
        waiters answer "busy" now); else look again when it will have."""
        with self._lock:
            lane = self._lanes.get(key)
            if lane is None:
                return
            lane.timer = None
            if not lane.queue:
                return
            oldest = min(lane.started.values(), default=None)
            if oldest is None or self._clock() - oldest < self.patience:
                self._arm(key, lane, oldest)
                return
            queued, lane.queue = lane.queue, deque()
        for future, _, _ in queued:
            if future.cancel():
                self.breakers.finished(key, future)

    def _run(self, key: str, future: Future[Any], fn: Callable[[], Any]) -> None:
        try:
            if future.set_running_or_notify_cancel():
                with self._lock:
                    self._running += 1
                    lane = self._lanes.get(key)
                    if lane is not None:
                        lane.started[id(future)] = self._clock()
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to whoever waits on the future
                    future.set_exception(exc)
                finally:
                    with self._lock:
                        self._running -= 1
                        lane = self._lanes.get(key)
                        if lane is not None:
                            lane.started.pop(id(future), None)
        finally:
            self.breakers.finished(key, future)
            self._finished(key)

    def _finished(self, key: str) -> None:
        """A job of `key` ended: its thread goes to the next job queued in the lane with the
        fewest jobs running (skipping jobs cancelled or out of time), else it is freed."""
        dropped: list[tuple[str, Future[Any]]] = []
        with self._lock:
            lane = self._lanes[key]
            lane.in_flight -= 1
            self._submitted -= 1
            # Registries that answer first, then those timing out, which may hold at most half
            # the threads together: a registry nobody waits on is never queued behind a crowd
            # of slow ones. (Breakers are read once: a verdict a moment old is good enough.)
            failing = {name for name in self._lanes if self.breakers.failing(name)}
            failing_running = sum(self._lanes[name].in_flight for name in failing)
            touched = {key}
            while self._submitted < self._threads:
                room = failing_running < self._threads // 2
                candidates = [
                    (name in failing, other.in_flight, name)
                    for name, other in self._lanes.items()
                    if other.queue and other.in_flight < self.cap and (room or name not in failing)
                ]
                if not candidates:
                    break
                *_, name = min(candidates)
                chosen = self._lanes[name]
                touched.add(name)
                future, fn, expired = chosen.queue.popleft()
                if future.cancelled() or (expired() and future.cancel()):
                    dropped.append((name, future))  # a probe never run lets another probe
                    continue
                self._start(name, chosen, future, fn)
                failing_running += name in failing
            for name in touched:  # only these can have become idle
                if _idle(self._lanes[name]):
                    timer = self._lanes.pop(name).timer
                    if timer is not None:
                        timer.cancel()
        for name, future in dropped:
            self.breakers.finished(name, future)

    def busy(self, key: str) -> str:
        """Why a job of `key` still queued at its deadline (or given up for slowness) was not
        run (a job waits only while its key has `cap` jobs in flight)."""
        with self._lock:
            lane = self._lanes.get(key)
            oldest = min(lane.started.values(), default=None) if lane is not None else None
        if oldest is not None and self._clock() - oldest >= self.patience:
            return self.slow(key)
        return f"registry {key} is busy: {self.cap} requests in flight"

    def slow(self, key: str) -> str:
        """Why a job of `key` was refused, or given up while queued, for slowness."""
        return (
            f"registry {key} is slow: {self.cap} requests in flight, the oldest for over "
            f"{self.patience:g}s"
        )

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
