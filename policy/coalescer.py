"""Single-flight for the resolver, the registry's token cache and the tier lookups (shell
layer, stdlib only): concurrent callers asking for the same key share one call (`Coalescer`).

`do` shares a call among its concurrent callers; `share` also runs it under a
`SharedDeadline` that each waiter extends to its own, and a waiter whose call failed after its
starter's deadline had passed runs it again itself. Nothing is cached: the key is forgotten as
soon as the call ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from typing import Generic, TypeVar

from policy.deadline import Deadline, SharedDeadline

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class CoalescerStats:
    """A snapshot of a `Coalescer`'s counters.

    `calls` counts every `do()` and `share()`; `shared` the callers that got another caller's
    outcome (value or exception) instead of running `fn`; `timeouts` the waiters that gave up;
    `in_flight` the keys being computed at snapshot time.
    """

    calls: int = 0
    shared: int = 0
    timeouts: int = 0
    in_flight: int = 0
    handovers: int = 0
    """Waiters that ran the call again themselves after it failed once its starter's deadline
    had passed (`Coalescer.share`)."""


class _Flight(Generic[V]):
    """One in-flight call: its leader thread, and once `done` is set, its value or error."""

    __slots__ = ("deadline", "done", "error", "leader", "starter", "starter_expired", "value")

    value: V
    error: BaseException | None

    def __init__(self, leader: int, starter: Deadline | None = None) -> None:
        self.leader = leader
        self.done = threading.Event()
        self.error = None
        # `share()` only: the starter's own deadline, the one the call runs under (the latest
        # of every waiter's), and whether the starter's had passed when the call failed.
        self.starter = starter
        self.deadline = SharedDeadline(starter) if starter is not None else None
        self.starter_expired = False


class Coalescer(Generic[K, V]):
    """Single-flight: concurrent `do()` calls with the same key share one call of `fn`.

    The first caller for a key (the leader) runs `fn` in its own thread; callers arriving while
    it runs wait for it and get its value, or raise the very exception object it raised. The key
    is forgotten as soon as the call finishes, so a later `do()` runs `fn` again: this shares
    work between concurrent callers, it does not cache (put a cache in front for that).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[K, _Flight[V]] = {}
        self._calls = 0
        self._shared = 0
        self._timeouts = 0
        self._handovers = 0

    def do(self, key: K, fn: Callable[[], V], *, timeout: float | None = None) -> V:
        """Return `fn()`, or the outcome of the call already in flight for `key`.

        `timeout` (seconds, None = no limit) bounds only how long a waiter waits for another
        caller's call: past it the waiter raises `TimeoutError` and the leader carries on. The
        leader is not interrupted (Python threads cannot be), so `fn` must bound its own I/O.
        An exception that is not an `Exception` (e.g. `KeyboardInterrupt`) propagates in the
        leader; waiters raise `RuntimeError` from it. Calling `do()` for a key from inside that
        key's own `fn` raises `RuntimeError` instead of deadlocking.
        """
        flight, leader = self._join(key, None)
        if leader:
            return self._lead(key, flight, fn)
        return self._follow(key, flight, timeout)

    def share(self, key: K, fn: Callable[[Deadline], V], *, deadline: Deadline) -> V:
        """`do` for a call made on behalf of reviews with deadlines: no waiter fails before
        its own deadline because the review that started the call ran out of time.

        `fn` is given the flight's deadline: the latest of the starter's and every waiter's
        (each waiter extends it on joining), so a request begun after a later review joined
        may use that review's time. A waiter waits until its own `deadline`
        (`TimeoutError` past it). If the call fails after its starter's deadline has passed
        (so perhaps only for the starter's lack of time), a waiter with time left does not
        take that failure: it runs `fn` again under its own deadline, as the leader of a new
        call that the other waiters join (the call is handed over). A failure while the
        starter still had time is shared as `do` shares it.
        """
        while True:
            flight, leader = self._join(key, deadline)
            if leader:
                shared = flight.deadline
                assert shared is not None
                return self._lead(key, flight, partial(fn, shared))
            try:
                return self._follow(key, flight, deadline.remaining())
            except Exception as exc:
                if exc is not flight.error or not flight.starter_expired or deadline.expired:
                    raise
            with self._lock:
                self._handovers += 1

    def _join(self, key: K, deadline: Deadline | None) -> tuple[_Flight[V], bool]:
        """The flight for `key` and whether this thread leads it (it started it); a waiter
        with a `deadline` extends the flight's to it. A thread joining its own flight (from
        inside its `fn`) raises `RuntimeError` instead of deadlocking."""
        me = threading.get_ident()
        with self._lock:
            self._calls += 1
            flight = self._flights.get(key)
            if flight is None:
                flight = _Flight(me, deadline)
                self._flights[key] = flight
                return flight, True
            if flight.leader == me:
                raise RuntimeError(f"re-entrant call for key {key!r} from inside its own fn")
            if deadline is not None and flight.deadline is not None:
                flight.deadline.join(deadline)
            return flight, False

    def _lead(self, key: K, flight: _Flight[V], fn: Callable[[], V]) -> V:
        try:
            value = fn()
        except BaseException as exc:
            flight.error = exc
            flight.starter_expired = flight.starter is not None and flight.starter.expired
            raise
        else:
            flight.value = value
            return value
        finally:
            # Forget the key before waking waiters, so a caller arriving after the call has
            # finished starts a new one rather than reading this outcome.
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.set()

    def _follow(self, key: K, flight: _Flight[V], timeout: float | None) -> V:
        if not flight.done.wait(None if timeout is None else max(0.0, timeout)):
            with self._lock:
                self._timeouts += 1
            raise TimeoutError(f"gave up after {timeout}s waiting for the call for {key!r}")
        with self._lock:
            self._shared += 1
        error = flight.error
        if error is None:
            return flight.value
        if isinstance(error, Exception):
            raise error
        raise RuntimeError(f"the call for {key!r} was aborted: {error!r}") from error

    @property
    def stats(self) -> CoalescerStats:
        """A consistent snapshot of the counters and the number of keys in flight."""
        with self._lock:
            in_flight = len(self._flights)
            return CoalescerStats(
                calls=self._calls,
                shared=self._shared,
                timeouts=self._timeouts,
                in_flight=in_flight,
                handovers=self._handovers,
            )
