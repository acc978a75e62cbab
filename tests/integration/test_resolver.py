"""The resolver against the real registry: the fewest requests, caching, coalescing, deadlines.

Requests are counted by a proxy in front of the registry, so the numbers are what the registry
really saw.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import requests

from policy import loader
from policy.bulkhead import NEW, PROVEN
from policy.deadline import Deadline
from policy.facts import ImageFacts, Needs
from policy.reference import Reference
from policy.registry.client import RegistryClient
from policy.resolver import RegistryResolver
from policy.service import Item, Service
from tests.integration.conftest import SeededRegistry
from tests.support.clock import FakeClock
from tests.support.proxy import CountingProxy
from tests.support.relay import LatencyRelay

pytestmark = pytest.mark.registry

ALL = Needs(digest=True, platforms=True, manifest=True, config=True, select=("*",))
AMD64_MANIFEST = Needs(digest=True, manifest=True, select=("linux/amd64",))


@pytest.fixture
def resolver(counting_proxy: CountingProxy, clock: FakeClock) -> Iterator[RegistryResolver]:
    session = requests.Session()
    client = RegistryClient(session, authenticator=None)
    r = RegistryResolver(client, tag_ttl=300, clock=clock)
    yield r
    r.close()
    session.close()


def ref(
    proxy: CountingProxy, repository: str, tag: str | None = None, digest: str | None = None
) -> Reference:
    return Reference(proxy.host, repository, tag, digest)


def heads_gets(proxy: CountingProxy) -> tuple[int, int]:
    counts = proxy.counts()
    heads = sum(n for (method, _), n in counts.items() if method == "HEAD")
    gets = sum(n for (method, _), n in counts.items() if method == "GET")
    return heads, gets


def resolve(resolver: RegistryResolver, reference: Reference, needs: Needs):  # type: ignore[no-untyped-def]
    return resolver.resolve([(reference, needs)], deadline=Deadline(10))[0]


def test_index_reads_only_selected_platforms_and_no_config(
    resolver: RegistryResolver, counting_proxy: CountingProxy, registry: SeededRegistry
) -> None:
    facts = resolve(resolver, ref(counting_proxy, "oci/app", "multi"), AMD64_MANIFEST)
    assert facts.errors == {}
    assert facts.index is True
    assert facts.digest == registry.oci_index.digest
    amd = [p for p in facts.platforms if p.layers is not None]
    assert [p.platform for p in amd] == ["linux/amd64"]
    assert amd[0].layers == 2 and amd[0].size == 1000
    # GET the index by tag (a tag never seen: no HEAD), GET the one amd64 manifest; no config.
    counts = counting_proxy.counts()
    assert heads_gets(counting_proxy) == (0, 2)
    assert all("/blobs/" not in path for _, path in counts)
    # The attestation entries are listed as such, never fetched.
    assert sum(1 for p in facts.platforms if p.platform == "unknown/unknown") == 2


def test_config_needs_fetch_one_blob_per_selected_platform(
    resolver: RegistryResolver, counting_proxy: CountingProxy
) -> None:
    facts = resolve(resolver, ref(counting_proxy, "docker/app", "multi"), ALL)
    assert facts.errors == {}
    images = facts.image_platforms()
    assert sorted(p.platform for p in images) == ["linux/amd64", "linux/arm64/v8"]
    assert all(p.config_known and p.user == "1000" for p in images)
    blob_gets = [path for (m, path) in counting_proxy.counts() if "/blobs/" in path]
    assert len(blob_gets) == 2
    assert heads_gets(counting_proxy) == (0, 5)  # index by tag + 2 manifests + 2 configs


def test_second_resolve_inside_ttl_makes_no_request(
    resolver: RegistryResolver, counting_proxy: CountingProxy, clock: FakeClock
) -> None:
    reference = ref(counting_proxy, "docker/app", "single")
    first = resolve(resolver, reference, ALL)
    assert first.errors == {}
    assert heads_gets(counting_proxy) == (0, 2)  # manifest by tag, config
    counting_proxy.reset()
    clock.now += 299
    second = resolve(resolver, reference, ALL)
    assert second == first
    assert counting_proxy.total() == 0
    # After the TTL the tag is revalidated by one HEAD; the manifest and config are immutable.
    clock.now += 2
    third = resolve(resolver, reference, ALL)
    assert third.digest == first.digest
    assert heads_gets(counting_proxy) == (1, 0)


def test_pinned_reference_with_cached_manifest_makes_no_request(
    resolver: RegistryResolver, counting_proxy: CountingProxy, registry: SeededRegistry
) -> None:
    pinned = ref(counting_proxy, "oci/app", digest=registry.oci_image.digest)
    facts = resolve(resolver, pinned, AMD64_MANIFEST)
    assert facts.digest == registry.oci_image.digest
    assert heads_gets(counting_proxy) == (0, 1)  # no HEAD: the digest is already known
    counting_proxy.reset()
    assert resolve(resolver, pinned, AMD64_MANIFEST) == facts
    assert counting_proxy.total() == 0


def test_reference_only_needs_make_no_request(
    resolver: RegistryResolver, counting_proxy: CountingProxy
) -> None:
    facts = resolve(resolver, ref(counting_proxy, "oci/app", "multi"), Needs())
    assert facts.errors == {}
    assert facts.tier == "none"
    assert counting_proxy.total() == 0


def test_a_tag_asked_about_before_is_revalidated_by_head_even_long_after(
    resolver: RegistryResolver, counting_proxy: CountingProxy, clock: FakeClock
) -> None:
    reference = ref(counting_proxy, "oci/app", "single")
    first = resolve(resolver, reference, AMD64_MANIFEST)
    assert first.errors == {} and heads_gets(counting_proxy) == (0, 1)  # GET by tag
    for hours in (1, 20):  # stale, but remembered: HEAD, and the manifest is still cached
        counting_proxy.reset()
        clock.now += hours * 3600
        assert resolve(resolver, reference, AMD64_MANIFEST).digest == first.digest
        assert heads_gets(counting_proxy) == (1, 0)
    counting_proxy.reset()
    clock.now += 25 * 3600  # forgotten after TAG_MEMORY: read like a new tag
    assert resolve(resolver, reference, AMD64_MANIFEST).digest == first.digest
    assert heads_gets(counting_proxy) == (0, 1)


def test_digest_only_needs_one_head(
    resolver: RegistryResolver, counting_proxy: CountingProxy, registry: SeededRegistry
) -> None:
    facts = resolve(resolver, ref(counting_proxy, "docker/app", "multi"), Needs(digest=True))
    assert facts.digest == registry.docker_list.digest
    assert heads_gets(counting_proxy) == (1, 0)


def test_twenty_concurrent_resolves_make_one_get(
    resolver: RegistryResolver, counting_proxy: CountingProxy
) -> None:
    counting_proxy.latency = 0.05  # keep the first request in flight while the others arrive
    reference = ref(counting_proxy, "docker/app", "single")
    needs = Needs(digest=True, manifest=True, select=("*",))
    barrier = threading.Barrier(20)
    results = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait(timeout=5)
        facts = resolve(resolver, reference, needs)
        with lock:
            results.append(facts)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(results) == 20
    assert all(r == results[0] and r.errors == {} for r in results)
    assert heads_gets(counting_proxy) == (0, 1)  # one GET by tag, shared by all twenty


def test_missing_tag_is_negatively_cached(
    resolver: RegistryResolver, counting_proxy: CountingProxy, clock: FakeClock
) -> None:
    reference = ref(counting_proxy, "docker/app", "does-not-exist")
    facts = resolve(resolver, reference, AMD64_MANIFEST)
    assert "manifest unknown" in facts.errors["digest"] or "not found" in facts.errors["digest"]
    assert set(facts.errors) == {"digest", "platforms", "manifest", "config"}
    assert heads_gets(counting_proxy) == (0, 1)
    resolve(resolver, reference, AMD64_MANIFEST)
    assert heads_gets(counting_proxy) == (0, 1)
    clock.now += 31
    resolve(resolver, reference, AMD64_MANIFEST)
    assert heads_gets(counting_proxy) == (0, 2)


def test_images_of_one_decision_resolve_in_parallel(
    resolver: RegistryResolver, counting_proxy: CountingProxy
) -> None:
    counting_proxy.latency = 0.2
    refs = [
        ref(counting_proxy, "docker/app", "single"),
        ref(counting_proxy, "oci/app", "single"),
        ref(counting_proxy, "docker/app", "multi"),
        ref(counting_proxy, "oci/app", "multi"),
    ]
    started = time.monotonic()
    results = resolver.resolve([(r, Needs(digest=True)) for r in refs], deadline=Deadline(10))
    elapsed = time.monotonic() - started
    assert all(r.errors == {} and r.digest for r in results)
    # Four HEADs at 0.2 s each would take 0.8 s one after another.
    assert elapsed < 0.6, elapsed


@pytest.fixture
def silent_registry() -> Iterator[str]:
    """A registry host that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                accepted.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=2)
    for conn in accepted:
        conn.close()
    listener.close()


def test_a_registry_that_never_answers_is_cut_at_the_deadline(silent_registry: str) -> None:
    session = requests.Session()
    resolver = RegistryResolver(RegistryClient(session, authenticator=None, request_timeout=5))
    try:
        started = time.monotonic()
        facts = resolver.resolve(
            [(Reference(silent_registry, "x/y", "1"), AMD64_MANIFEST)], deadline=Deadline(0.5)
        )[0]
        elapsed = time.monotonic() - started
    finally:
        resolver.close()
        session.close()
    assert elapsed < 1.5, elapsed
    assert facts.digest is None
    assert facts.errors["digest"] == "registry unreachable"
    assert silent_registry in facts.details["digest"]


RULES = """
apiVersion: image-policy/v1
kind: RuleSet
rules:
  - id: only-corp
    match: {images: ["**"]}
    require: {registries: ["registry.corp.example"]}
  - id: few-layers
    match: {images: ["**"]}
    require: {maxLayers: 1}
"""


def test_a_refused_registry_is_never_contacted(
    resolver: RegistryResolver, counting_proxy: CountingProxy
) -> None:
    service = Service(loader.load_rules_text(RULES), resolver)
    [decision] = service.decide(
        [Item(ref(counting_proxy, "docker/app", "multi"))], deadline=Deadline(5)
    )
    assert not decision.allowed
    assert [v.rule for v in decision.violations] == ["only-corp"]
    assert counting_proxy.total() == 0


def test_service_judges_live_facts(
    resolver: RegistryResolver, counting_proxy: CountingProxy
) -> None:
    rules = RULES.replace('["registry.corp.example"]', f'["{counting_proxy.host}"]')
    service = Service(
        loader.load_rules_text(rules), resolver, now=lambda: datetime(2026, 1, 1, tzinfo=UTC)
    )
    [multi, single] = service.decide(
        [
            Item(ref(counting_proxy, "docker/app", "multi")),
            Item(ref(counting_proxy, "oci/app", "single")),
        ],
        deadline=Deadline(5),
    )
    assert [v.message for v in multi.violations] == [
        f"{counting_proxy.host}/docker/app:multi (linux/amd64) has 2 layers; "
        "rule few-layers allows at most 1",
        f"{counting_proxy.host}/docker/app:multi (linux/arm64/v8) has 2 layers; "
        "rule few-layers allows at most 1",
    ]
    assert [v.message for v in single.violations] == [
        f"{counting_proxy.host}/oci/app:single has 2 layers; rule few-layers allows at most 1"
    ]


def test_whole_answers_are_reused_only_while_their_tag_is_fresh(
    resolver: RegistryResolver, counting_proxy: CountingProxy, clock: FakeClock
) -> None:
    reference = ref(counting_proxy, "oci/app", "multi")
    resolve(resolver, reference, Needs(digest=True))  # the tag answer, learned at t0
    clock.now += 200
    first = resolve(resolver, reference, AMD64_MANIFEST)  # rests on that 200 s old answer
    clock.now += 50
    assert resolve(resolver, reference, AMD64_MANIFEST) is first  # reused, in this thread
    stats = resolver.stats()
    assert (stats.facts_hits, stats.facts_misses) == (1, 2)
    # At t0 + 301 the tag answer is stale, and so is every answer resting on it.
    clock.now += 51
    counting_proxy.reset()
    again = resolve(resolver, reference, AMD64_MANIFEST)
    assert again == first and again is not first
    assert heads_gets(counting_proxy) == (1, 0)


def test_failed_answers_are_not_reused(
    resolver: RegistryResolver, counting_proxy: CountingProxy
) -> None:
    reference = ref(counting_proxy, "docker/app", "nope")
    assert resolve(resolver, reference, Needs(digest=True)).errors
    assert resolve(resolver, reference, Needs(digest=True)).errors
    assert resolver.stats().facts_hits == 0


def test_a_new_tag_read_by_get_counts_one_tag_miss_and_no_manifest_miss(
    resolver: RegistryResolver, counting_proxy: CountingProxy
) -> None:
    facts = resolve(resolver, ref(counting_proxy, "oci/app", "single"), AMD64_MANIFEST)
    assert facts.errors == {}
    stats = resolver.stats()
    assert (stats.tag_misses, stats.tag_hits) == (1, 0)
    assert (stats.manifest_misses, stats.manifest_hits) == (0, 1)  # stored by the GET by tag
    assert heads_gets(counting_proxy) == (0, 1)


def test_a_coalesced_waiter_with_time_left_is_answered_from_the_registry(
    registry: SeededRegistry,
) -> None:
    """The registry answers in 0.6 s. A review with 0.25 s left starts the tag lookup; one with
    10 s left joins it 0.1 s later. The starter is denied at its deadline; the waiter is not
    given that failure (`cannot reach …: timed out` before): the lookup runs under the latest
    of their deadlines, so its retry has the waiter's time (were it begun too late for that,
    the waiter would ask again itself) and the waiter gets the digest."""
    with LatencyRelay(registry.url, latency=0.6) as relay, requests.Session() as session:
        resolver = RegistryResolver(RegistryClient(session, authenticator=None))
        image = Reference(relay.host, "oci/app", "single")
        digest_only = [(image, Needs(digest=True))]
        first: list[ImageFacts] = []
        try:
            starter = threading.Thread(
                target=lambda: first.extend(resolver.resolve(digest_only, deadline=Deadline(0.25)))
            )
            starter.start()
            time.sleep(0.1)
            started = time.monotonic()
            (waiter,) = resolver.resolve(digest_only, deadline=Deadline(10))
            took = time.monotonic() - started
            starter.join(timeout=5)
        finally:
            resolver.close()
        (starters,) = first
        assert set(starters.errors) == {"digest"}
        assert waiter.errors == {}
        assert waiter.digest == registry.oci_image.digest
        assert 0.6 < took < 0.6 + 0.15 + 0.5, took  # the rest of the first try, then one more
        head = ("HEAD", "/v2/oci/app/manifests/single")
        assert relay.counts() == {head: 2}


def test_a_registry_counts_as_answering_from_its_first_response(registry: SeededRegistry) -> None:
    """Any response the registry sends (not only a whole lookup done) makes it known: a new
    registry's queued lookups then start a round trip sooner (`bulkhead`: one lookup at a
    time until it answers)."""
    session = requests.Session()
    client = RegistryClient(session, authenticator=None)
    resolver = RegistryResolver(client)
    try:
        assert resolver._breakers.rank(registry.host) == NEW
        client.head_manifest(registry.host, "docker/app", "single", deadline=Deadline(5))
        assert resolver._breakers.rank(registry.host) == PROVEN
    finally:
        resolver.close()
        session.close()
