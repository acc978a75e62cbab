"""Thread-safe caches and request coalescing for the registry resolver (shell layer, stdlib only).

- `SizedLRU`: least-recently-used cache bounded by total bytes, for immutable things keyed by
  digest (manifests, config blobs).
- `TTLCache`: entries that expire after a time-to-live, bounded by entry count, for answers
  that may change (tag → digest, 404s, tokens, Docker Hub tiers).
- `Coalescer`: single-flight; concurrent callers asking for the same key share one call.

Every operation takes one lock for O(1) work, so one instance can serve all the threads of
a threaded gunicorn worker. The TTL clock is injected (`time.monotonic` by default) so tests
step time instead of sleeping.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Clock = Callable[[], float]


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of a cache's counters, taken under its lock.

    `hits`/`misses` count lookups; `evictions` entries dropped to respect the bound (bytes or
    entry count); `expired` entries found past their TTL and purged; `entries`/`bytes` the
    contents at snapshot time (`bytes` is 0 for a `TTLCache`, which does not size entries).
    """

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    expired: int = 0
    entries: int = 0
    bytes: int = 0

    @property
    def hit_ratio(self) -> float:
        """Hits over lookups, 0.0 before the first lookup."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


@dataclass(frozen=True)
class CoalescerStats:
    """A snapshot of a `Coalescer`'s counters.

    `calls` counts every `do()`; `shared` the callers that got another caller's outcome (value
    or exception) instead of running `fn`; `timeouts` the waiters that gave up; `in_flight` the
    keys being computed at snapshot time.
    """

    calls: int = 0
    shared: int = 0
    timeouts: int = 0
    in_flight: int = 0


# --- sizing -----------------------------------------------------------------------------------


def memory_estimate(value: object) -> int:
    """A rough size in bytes of `value` and what it holds, for sizing cache entries.

    Counts `sys.getsizeof` of the object itself plus, recursively, the items of tuples, lists,
    sets, frozensets and mappings (keys and values, including `MappingProxyType`) and the fields
    of dataclass instances. `bytes`/`str`/numbers are leaves whose `getsizeof` already includes
    their content. Any other object counts only its own `getsizeof` (its attributes are not
    followed). An object reachable twice is counted once, so cycles terminate and interned or
    shared values are not double-counted. The result is at least 1.
    """
    seen: set[int] = set()
    stack: list[object] = [value]
    total = 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, str | bytes | bytearray | memoryview | int | float | bool | None):
            continue
        if isinstance(item, Mapping):
            for key, val in item.items():
                stack.append(key)
                stack.append(val)
        elif isinstance(item, tuple | list | set | frozenset):
            stack.extend(item)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            stack.extend(getattr(item, f.name) for f in dataclasses.fields(item))
    return max(total, 1)


# --- SizedLRU ---------------------------------------------------------------------------------


class SizedLRU(Generic[K, V]):
    """An LRU cache bounded by the total size in bytes of its values.

    Each value's size comes from `put(..., size=)` or else from `sizeof(value)` (default:
    `memory_estimate`). Putting evicts least recently used entries until the total is within
    `max_bytes`; a value larger than `max_bytes` is not cached. `get` refreshes recency.
    Meant for immutable data keyed by digest, so a hit never needs revalidating.
    """

    def __init__(self, max_bytes: int, *, sizeof: Callable[[V], int] = memory_estimate) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self._max_bytes = max_bytes
        self._sizeof = sizeof
        self._lock = threading.Lock()
        self._data: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    @property
    def max_bytes(self) -> int:
        """The bound on `bytes`."""
        return self._max_bytes

    def get(self, key: K) -> V | None:
        """The value for `key` (now the most recently used), or None if absent."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                self._misses += 1
                return None
            self._data.move_to_end(key)
            self._hits += 1
            return entry[0]

    def put(self, key: K, value: V, size: int | None = None) -> bool:
        """Store `value` under `key` as most recently used; return whether it was cached.

        Replaces any entry for `key`. A value larger than `max_bytes` is not cached, and the
        old entry for `key`, if any, is dropped (a later `get` must not return a stale value).
        `size` (at least 1) overrides `sizeof(value)`; it is computed outside the lock.
        """
        if size is None:
            size = self._sizeof(value)
        if size < 1:
            raise ValueError(f"entry size must be at least 1 byte, got {size}")
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self._max_bytes:
                return False
            self._data[key] = (value, size)
            self._bytes += size
            while self._bytes > self._max_bytes:
                _, (_, evicted_size) = self._data.popitem(last=False)
                self._bytes -= evicted_size
                self._evictions += 1
            return True

    def discard(self, key: K) -> bool:
        """Remove `key`; return whether it was present."""
        with self._lock:
            entry = self._data.pop(key, None)
            if entry is None:
                return False
            self._bytes -= entry[1]
            return True

    def clear(self) -> None:
        """Remove every entry (the counters are kept)."""
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    @property
    def bytes(self) -> int:
        """The total size of the cached values, never above `max_bytes`."""
        with self._lock:
            return self._bytes

    @property
    def stats(self) -> CacheStats:
        """A consistent snapshot of the counters and contents."""
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                entries=len(self._data),
                bytes=self._bytes,
            )


# --- TTLCache ---------------------------------------------------------------------------------


class TTLCache(Generic[K, V]):
    """A cache whose entries expire `ttl` seconds after being put, holding at most `max_entries`.

    An expired entry is never returned; it is purged when next looked up, when it reaches the
    least recently used end during an insert, or by `purge()`. Beyond `max_entries`, the least
    recently used entry is evicted (expired ones at that end first). `len()` may include expired
    entries not yet purged. Times come from `clock` (seconds, monotonic).
    """

    def __init__(
        self,
        *,
        ttl: float = 300.0,
        max_entries: int = 10_000,
        clock: Clock = time.monotonic,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self._ttl = ttl
        self._max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (value, stored_at, expires_at)
        self._data: OrderedDict[K, tuple[V, float, float]] = OrderedDict()
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expired = 0

    @property
    def ttl(self) -> float:
        """The default time-to-live in seconds."""
        return self._ttl

    def get(self, key: K) -> V | None:
        """The value for `key` if present and not expired, else None."""
        entry = self.get_entry(key)
        return None if entry is None else entry[0]

    def get_entry(self, key: K) -> tuple[V, float] | None:
        """`(value, age)` for a live entry, age in seconds since its put; None if absent/expired.

        The age lets a caller revalidate an entry that is live but older than it would like.
        """
        with self._lock:
            now = self._clock()
            entry = self._data.get(key)
            if entry is None:
                self._misses += 1
                return None
            value, stored_at, expires_at = entry
            if now >= expires_at:
                del self._data[key]
                self._expired += 1
                self._misses += 1
                return None
            self._data.move_to_end(key)
            self._hits += 1
            return value, max(0.0, now - stored_at)

    def put(self, key: K, value: V, ttl: float | None = None) -> None:
        """Store `value` under `key` for `ttl` seconds (default: the cache's `ttl`).

        Replaces any entry for `key`. A `ttl` of 0 or less stores nothing and drops any entry
        for `key` (an answer that must not be cached must not leave an older one behind).
        """
        ttl = self._ttl if ttl is None else ttl
        with self._lock:
            if ttl <= 0:
                self._data.pop(key, None)
                return
            now = self._clock()
            self._data.pop(key, None)
            while len(self._data) >= self._max_entries:
                _, (_, _, expires_at) = self._data.popitem(last=False)
                if now >= expires_at:
                    self._expired += 1
                else:
                    self._evictions += 1
            self._data[key] = (value, now, now + ttl)

    def invalidate(self, key: K) -> bool:
        """Remove `key`; return whether an entry (live or expired) was present."""
        with self._lock:
            return self._data.pop(key, None) is not None

    def purge(self) -> int:
        """Remove every expired entry now (O(n)); return how many were removed."""
        with self._lock:
            now = self._clock()
            dead = [key for key, (_, _, expires_at) in self._data.items() if now >= expires_at]
            for key in dead:
                del self._data[key]
            self._expired += len(dead)
            return len(dead)

    def clear(self) -> None:
        """Remove every entry (the counters are kept)."""
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    @property
    def stats(self) -> CacheStats:
        """A consistent snapshot of the counters and the entry count."""
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                expired=self._expired,
                entries=len(self._data),
            )


# --- Coalescer --------------------------------------------------------------------------------


class _Flight(Generic[V]):
    """One in-flight call: its leader thread, and once `done` is set, its value or error."""

    __slots__ = ("done", "error", "leader", "value")

    value: V
    error: BaseException | None

    def __init__(self, leader: int) -> None:
        self.leader = leader
        self.done = threading.Event()
        self.error = None


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

    def do(self, key: K, fn: Callable[[], V], *, timeout: float | None = None) -> V:
        """Return `fn()`, or the outcome of the call already in flight for `key`.

        `timeout` (seconds, None = no limit) bounds only how long a waiter waits for another
        caller's call: past it the waiter raises `TimeoutError` and the leader carries on. The
        leader is not interrupted (Python threads cannot be), so `fn` must bound its own I/O.
        An exception that is not an `Exception` (e.g. `KeyboardInterrupt`) propagates in the
        leader; waiters raise `RuntimeError` from it. Calling `do()` for a key from inside that
        key's own `fn` raises `RuntimeError` instead of deadlocking.
        """
        me = threading.get_ident()
        with self._lock:
            self._calls += 1
            flight = self._flights.get(key)
            if flight is None:
                flight = _Flight(me)
                self._flights[key] = flight
                leader = True
            elif flight.leader == me:
                raise RuntimeError(f"re-entrant call for key {key!r} from inside its own fn")
            else:
                leader = False
        if leader:
            return self._lead(key, flight, fn)
        return self._follow(key, flight, timeout)

    def _lead(self, key: K, flight: _Flight[V], fn: Callable[[], V]) -> V:
        try:
            value = fn()
        except BaseException as exc:
            flight.error = exc
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
            return CoalescerStats(
                calls=self._calls,
                shared=self._shared,
                timeouts=self._timeouts,
                in_flight=len(self._flights),
            )
