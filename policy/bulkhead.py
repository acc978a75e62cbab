"""Bulkheads for the resolver's thread pools (shell layer, stdlib only).

A `Lanes` runs jobs on one shared `ThreadPoolExecutor`, at most `cap` at a time per key (a
registry host): a job beyond its key's share waits in that key's queue, holding no thread,
and a waiter that gives up (its review's deadline) takes its job out of the queue. So a slow
or dead registry holds at most `cap` of the pool's threads, and images on other registries
keep theirs. Nor is the pool handed more jobs than it has threads.

Registries are trusted with threads by what they have shown. A registry that has answered
(the last `MAX_PROVEN` remembered) may use any free thread, and gets the first thread that
frees. Those timing out (whose jobs are only probes, below) share half the threads with the
registries never heard from. These — any made-up host a pod author writes — run one lookup
at a time until they first answer, and an eighth of the threads together, since a review
waits for their answer: a crowd of hosts that never answer holds at most that many reviews,
and the registries a cluster actually uses keep half the pool. A new registry's jobs beyond
its one wait while new registries are answering (the first answer makes a registry proven:
its queued jobs then run at its full share); once the new registries' eighth has been full
for `patience` seconds with none of them answering, their queued jobs give up at once
("busy"), and new ones are refused at once, until one answers.

A queue is waited on only while its registry is answering: once the oldest job in flight for
a key has run `patience` seconds, the registry is slow right now, and its queued jobs give up
at once (their futures are cancelled: "busy") instead of holding their reviews — and the
webhook's request threads — until the deadline; a job submitted then is refused at once. A
registry that is merely busy with quick answers keeps its queue.

Each key also has a circuit breaker (`policy.breakers`, which ranks keys too): a registry
timing out gets one job at a time, run as a probe in the background, and the others are
refused at once (`ShortCircuited`). The breakers' names are re-exported here.

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

from policy.breakers import (
    FAILING,
    MAX_IDLE_LANES,
    MAX_PROVEN,
    NEW,
    PROVEN,
    Breakers,
    ShortCircuited,
)

__all__ = [
    "FAILING",
    "MAX_IDLE_LANES",
    "MAX_PROVEN",
    "NEW",
    "PROVEN",
    "Breakers",
    "LaneStats",
    "Lanes",
    "ShortCircuited",
    "Slow",
]

T = TypeVar("T")


class Slow(ShortCircuited):
    """`Lanes.submit` refused: the key's share is full of jobs running longer than the
    patience (the registry is slow right now)."""


@dataclass(frozen=True)
class LaneStats:
    """One key's pressure: jobs running and jobs queued."""

    in_flight: int
    queued: int


class _Lane:
    __slots__ = ("in_flight", "queue", "started", "timer")

    def __init__(self) -> None:
        self.in_flight = 0
        self.started: dict[int, float] = {}  # running jobs (by future id): when they started
        self.timer: threading.Timer | None = None  # sweeps the queue once jobs run too long
        # queued jobs: their future, their function, and whether their waiter's time is up
        self.queue: deque[tuple[Future[Any], Callable[[], Any], Callable[[], bool]]] = deque()


class _Job(Future[T]):
    """A job's future, which remembers whether its key was new when it queued: if it was not
    run, that is why."""

    def __init__(self) -> None:
        super().__init__()
        self.new = False


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
        self._suspect_share = max(1, self._threads // 2)  # failing and new keys together
        self.new_share = max(1, self._threads // 8)  # new keys
        self._submitted = 0
        self.breakers = breakers
        self.patience = patience
        self._clock = clock
        self._lock = threading.Lock()
        self._lanes: dict[str, _Lane] = {}
        self._running = 0
        # Jobs handed to the pool (by future id) for failing or new keys, and for new keys;
        # since when the new keys' share has been full with none answering (None: it has
        # not been), and when the last of their jobs ended.
        self._suspects: set[int] = set()
        self._new: set[int] = set()
        self._quiet_since: float | None = None
        self._emptied = float("-inf")
        self._moved = float("-inf")  # when a new key's job last ended within the patience
        self._group_timer: threading.Timer | None = None
        # A new key's first answer lets its queued jobs run at its full share at once, not
        # one by one as jobs end.
        breakers.listen(self._proven)

    def submit(
        self, key: str, fn: Callable[[], T], *, expired: Callable[[], bool] = lambda: False
    ) -> Future[T]:
        """Run `fn` on the pool when `key` has a free slot. ShortCircuited when its breaker
        refuses it, or when the job is the key's probe (it runs in the background; the message
        says why its waiter should not wait). Cancelling the future before it starts takes the
        job out of the queue; so does `expired()` turning true while it waits (its waiter has
        given up: it is cancelled rather than started)."""
        future: _Job[T] = _Job()
        probe = self.breakers.admit(key, future)
        rank = FAILING if probe else self.breakers.rank(key)
        with self._lock:
            lane = self._lanes.get(key)
            if lane is None:
                lane = self._lanes[key] = _Lane()
            cap = self.cap_of(rank)
            if lane.in_flight < cap and self._room(rank):
                self._start(key, lane, future, fn, rank=rank)
                if probe:
                    raise ShortCircuited(self.breakers.probing(key))
                return future
            oldest = min(lane.started.values(), default=None)
            refusal: str | None = None
            if (
                lane.in_flight >= cap
                and oldest is not None
                and self._clock() - oldest >= self.patience
            ):
                refusal = self.slow(key, lane.in_flight)
            elif rank == NEW and self._jammed():
                refusal = self.jammed(key)
            if refusal is not None:
                if _idle(lane):
                    del self._lanes[key]
                self.breakers.finished(key, future)
                raise Slow(refusal)
            future.new = rank == NEW
            lane.queue.append((future, fn, expired))
            self._arm(key, lane, oldest)
            if rank == NEW:
                self._arm_group()
        if probe:
            raise ShortCircuited(self.breakers.probing(key))
        return future

    def cap_of(self, rank: int) -> int:
        """Jobs a key of `rank` may run at once: its share, or one until it first answers."""
        return 1 if rank == NEW else self.cap

    def _room(self, rank: int) -> bool:
        """Whether a job of a key of `rank` may have a thread now (lock held)."""
        if self._submitted >= self._threads:
            return False
        if rank == PROVEN:
            return True
        if len(self._suspects) >= self._suspect_share:
            return False
        return rank == FAILING or len(self._new) < self.new_share

    def _jammed(self) -> bool:
        """The new keys' share has been full for `patience` with none answering and none of
        their jobs ending quickly (a refused connection frees its thread: that moves) (lock)."""
        if len(self._new) < self.new_share or self._quiet_since is None:
            return False
        return self._clock() - self._last_moved() >= self.patience

    def _last_moved(self) -> float:
        """When the new keys' share last moved: filled afresh, answered, or freed (lock)."""
        assert self._quiet_since is not None
        return max(self._quiet_since, self.breakers.new_answered, self._moved)

    def _start(
        self, key: str, lane: _Lane, future: Future[Any], fn: Callable[[], Any], *, rank: int
    ) -> None:
        """Hand a job to the pool (lock held)."""
        lane.in_flight += 1
        self._submitted += 1
        if rank != PROVEN:
            self._suspects.add(id(future))
        if rank == NEW:
            now = self._clock()
            if not self._new and now - self._emptied >= self.patience:
                self._quiet_since = None  # idle a while: a new crowd starts a new count
            self._new.add(id(future))
            if len(self._new) >= self.new_share and (
                self._quiet_since is None or self.breakers.new_answered >= self._quiet_since
            ):
                self._quiet_since = now
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

    def _arm_group(self) -> None:
        """Sweep the new keys' queues once their share could be jammed (lock held)."""
        if self._group_timer is not None or self.patience == float("inf"):
            return
        quiet = self._last_moved() if self._quiet_since is not None else self._clock()
        wait = max(0.0, quiet + self.patience - self._clock())
        self._group_timer = threading.Timer(wait, self._sweep_group)
        self._group_timer.daemon = True
        self._group_timer.start()

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
        self._cancel(key, queued)

    def _sweep_group(self) -> None:
        """If the new keys' share is jammed, cancel the queued jobs of new keys; else look
        again when it could be."""
        cancelled: list[tuple[str, deque[Any]]] = []
        with self._lock:
            self._group_timer = None
            waiting = [
                (name, lane)
                for name, lane in self._lanes.items()
                if lane.queue and self.breakers.rank(name) == NEW
            ]
            if not waiting:
                return
            if not self._jammed():
                if len(self._new) >= self.new_share:
                    self._arm_group()  # the share is full: it may jam once quiet long enough
                return
            for name, lane in waiting:
                cancelled.append((name, lane.queue))
                lane.queue = deque()
                if _idle(lane):
                    del self._lanes[name]
                    if lane.timer is not None:
                        lane.timer.cancel()
        for name, queued in cancelled:
            self._cancel(name, queued)

    def _cancel(self, key: str, queued: deque[Any]) -> None:
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
                            started = lane.started.pop(id(future), None)
                            now = self._clock()
                            if (
                                id(future) in self._new
                                and started is not None
                                and now - started < self.patience
                            ):
                                self._moved = now
        finally:
            self.breakers.finished(key, future)
            self._finished(key, future)

    def _finished(self, key: str, future: Future[Any]) -> None:
        """A job of `key` ended: its thread goes to the next job queued in the lane of the
        best standing, then with the fewest jobs running (skipping jobs cancelled or out of
        time), else it is freed."""
        with self._lock:
            lane = self._lanes[key]
            lane.in_flight -= 1
            self._submitted -= 1
            self._suspects.discard(id(future))
            if id(future) in self._new:
                self._new.discard(id(future))
                if not self._new:
                    self._emptied = self._clock()
            dropped = self._dispatch({key})
        for name, queued in dropped:
            self.breakers.finished(name, queued)

    def _proven(self, key: str) -> None:
        """`key` answered for the first time (or again after timing out): its queued jobs
        may have threads now."""
        with self._lock:
            lane = self._lanes.get(key)
            if lane is None or not lane.queue:
                return
            dropped = self._dispatch({key})
        for name, queued in dropped:
            self.breakers.finished(name, queued)

    def _dispatch(self, touched: set[str]) -> list[tuple[str, Future[Any]]]:
        """Hand free threads to queued jobs: proven registries first, then those timing out,
        then new ones, within their shares, and the lane with the fewest jobs running first
        — a registry nobody waits on is never queued behind a crowd of hosts that never
        answer. Drops lanes `touched` (or dispatched from) that became idle; returns the
        jobs dropped as cancelled or out of time (lock held)."""
        dropped: list[tuple[str, Future[Any]]] = []
        ranks = {name: self.breakers.rank(name) for name in self._lanes}  # a moment old: enough
        while self._submitted < self._threads:
            candidates = [
                (ranks[name], other.in_flight, name)
                for name, other in self._lanes.items()
                if other.queue
                and other.in_flight < self.cap_of(ranks[name])
                and self._room(ranks[name])
            ]
            if not candidates:
                break
            rank, _, name = min(candidates)
            chosen = self._lanes[name]
            touched.add(name)
            queued, fn, expired = chosen.queue.popleft()
            if queued.cancelled() or (expired() and queued.cancel()):
                dropped.append((name, queued))  # a probe never run lets another probe
                continue
            self._start(name, chosen, queued, fn, rank=rank)
        for name in touched:  # only these can have become idle
            if _idle(self._lanes[name]):
                timer = self._lanes.pop(name).timer
                if timer is not None:
                    timer.cancel()
        return dropped

    def busy(self, key: str, job: Future[Any] | None = None) -> str:
        """Why `job` of `key`, still queued at its deadline (or given up), was not run: its
        registry is slow, or it waited for the new registries' share, or for its key's own."""
        with self._lock:
            lane = self._lanes.get(key)
            oldest = min(lane.started.values(), default=None) if lane is not None else None
            in_flight = lane.in_flight if lane is not None else 0
        if oldest is not None and self._clock() - oldest >= self.patience:
            return self.slow(key, in_flight)
        if isinstance(job, _Job) and job.new:
            return self.jammed(key)
        return f"registry {key} is busy: {self.cap} requests in flight"

    def slow(self, key: str, in_flight: int) -> str:
        """Why a job of `key` was refused, or given up while queued, for slowness."""
        many = f"{in_flight} requests" if in_flight != 1 else "1 request"
        return f"registry {key} is slow: {many} in flight, the oldest for over {self.patience:g}s"

    def jammed(self, key: str) -> str:
        """Why a job of a new `key` was refused, or given up while queued (a registry not
        known to answer has one lookup at a time, and such registries `new_share` together)."""
        return (
            f"registry {key} has not answered yet (until it does it is asked one lookup at a "
            f"time, and registries not known to answer {self.new_share} at most together)"
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
