"""The shared tier against a real redis-server: round trips, poisoned and hostile entries
(misses, dropped, never an exception), Redis down or hung (bounded, the breaker opens and
closes), leases between replicas (one fetches, the others wait; a dead holder's lease
expires), and the password never echoed."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from policy.deadline import Deadline
from policy.sharedcache import MAGIC, Missing, SharedCache, Tag, connect, encode
from tests.support.redisserver import RunningRedis, start_redis

BODY = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}'
DIGEST = "sha256:" + hashlib.sha256(BODY).hexdigest()
OCI = "application/vnd.oci.image.manifest.v1+json"
REG, REPO = "registry.example", "team/app"


def tier(running: RunningRedis, **kwargs: object) -> SharedCache:
    client = connect(
        running.url,
        password=running.password,
        connect_timeout=kwargs.pop("connect_timeout", 0.5),  # type: ignore[arg-type]
        command_timeout=kwargs.pop("command_timeout", 0.5),  # type: ignore[arg-type]
    )
    return SharedCache(client, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def shared(redis_server: RunningRedis) -> Iterator[SharedCache]:
    cache = tier(redis_server)
    yield cache
    cache.close()


def manifest_key(prefix: str = "image-policy:") -> str:
    return f"{prefix}manifest:{REG}/{REPO}@{DIGEST}"


def test_content_round_trip_and_counts(shared: SharedCache) -> None:
    assert shared.get_manifest(REG, REPO, DIGEST) is None
    shared.put_manifest(REG, REPO, DIGEST, BODY, OCI)
    assert shared.get_manifest(REG, REPO, DIGEST) == (BODY, OCI)
    shared.put_blob(REG, REPO, DIGEST, BODY)
    assert shared.get_blob(REG, REPO, DIGEST) == BODY
    assert shared.get_blob(REG, "other/repo", DIGEST) is None  # keyed by repository too
    stats = shared.stats()
    assert (stats.hits, stats.misses, stats.errors, stats.invalid) == (2, 2, 0, 0)
    assert stats.calls == 6 and stats.buckets[-1] == 6  # a lookup or a write: one call each
    assert shared.state() == "ok"


def test_content_carries_its_ttl(shared: SharedCache, redis_server: RunningRedis) -> None:
    short = tier(redis_server, content_ttl=60.0)
    short.put_manifest(REG, REPO, DIGEST, BODY, OCI)
    with redis_server.client() as client:
        assert 55_000 < client.pttl(manifest_key()) <= 60_000


def test_poisoned_content_is_a_miss_and_dropped(
    shared: SharedCache, redis_server: RunningRedis
) -> None:
    shared.put_manifest(REG, REPO, DIGEST, BODY, OCI)
    with redis_server.client() as client:
        client.set(manifest_key(), encode("manifest", {"t": OCI}, BODY.replace(b"2", b"3")))
        assert shared.get_manifest(REG, REPO, DIGEST) is None
        assert client.exists(manifest_key()) == 0
    assert shared.stats().invalid == 1


HOSTILE: list[tuple[str, object]] = [
    ("empty header", MAGIC + b"\n" + BODY),
    ("truncated", encode("manifest", {"t": OCI}, BODY)[:20]),
    ("truncated body", encode("manifest", {"t": OCI}, BODY)[:-3]),
    ("bad JSON", MAGIC + b"{nope\n" + BODY),
    ("JSON list", MAGIC + b"[1,2]\n" + BODY),
    ("other kind", encode("blob", {}, BODY)),
    ("older format", b"ipc0 " + encode("manifest", {"t": OCI}, BODY)[5:]),
    ("no format", BODY),
    ("media type not a string", encode("manifest", {"t": 7}, BODY)),
    ("no newline in header", MAGIC + b"{" + b" " * 10_000),
    ("huge", encode("manifest", {"t": OCI}, BODY) + b" " * (5 * 1024 * 1024)),
]


@pytest.mark.parametrize(("why", "value"), HOSTILE, ids=[w for w, _ in HOSTILE])
def test_hostile_content_is_a_miss(
    shared: SharedCache, redis_server: RunningRedis, why: str, value: bytes
) -> None:
    with redis_server.client() as client:
        client.set(manifest_key(), value)
        assert shared.get_manifest(REG, REPO, DIGEST) is None
        assert client.exists(manifest_key()) == 0, why
    assert shared.stats().invalid == 1
    assert shared.state() == "ok"


@pytest.mark.parametrize("command", ["rpush", "sadd", "hset"])
def test_wrong_redis_type_is_a_miss(
    shared: SharedCache, redis_server: RunningRedis, command: str
) -> None:
    with redis_server.client() as client:
        if command == "hset":
            client.hset(manifest_key(), "a", "b")
            client.hset(f"image-policy:tag:{REG}/{REPO}:1.0", "a", "b")
        else:
            getattr(client, command)(manifest_key(), "x")
            getattr(client, command)(f"image-policy:tag:{REG}/{REPO}:1.0", "x")
        assert shared.get_manifest(REG, REPO, DIGEST) is None
        assert shared.get_tag(REG, REPO, "1.0") is None
        assert client.exists(manifest_key(), f"image-policy:tag:{REG}/{REPO}:1.0") == 0
    assert shared.state() == "ok"  # a refused command is no outage


def test_tag_round_trip_with_age_and_ttl(shared: SharedCache, redis_server: RunningRedis) -> None:
    shared.put_tag(REG, REPO, "1.0", DIGEST, OCI, len(BODY), ttl=120.0, age=30.0)
    found = shared.get_tag(REG, REPO, "1.0")
    assert isinstance(found, Tag)
    assert (found.digest, found.media_type, found.size) == (DIGEST, OCI, len(BODY))
    assert 30.0 <= found.age < 35.0
    with redis_server.client() as client:
        assert 115_000 < client.pttl(f"image-policy:tag:{REG}/{REPO}:1.0") <= 120_000


TAG_HOSTILE: list[tuple[str, dict[str, object]]] = [
    ("no digest", {"mediaType": OCI, "size": 1, "at": time.time()}),
    ("digest is a tag", {"digest": "latest", "mediaType": OCI, "size": 1, "at": time.time()}),
    ("size negative", {"digest": DIGEST, "mediaType": OCI, "size": -1, "at": time.time()}),
    ("size a string", {"digest": DIGEST, "mediaType": OCI, "size": "1", "at": time.time()}),
    ("at in the future", {"digest": DIGEST, "mediaType": OCI, "size": 1, "at": time.time() + 1e6}),
    ("at a string", {"digest": DIGEST, "mediaType": OCI, "size": 1, "at": "now"}),
    ("at a boolean", {"digest": DIGEST, "mediaType": OCI, "size": 1, "at": True}),
    ("media type huge", {"digest": DIGEST, "mediaType": "x" * 300, "size": 1, "at": time.time()}),
]


@pytest.mark.parametrize(("why", "header"), TAG_HOSTILE, ids=[w for w, _ in TAG_HOSTILE])
def test_hostile_tag_answers_are_misses(
    shared: SharedCache, redis_server: RunningRedis, why: str, header: dict[str, object]
) -> None:
    key = f"image-policy:tag:{REG}/{REPO}:1.0"
    with redis_server.client() as client:
        client.set(key, encode("tag", header))
        assert shared.get_tag(REG, REPO, "1.0") is None, why
        assert client.exists(key) == 0


def test_nan_time_is_a_miss(shared: SharedCache, redis_server: RunningRedis) -> None:
    key = f"image-policy:tag:{REG}/{REPO}:1.0"
    with redis_server.client() as client:
        client.set(key, MAGIC + b'{"k":"tag","digest":"' + DIGEST.encode() + b'","at":NaN}\n')
        assert shared.get_tag(REG, REPO, "1.0") is None


def test_missing_answers_round_trip(shared: SharedCache) -> None:
    shared.put_missing(REG, REPO, "gone", "manifest unknown", ttl=30.0)
    shared.put_missing(REG, REPO, DIGEST, "blob unknown", ttl=30.0)
    assert shared.get_tag(REG, REPO, "gone") == Missing("manifest unknown")
    assert shared.get_manifest(REG, REPO, DIGEST) == Missing("blob unknown")
    assert shared.get_manifest(REG, "other/repo", DIGEST) is None
    shared.put_manifest(REG, REPO, DIGEST, BODY, OCI)  # content wins over a stale 404
    assert shared.get_manifest(REG, REPO, DIGEST) == (BODY, OCI)


def test_tier_round_trip(shared: SharedCache, redis_server: RunningRedis) -> None:
    shared.put_tier("acme", "verified_publisher", "docker hub", ttl=60.0)
    assert shared.get_tier("acme") == ("verified_publisher", "docker hub")
    with redis_server.client() as client:
        client.set("image-policy:tier:evil", encode("tier", {"tier": 1, "source": "x"}))
    assert shared.get_tier("evil") is None


def test_key_prefix_separates_clusters(redis_server: RunningRedis) -> None:
    one, two = tier(redis_server, prefix="one:"), tier(redis_server, prefix="two:")
    one.put_manifest(REG, REPO, DIGEST, BODY, OCI)
    assert one.get_manifest(REG, REPO, DIGEST) == (BODY, OCI)
    assert two.get_manifest(REG, REPO, DIGEST) is None


def test_oversized_entries_are_not_written(redis_server: RunningRedis) -> None:
    small = tier(redis_server, max_entry_bytes=64)
    small.put_manifest(REG, REPO, DIGEST, BODY, OCI)
    with redis_server.client() as client:
        assert client.exists(manifest_key()) == 0


# --- Redis down, hung, back -------------------------------------------------------------------


def test_redis_down_is_a_quick_miss_then_the_breaker_opens_and_closes(
    redis_server: RunningRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="policy.sharedcache")
    now = [0.0]
    shared = tier(redis_server, break_after=3, break_for=5.0, clock=lambda: now[0])
    shared.put_manifest(REG, REPO, DIGEST, BODY, OCI)
    redis_server.kill()
    started = time.monotonic()
    for _ in range(5):
        assert shared.get_manifest(REG, REPO, DIGEST) is None
    assert time.monotonic() - started < 2.0
    stats = shared.stats()
    assert (stats.errors, stats.skipped) == (3, 2)
    assert shared.state() == "breaker-open"
    redis_server.start()  # same port, empty
    assert shared.get_manifest(REG, REPO, DIGEST) is None  # still skipped: breaker open
    assert shared.stats().skipped == 3
    now[0] += 5.0
    shared.put_manifest(REG, REPO, DIGEST, BODY, OCI)  # the probe, and it works
    assert shared.state() == "ok"
    assert shared.get_manifest(REG, REPO, DIGEST) == (BODY, OCI)
    lines = [r.getMessage() for r in caplog.records if r.name == "policy.sharedcache"]
    assert lines == [
        '{"event": "shared_cache", "state": "down", "error": "ConnectionError"}',
        '{"event": "shared_cache", "state": "ok"}',
    ]


def test_hung_redis_costs_at_most_the_command_timeout() -> None:
    """A server that accepts connections and never answers: each call gives up after the
    command timeout, and after `breakAfter` of them Redis is not even asked."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        port = hung.getsockname()[1]
        client = connect(f"redis://127.0.0.1:{port}/0", connect_timeout=0.05, command_timeout=0.05)
        shared = SharedCache(client, break_after=2, break_for=60.0)
        started = time.monotonic()
        for _ in range(10):
            assert shared.get_tag(REG, REPO, "1.0") is None
        elapsed = time.monotonic() - started
        assert elapsed < 1.0, elapsed  # 2 × 50 ms, then skipped
        assert shared.stats().errors == 2
        assert shared.state() == "breaker-open"


def test_password_is_required_and_never_echoed(tmp_path_factory: pytest.TempPathFactory) -> None:
    secret = "s3cret-redis-password-9c1e"
    running = start_redis(tmp_path_factory.mktemp("redis-auth"), password=secret)
    try:
        good = tier(running)
        good.put_manifest(REG, REPO, DIGEST, BODY, OCI)
        assert good.get_manifest(REG, REPO, DIGEST) == (BODY, OCI)
        wrong = SharedCache(connect(running.url, password="wrong", command_timeout=0.5))
        assert wrong.get_manifest(REG, REPO, DIGEST) is None
        assert wrong.state() == "down"
        anonymous = SharedCache(connect(running.url, command_timeout=0.5))
        assert anonymous.get_manifest(REG, REPO, DIGEST) is None  # NOAUTH: a failure
        assert anonymous.get_tag(REG, REPO, "1.0") is None
        assert anonymous.state() == "down" and anonymous.stats().errors == 2
        assert anonymous.stats().invalid == 0  # nothing dropped: the entries are fine
        assert secret not in repr(good.client) and secret not in repr(good.client.connection_pool)
    finally:
        running.stop()


# --- leases -------------------------------------------------------------------------------------


def test_one_replica_fetches_the_others_wait_for_its_answer(redis_server: RunningRedis) -> None:
    replicas = [tier(redis_server) for _ in range(3)]
    fetches: list[int] = []
    answers: list[bytes | None] = [None] * 3
    start = threading.Barrier(3)

    def resolve(i: int) -> None:
        shared = replicas[i]
        start.wait()
        with shared.holding():
            found = shared.turn(
                "blob:x", lambda: shared.get_blob(REG, REPO, DIGEST), Deadline(5), first=True
            )
            if found is None:
                fetches.append(i)
                time.sleep(0.2)  # the registry round trip
                shared.put_blob(REG, REPO, DIGEST, BODY)
                found = BODY
        answers[i] = found

    threads = [threading.Thread(target=resolve, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(fetches) == 1
    assert answers == [BODY] * 3
    assert sum(r.stats().shared for r in replicas) == 2
    with redis_server.client() as client:
        assert client.exists("image-policy:lease:blob:x") == 0  # released


def test_a_dead_holders_lease_expires_and_another_fetches(redis_server: RunningRedis) -> None:
    holder, waiter = tier(redis_server, lease=0.3), tier(redis_server, lease=0.3)
    holder.turn("blob:y", lambda: None, Deadline(5))  # taken outside holding(): never released
    started = time.monotonic()
    with waiter.holding():
        assert waiter.turn("blob:y", lambda: None, Deadline(5)) is None  # its turn now
    assert 0.2 < time.monotonic() - started < 2.0
    assert waiter.stats().leases == 1 and waiter.stats().waits == 1


def test_a_waiter_gives_up_at_its_deadline(redis_server: RunningRedis) -> None:
    holder, waiter = tier(redis_server, lease=30.0), tier(redis_server)
    holder.turn("blob:z", lambda: None, Deadline(5))
    started = time.monotonic()
    assert waiter.turn("blob:z", lambda: None, Deadline(0.3)) is None
    assert 0.25 < time.monotonic() - started < 1.5


def test_a_waiter_stops_waiting_when_redis_dies(redis_server: RunningRedis) -> None:
    holder, waiter = tier(redis_server, lease=30.0), tier(redis_server)
    holder.turn("blob:w", lambda: None, Deadline(5))
    threading.Timer(0.2, redis_server.kill).start()
    started = time.monotonic()
    assert waiter.turn("blob:w", lambda: None, Deadline(10)) is None
    assert time.monotonic() - started < 2.0


def test_a_released_lease_frees_only_its_own(redis_server: RunningRedis) -> None:
    """A holder whose lease expired and was taken by another must not release the other's."""
    one, two = tier(redis_server, lease=0.1), tier(redis_server, lease=30.0)
    with one.holding():
        one.turn("blob:v", lambda: None, Deadline(5))
        time.sleep(0.2)
        with two.holding():
            assert two.turn("blob:v", lambda: None, Deadline(5)) is None
        # two released its own; take it again and let one's holding() end
        two.turn("blob:v", lambda: None, Deadline(5))
    with redis_server.client() as client:
        assert client.exists("image-policy:lease:blob:v") == 1
