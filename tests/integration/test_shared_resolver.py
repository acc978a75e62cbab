"""Resolvers as replicas sharing one real redis-server, in front of the real registry behind
token auth and counting relays: a never-seen image costs the cluster one token, one manifest
and one config request; a poisoned manifest is detected and refetched; a 404 is shared; Redis
down costs only the sharing."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from policy import failures
from policy import resolver as resolver_mod
from policy.deadline import Deadline
from policy.egress import parse_entry
from policy.facts import ImageFacts, Needs
from policy.reference import parse
from policy.registry.client import RequestEvent
from policy.registry.session import new_session
from policy.resolver import RegistryResolver
from policy.settings import Settings, SharedCacheSettings
from policy.sharedcache import encode
from tests.support.redisserver import RunningRedis
from tests.support.registry import require_registry
from tests.support.tokenregistry import TokenRegistry, push, token_registry

pytestmark = pytest.mark.registry

TAGS = [f"v{i}" for i in range(9)]
NEEDS = Needs(manifest=True, config=True, platforms=True)


@pytest.fixture(scope="module")
def cluster_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    require_registry()

    def seed(url: str) -> None:
        for tag in TAGS:
            push(url, "shared/app", tag)

    with token_registry(tmp_path_factory.mktemp("shared-resolver"), seed) as running:
        yield running


Replicas = Callable[..., list[RegistryResolver]]
EVENTS: list[RequestEvent] = []


def served(cluster_registry: TokenRegistry) -> Counter[str]:
    """The registry requests since the last reset, without the 401 challenges (one per
    replica that talked to the registry, told apart by the replicas' own request events),
    with `challenges` counting those."""
    counts = cluster_registry.counts()
    challenges = sum(1 for e in EVENTS if e.status == 401)
    counts["GET manifest"] -= challenges
    counts["challenges"] = challenges
    return counts


@pytest.fixture
def replicas(
    cluster_registry: TokenRegistry, redis_server: RunningRedis, tmp_path: Path
) -> Iterator[Replicas]:
    """`replicas(n)`: n cold resolvers (each its own session, tokens and caches: one per
    replica) wired by `resolver.build` with `cache.shared` on the test's Redis."""
    made: list[RegistryResolver] = []
    config = tmp_path / "docker-config.json"
    config.write_text(json.dumps({"auths": {}}))
    cluster_registry.reset()
    EVENTS.clear()

    def make(n: int, **shared: object) -> list[RegistryResolver]:
        options: dict[str, object] = {"connect_timeout": 1.0, "command_timeout": 1.0}
        settings = Settings(
            docker_config=str(config),
            egress_allow=(parse_entry("127.0.0.0/8"),),
            shared_cache=SharedCacheSettings(url=redis_server.url, **(options | shared)),  # type: ignore[arg-type]
        )
        out = [
            resolver_mod.build(settings, session=new_session(), on_request=EVENTS.append)
            for _ in range(n)
        ]
        made.extend(out)
        return out

    yield make
    for resolver in made:
        resolver.close()
        if resolver.shared is not None:
            resolver.shared.close()


def resolve(resolver: RegistryResolver, image: str, seconds: float = 10.0) -> ImageFacts:
    [facts] = resolver.resolve([(parse(image), NEEDS)], deadline=Deadline(seconds))
    return facts


def test_a_new_image_costs_the_cluster_one_token_one_manifest_one_config(
    cluster_registry: TokenRegistry, replicas: Replicas
) -> None:
    cluster = replicas(3)
    image = f"{cluster_registry.host}/shared/app:v0"
    results: list[ImageFacts] = []
    barrier = threading.Barrier(30)

    def review(i: int) -> None:
        barrier.wait()
        results.append(resolve(cluster[i % 3], image))

    threads = [threading.Thread(target=review, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 30
    assert all(not f.errors for f in results), [f.details for f in results if f.errors]
    assert len({f.digest for f in results}) == 1
    assert {f.platforms[0].layers for f in results} == {2}
    assert {f.platforms[0].user for f in results} == {"1000"}
    counts = served(cluster_registry)
    assert counts["token"] == 1, counts
    assert counts["GET manifest"] == 1, counts
    assert counts["GET blob"] == 1, counts
    assert counts["HEAD manifest"] == 0, counts
    assert counts["challenges"] == 1, counts  # one replica talked to the registry
    waited = sum(r.shared.stats().shared for r in cluster if r.shared is not None)
    assert waited >= 1  # at least one replica waited for another's answer


def test_later_replicas_ask_the_registry_nothing(
    cluster_registry: TokenRegistry, replicas: Replicas
) -> None:
    first, second, third = replicas(3)
    image = f"{cluster_registry.host}/shared/app:v1"
    expected = resolve(first, image)
    assert not expected.errors
    cluster_registry.reset()
    assert resolve(second, image) == expected
    assert resolve(third, image) == expected
    assert sum(cluster_registry.counts().values()) == 0


def test_a_poisoned_manifest_is_detected_dropped_and_refetched(
    cluster_registry: TokenRegistry, replicas: Replicas, redis_server: RunningRedis
) -> None:
    first, second = replicas(2)
    image = f"{cluster_registry.host}/shared/app:v2"
    expected = resolve(first, image)
    assert expected.digest is not None
    key = f"image-policy:manifest:{cluster_registry.host}/shared/app@{expected.digest}"
    with redis_server.client() as client:
        good = client.get(key)
        assert good is not None
        header, _, body = good.partition(b"\n")
        lie = json.loads(body)
        lie["layers"] = lie["layers"][:1]  # one layer fewer: would pass a maxLayers rule
        client.set(key, header + b"\n" + json.dumps(lie).encode())
        cluster_registry.reset()
        EVENTS.clear()
        facts = resolve(second, image)
        assert facts == expected  # the lie was not believed
        counts = served(cluster_registry)
        assert counts["GET manifest"] == 1 and counts["token"] == 1, counts
        assert counts["GET blob"] == 0, counts  # the config was still good in Redis
        assert client.get(key) == good  # refetched and stored again
    assert second.shared is not None and second.shared.stats().invalid == 1


def test_a_404_met_by_one_replica_is_shared(
    cluster_registry: TokenRegistry, replicas: Replicas
) -> None:
    first, second = replicas(2)
    image = f"{cluster_registry.host}/shared/app:no-such-tag"
    assert resolve(first, image).errors["digest"] == failures.Cause.NOT_FOUND.value
    cluster_registry.reset()
    assert resolve(second, image).errors["digest"] == failures.Cause.NOT_FOUND.value
    assert sum(cluster_registry.counts().values()) == 0


def test_garbage_in_redis_is_a_miss_not_an_error(
    cluster_registry: TokenRegistry, replicas: Replicas, redis_server: RunningRedis
) -> None:
    (replica,) = replicas(1)
    prefix = f"image-policy:tag:{cluster_registry.host}/shared/app"
    with redis_server.client() as client:
        client.rpush(f"{prefix}:v3", "wrong type")
        client.set(f"{prefix}:v4", encode("tag", {"digest": "sha256:" + "0" * 64, "at": "x"}))
        client.set(f"{prefix}:v5", b"\x00" * 100)
    for tag in ("v3", "v4", "v5"):
        facts = resolve(replica, f"{cluster_registry.host}/shared/app:{tag}")
        assert not facts.errors, facts.details
        assert facts.platforms[0].layers == 2
    assert replica.shared is not None and replica.shared.stats().invalid == 3


def test_redis_down_costs_the_sharing_only(
    cluster_registry: TokenRegistry, replicas: Replicas, redis_server: RunningRedis
) -> None:
    first, second = replicas(2)
    redis_server.kill()
    deadline = 3.0
    for replica in (first, second):
        facts = resolve(replica, f"{cluster_registry.host}/shared/app:v6", seconds=deadline)
        assert not facts.errors, facts.details
    counts = served(cluster_registry)
    assert counts["GET manifest"] == 2 and counts["token"] == 2, counts  # each on its own
    assert first.shared is not None and first.shared.state() in {"down", "breaker-open"}
    redis_server.start()
    third, fourth = replicas(2)
    cluster_registry.reset()
    EVENTS.clear()
    resolve(third, f"{cluster_registry.host}/shared/app:v7")
    resolve(fourth, f"{cluster_registry.host}/shared/app:v7")
    counts = served(cluster_registry)
    assert counts["GET manifest"] == 1 and counts["token"] == 1, counts  # sharing again


def test_a_dead_replicas_lease_expires_and_another_fetches(
    cluster_registry: TokenRegistry, replicas: Replicas, redis_server: RunningRedis
) -> None:
    """A lease left by a replica that died mid-fetch (taken, never released): the next replica
    waits for it to expire, then fetches itself, well inside its deadline."""
    (replica,) = replicas(1, lease=1.0)
    with redis_server.client() as client:
        lease = f"image-policy:lease:tag:{cluster_registry.host}/shared/app:v8"
        assert client.set(lease, "dead-replica", nx=True, px=1000)
    started = time.monotonic()
    facts = resolve(replica, f"{cluster_registry.host}/shared/app:v8", seconds=5.0)
    elapsed = time.monotonic() - started
    assert not facts.errors, facts.details
    assert 0.8 < elapsed < 4.0, elapsed
    counts = served(cluster_registry)
    assert counts["GET manifest"] == 1 and counts["GET blob"] == 1, counts
    assert replica.shared is not None and replica.shared.stats().waits == 1


def test_settings_without_shared_cache_build_no_tier(tmp_path: Path) -> None:
    config = tmp_path / "docker-config.json"
    config.write_text(json.dumps({"auths": {}}))
    resolver = resolver_mod.build(Settings(docker_config=str(config)))
    try:
        assert resolver.shared is None
    finally:
        resolver.close()
