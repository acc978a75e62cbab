"""Thread-safe caches bounded in bytes, and the size estimate they charge (shell layer, stdlib
only).

- `SizedLRU`: least-recently-used cache bounded by total bytes, for immutable things keyed by
  digest (manifests, config blobs).
- `TTLCache`: entries that expire after a time-to-live, bounded by entry count and optionally
  by bytes, for answers that may change (tag → digest, 404s, tokens, Docker Hub tiers).
- `memory_estimate` / `entry_size`: a deep size of a value (and of a cache entry), close to
  what CPython really allocates for it, so a byte bound bounds resident memory.
- `ByteMemo`: a warm-path memo bounded in bytes, whose `get` is the dict's own.
- `Coalescer` (`policy.coalescer`, re-exported here): single-flight; concurrent callers
  asking for the same key share one call.

Every operation takes one lock for O(1) work, so one instance can serve all the threads of
a threaded gunicorn worker. The TTL clock is injected (`time.monotonic` by default) so tests
step time instead of sleeping.

Why one file over 500 lines: the three caches and `memory_estimate` are one thing — a byte
bound is only as true as the estimate every `put` is charged with, and `CacheStats` is shared.
(Tests also measure what this very file allocates while sizing: `test_cache.traced`.)
"""

from __future__ import annotations

import datetime
import gc
import sys
import threading
import time
import types
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from policy.coalescer import Coalescer, CoalescerStats

__all__ = [
    "ENTRY_OVERHEAD",
    "ByteMemo",
    "CacheStats",
    "Clock",
    "Coalescer",
    "CoalescerStats",
    "SizedLRU",
    "TTLCache",
    "entry_size",
    "memory_estimate",
]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

Clock = Callable[[], float]


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of a cache's counters, taken under its lock.

    `hits`/`misses` count lookups; `evictions` entries dropped to respect the bound (bytes or
    entry count); `expired` entries found past their TTL and purged; `entries`/`bytes` the
    contents at snapshot time (`bytes` is 0 for a `TTLCache` without `max_bytes`, which does
    not size entries).
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


# --- sizing -----------------------------------------------------------------------------------

# CPython 3.11/3.12 keep an ordinary instance's attributes in a "values" array beside the object
# until something asks for `__dict__`; `sys.getsizeof` does not include that array (3.13+ does).
_MANAGED_DICT = 1 << 4  # Py_TPFLAGS_MANAGED_DICT
_INLINE_VALUES_UNCOUNTED = sys.version_info < (3, 13)
# Program objects shared by everything: never charged to a cache entry, never followed.
_SHARED_TYPES = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
)
_SHARED_VALUES = (None, True, False, (), "", b"", datetime.UTC)
# Leaves: `sys.getsizeof` already includes their content and they refer to nothing we follow.
_LEAVES = (str, bytes, bytearray, int, float, complex, range, datetime.date, datetime.timedelta)

# What one cache entry costs beyond its key and value: the OrderedDict slot, link node and hash
# table slack, the tuple holding value, size (and times), and those numbers. Measured with
# tracemalloc on CPython 3.11 x86-64: ~210 bytes for a SizedLRU entry, ~275 for a TTLCache
# entry, of which `entry_size` already counts a 64-byte (key, value) tuple; rounded up.
ENTRY_OVERHEAD = 240


def _allocated(size: int) -> int:
    """Bytes the allocator really hands out for a request of `size` bytes.

    pymalloc serves requests up to 512 bytes from 16-byte size classes; larger ones go to the
    system malloc, which adds an 8-byte header and rounds to 16.
    """
    if size > 512:
        size += 8
    return (size + 15) & ~15


def _inline_values(attributes: int) -> int:
    """The size of a 3.11/3.12 instance's inline values array holding `attributes` attributes.

    The class's shared key table has room for one more key than its instances set; the array
    is that many pointers plus a rounded-up byte per slot of insertion order.
    """
    slots = attributes + 1
    return _allocated(((slots + 2 + 7) & ~7) + 8 * slots)


def _is_shared(item: object) -> bool:
    if isinstance(item, _SHARED_TYPES):
        return True
    if type(item) is int:
        return -5 <= item <= 256  # CPython's small-int cache
    return any(item is shared for shared in _SHARED_VALUES)


def _attribute_dict(item: object, referents: list[object]) -> dict[str, object] | None:
    """`item`'s instance `__dict__` if it exists among `referents`, without creating one."""
    cls = type(item)
    if cls.__flags__ & _MANAGED_DICT:
        # Materialized, the managed dict is the only referent; inline values are not a dict
        # (unless the one attribute is a dict: then its str keys go uncharged, a small error).
        only = referents[0] if len(referents) == 1 else None
        return only if type(only) is dict else None
    if cls.__dictoffset__ and any(type(r) is dict for r in referents):
        attributes = getattr(item, "__dict__", None)  # present: one of the referents
        if any(r is attributes for r in referents):
            return attributes
    return None


def _children(item: object) -> tuple[list[object], int, object | None]:
    """What `item` holds that must be followed, storage `getsizeof` leaves out, and the
    instance `__dict__` (already charged in that storage) if `item` has one."""
    if isinstance(item, dict):
        return [*item.keys(), *item.values()], 0, None
    if isinstance(item, tuple | list | set | frozenset):
        return list(item), 0, None
    if isinstance(item, types.FrameType):
        return [], 0, None  # a traceback keeps its frame alive, not the program it refers to
    # MappingProxyType (its mapping), exceptions (args, __dict__, traceback, cause, context),
    # tracebacks, slotted and ordinary instances (their slots and attributes, read without
    # materializing an instance __dict__).
    referents = [r for r in gc.get_referents(item) if not isinstance(r, type)]
    attributes = _attribute_dict(item, referents)
    if attributes is not None:
        # Attribute names are interned by setattr and shared by every instance: charge the
        # dict and its values, not its keys.
        others = [r for r in referents if r is not attributes]
        return [*others, *attributes.values()], _allocated(sys.getsizeof(attributes)), attributes
    extra = 0
    if _INLINE_VALUES_UNCOUNTED and type(item).__flags__ & _MANAGED_DICT and referents:
        extra = _inline_values(len(referents))
    return referents, extra, None


def memory_estimate(value: object, *, opaque: tuple[type, ...] = ()) -> int:
    """The bytes `value` and everything it holds occupy, for sizing cache entries.

    A deep size: each object reached counts `sys.getsizeof` rounded up to what the allocator
    really hands out, and is followed into — container items (tuples, lists, sets, dict keys and
    values), the mapping behind a `MappingProxyType`, an instance's slots and attributes
    (including CPython 3.11/3.12's inline attribute array, which `getsizeof` omits), an
    exception's args, attributes, cause, context and traceback (the frames' own size, not what
    they refer to). `str`, `bytes`, numbers, dates and datetimes are leaves. Objects shared by
    the whole program — classes, modules, functions, None, booleans, small ints, empty str/bytes/
    tuple, `datetime.UTC` — are not charged. An object reached twice counts once, so cycles
    terminate and values shared inside `value` are not double-counted (values shared *between*
    entries are charged to each: the estimate errs high). The result is at least 1.

    Reading never changes `value` (an instance's `__dict__` is not materialized). Instances
    of `opaque` types (program state an entry refers to but does not own, such as the rule
    set's rules) are neither charged nor followed.
    """
    seen: set[int] = set()
    stack: list[object] = [value]
    total = 0
    while stack:
        item = stack.pop()
        if id(item) in seen or _is_shared(item) or (opaque and isinstance(item, opaque)):
            continue
        seen.add(id(item))
        total += _allocated(sys.getsizeof(item))
        if isinstance(item, _LEAVES):
            continue
        children, extra, attributes = _children(item)
        if attributes is not None:
            seen.add(id(attributes))
        total += extra
        stack.extend(children)
    return max(total, 1)


def entry_size(key: object, value: object, *, opaque: tuple[type, ...] = ()) -> int:
    """What caching `value` under `key` costs: both estimated together, plus `ENTRY_OVERHEAD`.

    Objects shared by key and value count once. This is the `size=` the resolver charges.
    """
    return memory_estimate((key, value), opaque=opaque) + ENTRY_OVERHEAD


# --- ByteMemo ---------------------------------------------------------------------------------


class ByteMemo(Generic[K, V]):
    """A warm-path memo bounded in bytes: `get` is the dict's own `get` (one C call, no lock,
    no recency bookkeeping); `put` charges `entry_size(key, value)` (instances of `opaque`
    types not counted) and, when the total would pass `max_bytes`, empties the memo first — the
    count-bounded memos it replaces were cleared when full, too. A value larger than the whole
    budget is not kept.
    """

    def __init__(self, max_bytes: int, *, opaque: tuple[type, ...] = ()) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.max_bytes = max_bytes
        self._opaque = opaque
        self._data: dict[K, V] = {}
        self._sizes: dict[K, int] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        self.get = self._data.get

    def put(self, key: K, value: V, size: int | None = None) -> bool:
        """Keep `value` under `key`; say whether it was kept. The size is measured outside
        the lock."""
        if size is None:
            size = entry_size(key, value, opaque=self._opaque)
        with self._lock:
            self._bytes -= self._sizes.pop(key, 0)
            if size > self.max_bytes:
                self._data.pop(key, None)
                return False
            if self._bytes + size > self.max_bytes:
                self._data.clear()
                self._sizes.clear()
                self._bytes = 0
            self._data[key] = value
            self._sizes[key] = size
            self._bytes += size
            return True

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._sizes.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def bytes(self) -> int:
        """The total size charged, never above `max_bytes`."""
        with self._lock:
            return self._bytes


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
    """A cache whose entries expire `ttl` seconds after being put, bounded by count and bytes.

    An expired entry is never returned; it is purged when next looked up, when it reaches the
    least recently used end during an insert, or by `purge()`. Beyond `max_entries` entries, or
    beyond `max_bytes` total bytes when that is set, least recently used entries are evicted
    (expired ones at that end first). With `max_bytes`, each entry's size comes from
    `put(..., size=)` or else from `sizeof(value)` (default: `memory_estimate`), and a value
    larger than `max_bytes` is not cached; without it entries are not sized. `len()` may include
    expired entries not yet purged. Times come from `clock` (seconds, monotonic; default
    `time.monotonic`).
    """

    def __init__(
        self,
        *,
        ttl: float = 300.0,
        max_entries: int = 10_000,
        max_bytes: int | None = None,
        sizeof: Callable[[V], int] = memory_estimate,
        clock: Clock | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, got {ttl}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self._ttl = ttl
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._sizeof = sizeof
        self._clock = clock if clock is not None else time.monotonic
        self._lock = threading.Lock()
        # key -> (value, stored_at, expires_at, size); size is 0 when not bounded by bytes
        self._data: OrderedDict[K, tuple[V, float, float, int]] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._expired = 0

    @property
    def ttl(self) -> float:
        """The default time-to-live in seconds."""
        return self._ttl

    @property
    def max_bytes(self) -> int | None:
        """The bound on `bytes`, or None when entries are bounded by count only."""
        return self._max_bytes

    def get(self, key: K) -> V | None:
        """The value for `key` if present and not expired, else None."""
        entry = self.get_entry(key)
        return None if entry is None else entry[0]

    def get_many(self, keys: Iterable[K]) -> list[V | None]:
        """`get` for each key, in order, under one lock and one clock reading (a webhook review
        looks up all of its images' answers at once)."""
        out: list[V | None] = []
        with self._lock:
            now = self._clock()
            data = self._data
            for key in keys:
                entry = data.get(key)
                if entry is not None and now >= entry[2]:
                    del data[key]
                    self._bytes -= entry[3]
                    self._expired += 1
                    entry = None
                if entry is None:
                    self._misses += 1
                    out.append(None)
                else:
                    data.move_to_end(key)
                    self._hits += 1
                    out.append(entry[0])
        return out

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
            value, stored_at, expires_at, size = entry
            if now >= expires_at:
                del self._data[key]
                self._bytes -= size
                self._expired += 1
                self._misses += 1
                return None
            self._data.move_to_end(key)
            self._hits += 1
            return value, max(0.0, now - stored_at)

    def put(self, key: K, value: V, ttl: float | None = None, *, size: int | None = None) -> bool:
        """Store `value` under `key` for `ttl` seconds (default: the cache's `ttl`); say if cached.

        Replaces any entry for `key`. A `ttl` of 0 or less stores nothing and drops any entry
        for `key` (an answer that must not be cached must not leave an older one behind); so
        does a value larger than `max_bytes`. `size` (at least 1) overrides `sizeof(value)`
        and is ignored without `max_bytes`; `sizeof` runs outside the lock.
        """
        ttl = self._ttl if ttl is None else ttl
        if self._max_bytes is None or ttl <= 0:
            size = 0
        elif size is None:
            size = self._sizeof(value)
        if self._max_bytes is not None and ttl > 0 and size < 1:
            raise ValueError(f"entry size must be at least 1 byte, got {size}")
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[3]
            if ttl <= 0 or (self._max_bytes is not None and size > self._max_bytes):
                return False
            now = self._clock()
            limit = self._max_bytes if self._max_bytes is not None else 0
            while self._data and (
                len(self._data) >= self._max_entries or (limit and self._bytes + size > limit)
            ):
                _, (_, _, expires_at, evicted_size) = self._data.popitem(last=False)
                self._bytes -= evicted_size
                if now >= expires_at:
                    self._expired += 1
                else:
                    self._evictions += 1
            self._data[key] = (value, now, now + ttl, size)
            self._bytes += size
            return True

    def invalidate(self, key: K) -> bool:
        """Remove `key`; return whether an entry (live or expired) was present."""
        with self._lock:
            entry = self._data.pop(key, None)
            if entry is None:
                return False
            self._bytes -= entry[3]
            return True

    def purge(self) -> int:
        """Remove every expired entry now (O(n)); return how many were removed."""
        with self._lock:
            now = self._clock()
            dead = [key for key, (_, _, expires_at, _) in self._data.items() if now >= expires_at]
            for key in dead:
                self._bytes -= self._data.pop(key)[3]
            self._expired += len(dead)
            return len(dead)

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
        """The total size of the entries (0 without `max_bytes`), never above `max_bytes`."""
        with self._lock:
            return self._bytes

    @property
    def stats(self) -> CacheStats:
        """A consistent snapshot of the counters, the entry count and the bytes."""
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                expired=self._expired,
                entries=len(self._data),
                bytes=self._bytes,
            )
