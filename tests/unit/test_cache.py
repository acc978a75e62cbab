"""Tests for policy/cache.py: byte-bounded LRU, TTL cache, single-flight coalescing."""

from __future__ import annotations

import datetime
import gc
import hashlib
import json
import random
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType

import pytest

from policy import cache
from policy.deadline import Deadline, SharedDeadline
from policy.errors import ManifestNotFound
from policy.facts import ImageFacts, PlatformFacts
from policy.registry import media
from policy.registry.client import ManifestHead
from tests.support.clock import FakeClock

WAIT = 5.0  # upper bound on any wait for another thread; tests finish far sooner


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll `predicate` until true; fail the test if it is not true within `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.0005)


def start(threads: list[threading.Thread]) -> list[threading.Thread]:
    for t in threads:
        t.start()
    return threads


def join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive(), "thread did not finish"


def run_threads(threads: list[threading.Thread]) -> None:
    join(start(threads))


# --- memory_estimate ------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    digest: str
    data: bytes
    parts: tuple[bytes, ...] = ()


@pytest.mark.parametrize(
    ("small", "large"),
    [
        (b"", b"x" * 10_000),
        ("", "y" * 10_000),
        (Blob("sha256:a", b""), Blob("sha256:a", b"z" * 10_000)),
        (Blob("d", b"", ()), Blob("d", b"", (b"q" * 5_000, b"r" * 5_000))),
        ({"k": b""}, {"k": b"v" * 10_000}),
        ([b""], [b"w" * 10_000]),
    ],
    ids=["bytes", "str", "dataclass", "dataclass-tuple", "dict", "list"],
)
def test_memory_estimate_grows_with_content(small: object, large: object) -> None:
    """The estimate counts the bytes held inside containers and dataclass fields."""
    assert cache.memory_estimate(small) >= 1
    grown = cache.memory_estimate(large) - cache.memory_estimate(small)
    assert 10_000 <= grown < 10_500


def test_memory_estimate_counts_shared_objects_once_and_survives_cycles() -> None:
    payload = b"p" * 10_000
    once = cache.memory_estimate([payload])
    assert cache.memory_estimate([payload, payload]) - once < 100
    loop: list[object] = [payload]
    loop.append(loop)
    assert cache.memory_estimate(loop) >= 10_000


@contextmanager
def traced(*, only_here: bool = False) -> Iterator[list[int]]:
    """Measure the bytes allocated and still alive across the block (tracemalloc), into [0].
    `only_here`: those allocated by the cache module or this file only, so that other threads
    (a decision log's writer, a transport's watchdog left by earlier tests) allocating
    meanwhile do not count."""
    gc.collect()
    tracemalloc.start()
    here = [tracemalloc.Filter(True, cache.__file__), tracemalloc.Filter(True, __file__)]
    try:
        if only_here:
            before = tracemalloc.take_snapshot().filter_traces(here)
        else:
            start = tracemalloc.get_traced_memory()[0]
        result = [0]
        yield result
        gc.collect()
        if only_here:
            after = tracemalloc.take_snapshot().filter_traces(here)
            result[0] = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        else:
            result[0] = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()


def _hex(n: int, salt: str = "") -> str:
    return hashlib.sha256(f"{salt}/{n}".encode()).hexdigest()


def _manifest_body(n: int) -> bytes:
    layer = "application/vnd.oci.image.layer.v1.tar+gzip"
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media.OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{_hex(n, 'c')}",
                "size": 1200 + n,
            },
            "layers": [
                {"mediaType": layer, "digest": f"sha256:{_hex(n, str(i))}", "size": 10**6 + n}
                for i in range(4)
            ],
        }
    ).encode()


def _index_body(n: int) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": media.OCI_MANIFEST,
                    "digest": f"sha256:{_hex(n, arch)}",
                    "size": 900 + n,
                    "platform": {"os": "linux", "architecture": arch},
                    "annotations": {"org.opencontainers.image.ref.name": f"v{n}-{arch}"},
                }
                for arch in ("amd64", "arm64", "s390x")
            ],
        }
    ).encode()


def _config_body(n: int) -> bytes:
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": f"2024-05-01T12:{n % 60:02d}:00Z",
            "config": {
                "User": f"{1000 + n}",
                "Labels": {
                    "org.opencontainers.image.source": f"https://git.example/app{n}",
                    "org.opencontainers.image.revision": _hex(n, "r")[:40],
                    "maintainer": f"team-{n}@example.com",
                },
            },
        }
    ).encode()


def _facts(n: int) -> ImageFacts:
    labels = json.loads(json.dumps({"a": f"label {n}", "b": f"other {n}"}))
    return ImageFacts(
        digest=f"sha256:{_hex(n)}",
        media_type=str(media.OCI_INDEX.encode().decode()),
        index=True,
        platforms=tuple(
            PlatformFacts(
                platform=f"linux/{arch}",
                digest=f"sha256:{_hex(n, arch)}",
                layers=4 + n % 3,
                size=10**6 + n,
                user=f"{n}",
                created=datetime.datetime(2024, 1, 1, 0, 0, n % 60, tzinfo=datetime.UTC),
                labels=MappingProxyType(labels),
                config_known=True,
            )
            for arch in ("amd64", "arm64")
        ),
        errors=MappingProxyType({}),
    )


@dataclass(frozen=True, slots=True)
class Slotted:
    name: str
    size: int
    parts: tuple[str, ...]


class Plain:
    """An ordinary class: attributes live in CPython's per-instance (inline) storage."""

    def __init__(self, n: int) -> None:
        self.name = f"plain-{n}"
        self.size = 10**9 + n
        self.tags = [f"t{n}", f"u{n}"]


def _manifest(n: int) -> object:
    return media.parse_manifest(_manifest_body(n), None)


def _index(n: int) -> object:
    return media.parse_manifest(_index_body(n), None)


def _config(n: int) -> object:
    return media.parse_config(_config_body(n))


# Each maker builds the n-th of many distinct values (what a cache holds: no two share data).
ESTIMATED: dict[str, Callable[[int], object]] = {
    "image-manifest": _manifest,
    "index": _index,
    "config": _config,
    "image-facts": _facts,
    "manifest-head": lambda n: ManifestHead(f"sha256:{_hex(n)}", f"type/{n}", 10**6 + n),
    "slotted-dataclass": lambda n: Slotted(f"s{n}", 10**9 + n, (f"a{n}", f"b{n}")),
    "plain-object": Plain,
    "exception": lambda n: ManifestNotFound(f"no manifest {n}", registry=f"r{n}"),
    "dict-of-lists": lambda n: {f"k{n}-{i}": [f"v{n}-{i}", 10**9 + i] for i in range(5)},
}


@pytest.mark.parametrize("make", ESTIMATED.values(), ids=ESTIMATED.keys())
def test_memory_estimate_tracks_what_python_allocates(make: Callable[[int], object]) -> None:
    """The estimate is within ±30% of the memory tracemalloc sees the value keep alive."""
    count = 400
    with traced() as allocated:
        values = [make(n) for n in range(count)]
    measured = (allocated[0] - sys.getsizeof(values)) / count
    estimated = sum(cache.memory_estimate(v) for v in values) / count
    assert 0.7 * measured <= estimated <= 1.3 * measured, (measured, estimated)


def test_memory_estimate_does_not_grow_what_it_measures() -> None:
    """Sizing never materializes an instance `__dict__` (CPython stores attributes inline)."""
    values = [_manifest(n) for n in range(200)] + [Plain(n) for n in range(200)]
    first = [cache.memory_estimate(v) for v in values]
    with traced(only_here=True) as allocated:
        again = [cache.memory_estimate(v) for v in values]
    assert again == first
    # only the list of results and its ints (a materialized __dict__ would cost 100+ bytes each)
    assert allocated[0] < sys.getsizeof(again) + 32 * len(again) + 1024


@pytest.mark.parametrize(
    "shared",
    [None, True, 7, (), "", datetime.UTC, Plain, len, json, lambda: 0],
    ids=[
        "None",
        "bool",
        "small-int",
        "empty-tuple",
        "empty-str",
        "utc",
        "class",
        "builtin",
        "module",
        "function",
    ],
)
def test_memory_estimate_does_not_charge_objects_the_whole_program_shares(shared: object) -> None:
    assert cache.memory_estimate([shared]) == cache.memory_estimate([])


def test_entry_size_counts_key_and_value_once_plus_overhead() -> None:
    key = ("manifest", "registry.example", "app", f"sha256:{_hex(1)}")
    value = _manifest(1)
    size = cache.entry_size(key, value)
    assert size == cache.memory_estimate((key, value)) + cache.ENTRY_OVERHEAD
    assert size > cache.memory_estimate(value) + cache.memory_estimate(key[3])
    assert cache.entry_size(key, key) < cache.memory_estimate(key) * 2 + cache.ENTRY_OVERHEAD


def _filled_lru(count: int) -> cache.SizedLRU[tuple[str, str], object]:
    c: cache.SizedLRU[tuple[str, str], object] = cache.SizedLRU(10**12)
    for n in range(count):
        key = ("config", f"sha256:{_hex(n)}")
        value = _config(n)
        c.put(key, value, cache.entry_size(key, value))
    return c


def _filled_ttl(count: int) -> cache.TTLCache[tuple[str, str], object]:
    c: cache.TTLCache[tuple[str, str], object] = cache.TTLCache(
        max_entries=10**6, max_bytes=10**12, clock=FakeClock()
    )
    for n in range(count):
        key = ("tag", f"v{n}.{n * 7}")
        value = ManifestHead(f"sha256:{_hex(n)}", f"type/{n}", 10**6 + n)
        c.put(key, value, size=cache.entry_size(key, value))
    return c


@pytest.mark.parametrize("fill", [_filled_lru, _filled_ttl], ids=["SizedLRU", "TTLCache"])
def test_charged_bytes_bound_what_a_whole_cache_really_holds(
    fill: Callable[[int], cache.SizedLRU[tuple[str, str], object]],
) -> None:
    """Charging `entry_size`, the cache's `bytes` covers its real memory (within 30% over)."""
    with traced() as allocated:
        c = fill(3_000)
    charged = c.bytes
    assert allocated[0] <= charged <= 1.3 * allocated[0], (allocated[0], charged)


# --- SizedLRU ---------------------------------------------------------------------------------


def lru(max_bytes: int) -> cache.SizedLRU[str, bytes]:
    return cache.SizedLRU(max_bytes, sizeof=len)


@pytest.mark.parametrize(
    ("ops", "expected_keys", "expected_bytes"),
    [
        # fills to the bound exactly: nothing evicted
        ([("put", "a", 4), ("put", "b", 3), ("put", "c", 3)], ["a", "b", "c"], 10),
        # one byte over: the least recently put goes
        ([("put", "a", 4), ("put", "b", 3), ("put", "c", 4)], ["b", "c"], 7),
        # a get makes "a" most recent, so "b" is evicted instead
        ([("put", "a", 4), ("put", "b", 3), ("get", "a", 0), ("put", "c", 4)], ["a", "c"], 8),
        # a large item evicts several
        ([("put", "a", 3), ("put", "b", 3), ("put", "c", 3), ("put", "d", 9)], ["d"], 9),
        # an oversize item is not cached and evicts nothing
        ([("put", "a", 4), ("put", "big", 11)], ["a"], 4),
        # updating a key replaces its size and refreshes its recency
        ([("put", "a", 4), ("put", "b", 4), ("put", "a", 2), ("put", "c", 5)], ["a", "c"], 7),
        # growing an existing key evicts others, not itself
        ([("put", "a", 2), ("put", "b", 2), ("put", "a", 9)], ["a"], 9),
        # an oversize update drops the stale old value
        ([("put", "a", 4), ("put", "b", 3), ("put", "a", 11)], ["b"], 3),
        # discard frees the bytes
        ([("put", "a", 4), ("put", "b", 3), ("discard", "a", 0)], ["b"], 3),
    ],
    ids=[
        "exact-fit",
        "evict-lru",
        "get-refreshes",
        "evict-many",
        "oversize-skipped",
        "update-resizes",
        "update-grows",
        "oversize-update-drops-old",
        "discard",
    ],
)
def test_lru_order_and_byte_bound(
    ops: list[tuple[str, str, int]], expected_keys: list[str], expected_bytes: int
) -> None:
    c = lru(10)
    for op, key, size in ops:
        if op == "put":
            c.put(key, b"v" * size)
        elif op == "get":
            assert c.get(key) is not None
        else:
            c.discard(key)
    assert c.bytes == expected_bytes
    assert len(c) == len(expected_keys)
    for key in ["a", "b", "c", "d", "big"]:
        assert (c.get(key) is not None) == (key in expected_keys), key


def test_lru_put_reports_whether_cached_and_explicit_size_overrides_sizeof() -> None:
    c = lru(10)
    assert c.put("a", b"tiny", size=10) is True
    assert c.bytes == 10
    assert c.put("b", b"tiny", size=11) is False
    assert c.put("c", b"x" * 100, size=1) is True  # sizeof ignored: the caller knows better
    assert c.get("a") is None  # evicted by "c"
    assert c.bytes == 1


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: cache.SizedLRU[str, bytes](0), "max_bytes"),
        (lambda: lru(10).put("a", b"", size=0), "at least 1 byte"),
        (lambda: lru(10).put("a", b""), "at least 1 byte"),  # len(b"") == 0
        (lambda: cache.TTLCache[str, int](ttl=0), "ttl"),
        (lambda: cache.TTLCache[str, int](max_entries=0), "max_entries"),
        (lambda: cache.TTLCache[str, int](max_bytes=0), "max_bytes"),
        (lambda: cache.TTLCache[str, int](max_bytes=10).put("a", 1, size=0), "at least 1 byte"),
    ],
    ids=[
        "lru-zero-bound",
        "lru-zero-size",
        "lru-zero-sizeof",
        "ttl-zero",
        "ttl-zero-entries",
        "ttl-zero-bytes",
        "ttl-zero-size",
    ],
)
def test_bad_arguments_are_rejected(make: Callable[[], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_lru_stats_count_hits_misses_evictions() -> None:
    c = lru(10)
    c.put("a", b"x" * 6)
    c.put("b", b"x" * 6)  # evicts a
    assert c.get("a") is None
    assert c.get("b") == b"x" * 6
    assert c.get("b") is not None
    assert c.stats == cache.CacheStats(hits=2, misses=1, evictions=1, entries=1, bytes=6)
    assert c.stats.hit_ratio == pytest.approx(2 / 3)
    c.clear()
    assert (len(c), c.bytes, c.stats.hits) == (0, 0, 2)


def test_lru_default_sizeof_is_memory_estimate() -> None:
    c: cache.SizedLRU[str, Blob] = cache.SizedLRU(50_000)
    blob = Blob("sha256:1", b"b" * 20_000)
    c.put("1", blob)
    assert c.bytes == cache.memory_estimate(blob)
    c.put("2", Blob("sha256:2", b"b" * 20_000))
    c.put("3", Blob("sha256:3", b"b" * 20_000))
    assert len(c) == 2
    assert c.get("1") is None


# --- TTLCache ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("put_ttl", "elapsed", "live", "age"),
    [
        (None, 0.0, True, 0.0),
        (None, 299.9, True, 299.9),
        (None, 300.0, False, None),  # expiry is inclusive: at exactly ttl it is gone
        (None, 10_000.0, False, None),
        (30.0, 29.0, True, 29.0),  # per-put override, e.g. a negative (404) entry
        (30.0, 30.0, False, None),
        (86_400.0, 86_399.0, True, 86_399.0),  # a Docker Hub tier answer
        (86_400.0, 86_400.0, False, None),
    ],
)
def test_ttl_expiry_with_fake_clock(
    put_ttl: float | None, elapsed: float, live: bool, age: float | None
) -> None:
    clock = FakeClock()
    c: cache.TTLCache[str, str] = cache.TTLCache(ttl=300.0, clock=clock)
    c.put("library/nginx:1.27", "sha256:abc", ttl=put_ttl)
    clock.advance(elapsed)
    entry = c.get_entry("library/nginx:1.27")
    if live:
        assert entry is not None
        assert entry[0] == "sha256:abc"
        assert entry[1] == pytest.approx(age)
        assert c.get("library/nginx:1.27") == "sha256:abc"
    else:
        assert entry is None
        assert c.get("library/nginx:1.27") is None
        assert len(c) == 0  # purged by the lookup
        assert c.stats.expired == 1


def test_negative_cache_expires_sooner_than_positive_answers() -> None:
    """A 404 cached for 30 s is forgotten then, while a tag → digest answer stays."""
    clock = FakeClock()
    not_found = object()
    c: cache.TTLCache[str, object] = cache.TTLCache(ttl=300.0, clock=clock)
    c.put("ghcr.io/x/y:missing", not_found, ttl=30.0)
    c.put("ghcr.io/x/y:1.0", "sha256:1")
    assert c.get("ghcr.io/x/y:missing") is not_found
    clock.advance(31.0)
    assert c.get("ghcr.io/x/y:missing") is None
    assert c.get("ghcr.io/x/y:1.0") == "sha256:1"


def test_ttl_put_replaces_value_and_restarts_age() -> None:
    clock = FakeClock()
    c: cache.TTLCache[str, str] = cache.TTLCache(ttl=10.0, clock=clock)
    c.put("k", "old")
    clock.advance(8.0)
    c.put("k", "new")
    clock.advance(8.0)
    assert c.get_entry("k") == ("new", 8.0)


@pytest.mark.parametrize("ttl", [0.0, -1.0])
def test_ttl_put_with_nonpositive_ttl_stores_nothing_and_drops_old(ttl: float) -> None:
    c: cache.TTLCache[str, str] = cache.TTLCache(clock=FakeClock())
    c.put("k", "old")
    c.put("k", "new", ttl=ttl)
    assert c.get("k") is None
    assert len(c) == 0


def test_ttl_invalidate() -> None:
    c: cache.TTLCache[str, str] = cache.TTLCache(clock=FakeClock())
    c.put("token", "abc")
    assert c.invalidate("token") is True
    assert c.invalidate("token") is False
    assert c.get("token") is None


def test_ttl_max_entries_evicts_least_recently_used() -> None:
    clock = FakeClock()
    c: cache.TTLCache[str, int] = cache.TTLCache(max_entries=3, clock=clock)
    for i, key in enumerate("abc"):
        c.put(key, i)
    assert c.get("a") == 0  # a is now most recent; b is least
    c.put("d", 3)
    assert len(c) == 3
    assert [c.get(k) for k in "abcd"] == [0, None, 2, 3]
    assert c.stats.evictions == 1


def test_ttl_insert_at_capacity_counts_expired_lru_entries_as_expired() -> None:
    clock = FakeClock()
    c: cache.TTLCache[str, int] = cache.TTLCache(ttl=100.0, max_entries=2, clock=clock)
    c.put("short", 1, ttl=5.0)
    c.put("long", 2)
    clock.advance(10.0)
    c.put("new", 3)  # the LRU entry is expired: dropping it is not an eviction
    assert (c.stats.expired, c.stats.evictions) == (1, 0)
    assert [c.get(k) for k in ("short", "long", "new")] == [None, 2, 3]


def test_ttl_purge_removes_only_expired() -> None:
    clock = FakeClock()
    c: cache.TTLCache[str, int] = cache.TTLCache(ttl=100.0, clock=clock)
    c.put("a", 1, ttl=5.0)
    c.put("b", 2, ttl=50.0)
    c.put("c", 3)
    clock.advance(60.0)
    assert len(c) == 3  # lazy: nothing purged yet
    assert c.purge() == 2
    assert len(c) == 1
    assert c.get("c") == 3


def test_ttl_stats() -> None:
    clock = FakeClock()
    c: cache.TTLCache[str, int] = cache.TTLCache(ttl=10.0, clock=clock)
    c.put("a", 1)
    assert c.get("a") == 1
    assert c.get("zzz") is None
    clock.advance(10.0)
    assert c.get("a") is None
    assert c.stats == cache.CacheStats(hits=1, misses=2, expired=1, entries=0)


def ttl_bytes(max_bytes: int, clock: FakeClock) -> cache.TTLCache[str, bytes]:
    return cache.TTLCache(ttl=100.0, max_entries=5, max_bytes=max_bytes, sizeof=len, clock=clock)


@pytest.mark.parametrize(
    ("ops", "expected_keys", "expected_bytes"),
    [
        # fills to the byte bound exactly: nothing evicted
        ([("put", "a", 4), ("put", "b", 3), ("put", "c", 3)], ["a", "b", "c"], 10),
        # one byte over: the least recently used goes
        ([("put", "a", 4), ("put", "b", 3), ("put", "c", 4)], ["b", "c"], 7),
        # a get refreshes recency, so "b" is evicted instead
        ([("put", "a", 4), ("put", "b", 3), ("get", "a", 0), ("put", "c", 4)], ["a", "c"], 8),
        # a large item evicts several
        ([("put", "a", 3), ("put", "b", 3), ("put", "c", 3), ("put", "d", 9)], ["d"], 9),
        # an oversize item is not cached and evicts nothing
        ([("put", "a", 4), ("put", "big", 11)], ["a"], 4),
        # an oversize update drops the stale old value and frees its bytes
        ([("put", "a", 4), ("put", "b", 3), ("put", "a", 11)], ["b"], 3),
        # updating a key replaces its size
        ([("put", "a", 4), ("put", "b", 4), ("put", "a", 2), ("put", "c", 4)], ["a", "b", "c"], 10),
        # the entry-count bound (5) still applies to tiny entries
        ([("put", k, 1) for k in "abcdef"], list("bcdef"), 5),
        # expiry frees the bytes of entries found expired by a get
        ([("put", "a", 4), ("tick", "", 0), ("get", "a", 0), ("put", "b", 3)], ["b"], 3),
        # an insert over the bound drops expired entries first
        ([("put", "a", 6), ("tick", "", 0), ("put", "b", 6)], ["b"], 6),
        # invalidate, purge and a zero-ttl put all free bytes
        ([("put", "a", 4), ("put", "b", 3), ("invalidate", "a", 0)], ["b"], 3),
        ([("put", "a", 4), ("tick", "", 0), ("put", "b", 3), ("purge", "", 0)], ["b"], 3),
        ([("put", "a", 4), ("put", "b", 3), ("put0", "a", 4)], ["b"], 3),
    ],
    ids=[
        "exact-fit",
        "evict-lru",
        "get-refreshes",
        "evict-many",
        "oversize-skipped",
        "oversize-update-drops-old",
        "update-resizes",
        "entry-bound",
        "expired-get-frees",
        "expired-evicted-first",
        "invalidate-frees",
        "purge-frees",
        "zero-ttl-frees",
    ],
)
def test_ttl_byte_bound(
    ops: list[tuple[str, str, int]], expected_keys: list[str], expected_bytes: int
) -> None:
    clock = FakeClock()
    c = ttl_bytes(10, clock)
    for op, key, size in ops:
        if op == "put":
            c.put(key, b"x" * size)
        elif op == "put0":
            assert c.put(key, b"x" * size, ttl=0) is False
        elif op == "get":
            c.get(key)
        elif op == "tick":
            clock.advance(100.0)
        elif op == "invalidate":
            c.invalidate(key)
        else:
            c.purge()
        assert c.bytes <= 10
    assert sorted(k for k in "abcdefg" if c.get(k) is not None) == expected_keys
    assert c.bytes == expected_bytes == c.stats.bytes


def test_ttl_without_max_bytes_does_not_size_entries() -> None:
    sized: list[object] = []

    def sizeof(value: object) -> int:
        sized.append(value)
        return 1

    c: cache.TTLCache[str, str] = cache.TTLCache(sizeof=sizeof, clock=FakeClock())
    assert c.put("a", "value", size=10**9) is True
    assert (c.get("a"), c.bytes, c.max_bytes, sized) == ("value", 0, None, [])


def test_ttl_explicit_size_overrides_sizeof_and_clear_frees_bytes() -> None:
    c = ttl_bytes(10, FakeClock())
    assert c.put("a", b"x" * 100, size=2) is True
    assert c.put("b", b"", size=11) is False
    assert c.bytes == 2
    c.clear()
    assert (len(c), c.bytes) == (0, 0)


# --- Coalescer --------------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_coalescer_runs_fn_once_for_50_concurrent_callers() -> None:
    co: cache.Coalescer[str, str] = cache.Coalescer()
    release = threading.Event()
    runs = 0

    def fetch() -> str:
        nonlocal runs
        runs += 1
        assert release.wait(WAIT)
        return "sha256:abc"

    results: list[str] = []
    lock = threading.Lock()

    def caller() -> None:
        value = co.do("nginx:latest", fetch, timeout=WAIT)
        with lock:
            results.append(value)

    threads = start([threading.Thread(target=caller) for _ in range(50)])
    wait_until(lambda: co.stats.calls == 50)  # all 50 have joined before the leader finishes
    release.set()
    join(threads)
    assert runs == 1
    assert results == ["sha256:abc"] * 50
    assert co.stats == cache.CoalescerStats(calls=50, shared=49, timeouts=0, in_flight=0)


def test_coalescer_shares_the_leaders_exception_with_every_waiter() -> None:
    co: cache.Coalescer[str, str] = cache.Coalescer()
    release = threading.Event()
    raised = Boom("registry down")
    runs = 0

    def fetch() -> str:
        nonlocal runs
        runs += 1
        assert release.wait(WAIT)
        raise raised

    errors: list[BaseException] = []
    lock = threading.Lock()

    def caller() -> None:
        try:
            co.do("k", fetch, timeout=WAIT)
        except Exception as exc:
            with lock:
                errors.append(exc)

    threads = start([threading.Thread(target=caller) for _ in range(10)])
    wait_until(lambda: co.stats.calls == 10)
    release.set()
    join(threads)
    assert runs == 1
    assert len(errors) == 10
    assert all(type(e) is Boom and e is raised for e in errors)
    assert co.stats.in_flight == 0


def test_coalescer_waiters_get_runtime_error_when_leader_is_aborted() -> None:
    """A BaseException (not an Exception) in the leader is not re-raised in other threads."""
    co: cache.Coalescer[str, str] = cache.Coalescer()
    release = threading.Event()
    waiter_error: list[BaseException] = []

    def fetch() -> str:
        assert release.wait(WAIT)
        raise KeyboardInterrupt

    def leader() -> None:
        with pytest.raises(KeyboardInterrupt):
            co.do("k", fetch)

    def waiter() -> None:
        try:
            co.do("k", fetch, timeout=WAIT)
        except BaseException as exc:
            waiter_error.append(exc)

    threads = start([threading.Thread(target=leader)])
    wait_until(lambda: co.stats.in_flight == 1)
    threads += start([threading.Thread(target=waiter)])
    wait_until(lambda: co.stats.calls == 2)
    release.set()
    join(threads)
    assert len(waiter_error) == 1
    assert type(waiter_error[0]) is RuntimeError
    assert isinstance(waiter_error[0].__cause__, KeyboardInterrupt)


def test_coalescer_runs_different_keys_independently() -> None:
    """Two keys in flight at once: each fn waits for the other to start, so they overlap."""
    co: cache.Coalescer[str, str] = cache.Coalescer()
    barrier = threading.Barrier(2, timeout=WAIT)
    results: dict[str, str] = {}

    def make(key: str) -> Callable[[], str]:
        def fetch() -> str:
            barrier.wait()  # would break (timeout) if the keys were serialized
            return key.upper()

        return fetch

    def caller(key: str) -> None:
        results[key] = co.do(key, make(key), timeout=WAIT)

    run_threads([threading.Thread(target=caller, args=(k,)) for k in ("a", "b")])
    assert results == {"a": "A", "b": "B"}
    assert co.stats.shared == 0


def test_coalescer_waiter_times_out_while_leader_continues() -> None:
    co: cache.Coalescer[str, str] = cache.Coalescer()
    release = threading.Event()
    leader_result: list[str] = []

    def fetch() -> str:
        assert release.wait(WAIT)
        return "done"

    threads = start([threading.Thread(target=lambda: leader_result.append(co.do("k", fetch)))])
    wait_until(lambda: co.stats.in_flight == 1)
    with pytest.raises(TimeoutError, match="'k'"):
        co.do("k", fetch, timeout=0.01)
    assert co.stats.timeouts == 1
    assert co.stats.in_flight == 1  # the leader is still at it
    release.set()
    join(threads)
    assert leader_result == ["done"]
    assert co.stats.in_flight == 0


@pytest.mark.parametrize("outcome", ["value", "error"])
def test_coalescer_forgets_key_after_completion(outcome: str) -> None:
    """A later call runs fn again: the coalescer shares in-flight work, it does not cache."""
    co: cache.Coalescer[str, int] = cache.Coalescer()
    runs = 0

    def fetch() -> int:
        nonlocal runs
        runs += 1
        if outcome == "error":
            raise Boom(str(runs))
        return runs

    for expected in (1, 2):
        if outcome == "value":
            assert co.do("k", fetch) == expected
        else:
            with pytest.raises(Boom, match=str(expected)):
                co.do("k", fetch)
        assert co.stats.in_flight == 0
    assert runs == 2
    assert co.stats.shared == 0


def test_coalescer_reentrant_call_for_same_key_raises_instead_of_deadlocking() -> None:
    co: cache.Coalescer[str, str] = cache.Coalescer()

    def outer() -> str:
        return co.do("k", lambda: "inner", timeout=1.0)

    with pytest.raises(RuntimeError, match="re-entrant"):
        co.do("k", outer)
    assert co.stats.in_flight == 0
    assert co.do("k", lambda: "again") == "again"


# --- concurrency stress -------------------------------------------------------------------------


def test_lru_concurrent_put_get_keeps_byte_bound() -> None:
    """~10k mixed operations from 8 threads: the bound always holds and the books balance."""
    max_bytes = 4_000
    c = lru(max_bytes)
    keys = [f"sha256:{i:04d}" for i in range(200)]
    sizes = {k: 1 + (i * 37) % 300 for i, k in enumerate(keys)}
    start = threading.Barrier(8, timeout=WAIT)
    violations: list[str] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(1_250):
            key = rng.choice(keys)
            if rng.random() < 0.5:
                c.put(key, b"x" * sizes[key])
            else:
                value = c.get(key)
                if value is not None and len(value) != sizes[key]:
                    violations.append(f"{key}: wrong value")
            if c.bytes > max_bytes:
                violations.append("over the bound")

    run_threads([threading.Thread(target=worker, args=(s,)) for s in range(8)])
    assert violations == []
    present = [k for k in keys if c.get(k) is not None]
    assert len(present) == len(c)
    assert sum(sizes[k] for k in present) == c.bytes <= max_bytes
    stats = c.stats
    assert stats.hits + stats.misses >= 5_000
    assert stats.evictions > 0


def test_ttl_concurrent_put_get_keeps_entry_bound() -> None:
    clock = FakeClock()
    c: cache.TTLCache[int, int] = cache.TTLCache(ttl=50.0, max_entries=64, clock=clock)
    start = threading.Barrier(8, timeout=WAIT)
    violations: list[str] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for i in range(1_250):
            key = rng.randrange(500)
            if rng.random() < 0.5:
                c.put(key, key * 2, ttl=rng.choice([None, 1.0, 10.0]))
            else:
                value = c.get(key)
                if value is not None and value != key * 2:
                    violations.append(f"{key}: wrong value")
            if seed == 0 and i % 100 == 0:
                clock.advance(3.0)  # float assignment: atomic under the GIL
            if len(c) > 64:
                violations.append("over the bound")

    run_threads([threading.Thread(target=worker, args=(s,)) for s in range(8)])
    assert violations == []
    assert len(c) <= 64


def test_ttl_concurrent_put_get_keeps_byte_bound() -> None:
    """8 threads putting, getting, expiring: the byte bound always holds and the books balance."""
    clock = FakeClock()
    max_bytes = 3_000
    c: cache.TTLCache[int, bytes] = cache.TTLCache(
        ttl=50.0, max_entries=1_000, max_bytes=max_bytes, sizeof=len, clock=clock
    )
    start = threading.Barrier(8, timeout=WAIT)
    violations: list[str] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for i in range(1_250):
            key = rng.randrange(300)
            if rng.random() < 0.5:
                c.put(key, b"x" * (1 + key % 200), ttl=rng.choice([None, 1.0, 10.0]))
            elif rng.random() < 0.1:
                c.invalidate(key)
            else:
                value = c.get(key)
                if value is not None and len(value) != 1 + key % 200:
                    violations.append(f"{key}: wrong value")
            if seed == 0 and i % 100 == 0:
                clock.advance(3.0)
            if c.bytes > max_bytes:
                violations.append("over the bound")

    run_threads([threading.Thread(target=worker, args=(s,)) for s in range(8)])
    assert violations == []
    c.purge()
    live = [k for k in range(300) if c.get(k) is not None]
    assert sum(1 + k % 200 for k in live) == c.bytes <= max_bytes
    assert c.stats.evictions > 0


def test_coalescer_concurrent_keys_stress() -> None:
    """Many threads over a few keys: every caller gets its key's value, nothing leaks."""
    co: cache.Coalescer[int, int] = cache.Coalescer()
    start = threading.Barrier(16, timeout=WAIT)
    wrong: list[int] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        start.wait()
        for _ in range(200):
            key = rng.randrange(4)
            if co.do(key, lambda k=key: k * 10, timeout=WAIT) != key * 10:
                wrong.append(key)

    run_threads([threading.Thread(target=worker, args=(s,)) for s in range(16)])
    assert wrong == []
    stats = co.stats
    assert (stats.calls, stats.in_flight, stats.timeouts) == (3_200, 0, 0)


def test_ttl_get_many_is_get_for_each_key() -> None:
    clock = FakeClock()
    many: cache.TTLCache[str, str] = cache.TTLCache(ttl=10.0, max_entries=3, clock=clock)
    one: cache.TTLCache[str, str] = cache.TTLCache(ttl=10.0, max_entries=3, clock=clock)
    for c in (many, one):
        c.put("a", "A")
        c.put("b", "B", ttl=5.0)
        c.put("c", "C")
    clock.advance(6.0)  # "b" has expired
    keys = ["c", "b", "x", "a"]
    assert many.get_many(keys) == [one.get(k) for k in keys] == ["C", None, None, "A"]
    assert many.stats == one.stats  # hits, misses, the expired entry purged
    assert many.stats.hits == 2 and many.stats.misses == 2 and many.stats.entries == 2
    for c in (many, one):
        c.put("d", "D")
        c.put("e", "E")  # evicts the least recently used: "c" (read before "a")
    assert many.get_many(["a", "c", "d", "e"]) == ["A", None, "D", "E"]
    assert one.get("c") is None


# --- Coalescer.share: a shared call outlives its starter ----------------------------------------


class SteppedClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("starter", "waiter", "after", "fails", "outcome", "runs"),
    [
        # the starter's deadline passed before the call failed: the waiter runs it again
        (0.25, 10.0, 0.3, True, "again", 2),
        # the call failed while the starter still had time: a real failure, shared
        (5.0, 10.0, 0.3, True, "boom", 1),
        # the answer came after the starter's deadline: every waiter still gets it
        (0.25, 10.0, 0.6, False, "first", 1),
        # the waiter's own deadline has passed too: nobody runs it again
        (0.25, 0.2, 0.3, True, "boom", 1),
    ],
)
def test_coalescer_share_hands_a_call_over_only_when_its_starter_ran_out_of_time(
    starter: float, waiter: float, after: float, fails: bool, outcome: str, runs: int
) -> None:
    clock = SteppedClock()
    co: cache.Coalescer[str, str] = cache.Coalescer()
    seen: list[float] = []

    def fetch(deadline: Deadline) -> str:
        seen.append(deadline.remaining())
        if len(seen) > 1:
            return "again"
        wait_until(lambda: co.stats.calls == 2)  # the waiter has joined
        seen.append(deadline.remaining())
        clock.now += after
        if fails:
            raise Boom("cannot reach registry: timed out")
        return "first"

    leader_outcome: list[str] = []

    def lead() -> None:
        try:
            leader_outcome.append(co.share("k", fetch, deadline=Deadline(starter, clock=clock)))
        except Boom:
            leader_outcome.append("boom")

    threads = start([threading.Thread(target=lead)])
    wait_until(lambda: co.stats.in_flight == 1)
    try:
        got = co.share("k", fetch, deadline=Deadline(waiter, clock=clock))
    except Boom:
        got = "boom"
    join(threads)
    assert got == outcome
    assert leader_outcome == ["boom" if fails else "first"]
    assert len(seen) - 1 == runs  # the first run notes the time twice
    # the call ran under the latest deadline once the waiter joined
    assert seen[0] == starter
    assert seen[1] == max(starter, waiter)
    assert co.stats.handovers == runs - 1


def test_shared_deadline_only_grows_and_leaves_the_first_deadline_alone() -> None:
    clock = SteppedClock()
    first = Deadline(1.0, clock=clock)
    shared = SharedDeadline(first)
    shared.join(Deadline(5.0, clock=clock))
    shared.join(Deadline(2.0, clock=clock))
    assert (shared.remaining(), first.remaining()) == (5.0, 1.0)
    clock.now += 4.0
    assert (shared.remaining(), first.expired) == (1.0, True)


# --- ByteMemo ---------------------------------------------------------------------------------


class Owned:
    """Program state an entry refers to but does not own (a rule)."""

    def __init__(self) -> None:
        self.payload = "x" * 100_000


def test_byte_memo_is_emptied_before_it_would_pass_its_budget() -> None:
    memo: cache.ByteMemo[int, str] = cache.ByteMemo(10_000)
    sizes = [cache.entry_size(i, "v" * 1000) for i in range(3)]
    for i in range(3):
        assert memo.put(i, "v" * 1000) is True
    assert memo.bytes == sum(sizes)
    assert [memo.get(i) for i in range(3)] == ["v" * 1000] * 3
    for i in range(3, 20):
        memo.put(i, "v" * 1000)
        assert memo.bytes <= 10_000
    assert 0 < len(memo) < 20
    assert memo.get(19) == "v" * 1000
    # replacing an entry charges only the new value
    before = memo.bytes
    memo.put(19, "v" * 1000)
    assert memo.bytes == before
    # a value over the whole budget is not kept, and does not leave the old one behind
    assert memo.put(19, "v" * 20_000) is False
    assert memo.get(19) is None
    memo.clear()
    assert (len(memo), memo.bytes) == (0, 0)


def test_byte_memo_does_not_charge_opaque_objects() -> None:
    rule = Owned()
    charged: cache.ByteMemo[str, tuple[Owned, str]] = cache.ByteMemo(1 << 20)
    opaque: cache.ByteMemo[str, tuple[Owned, str]] = cache.ByteMemo(1 << 20, opaque=(Owned,))
    charged.put("k", (rule, "small"))
    opaque.put("k", (rule, "small"))
    assert charged.bytes > 100_000
    assert opaque.bytes < 1_000
