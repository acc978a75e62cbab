"""Signature answers on the shared tier (#18 with #17): replicas on one real redis-server in
front of the real registry. What one replica found for a digest — signatures, or none — the
next reads from Redis instead of asking the registry; each replica still verifies what it
read against its rules' keys; a hostile entry is a miss."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import requests

from policy import signing
from policy.deadline import Deadline
from policy.facts import ImageFacts, Needs
from policy.reference import Reference
from policy.registry.client import RegistryClient
from policy.resolver import RegistryResolver
from policy.sharedcache import SharedCache, connect, encode, encode_signatures
from tests.support import attest, cosign, images
from tests.support.proxy import CountingProxy
from tests.support.redisserver import RunningRedis
from tests.support.registry import SeededRegistry

pytestmark = pytest.mark.registry

KEY = cosign.keypair()
OTHER_KEY = cosign.keypair("ed25519")


def _needs(pair: cosign.KeyPair) -> Needs:
    return Needs(
        digest=True, signatures=True, keys=(signing.parse_public_key(pair.public_pem).der,)
    )


@pytest.fixture
def replicas(redis_server: RunningRedis) -> Iterator[list[RegistryResolver]]:
    """Three cold resolvers (own sessions and caches), sharing the test's Redis."""
    made = [
        RegistryResolver(
            RegistryClient(requests.Session(), authenticator=None),
            shared=SharedCache(connect(redis_server.url, connect_timeout=1.0, command_timeout=1.0)),
        )
        for _ in range(3)
    ]
    yield made
    for resolver in made:
        resolver.close()
        assert resolver.shared is not None
        resolver.shared.close()


_COUNTER = iter(range(10_000))


def _image(registry: SeededRegistry, repo: str) -> str:
    n = next(_COUNTER)
    return images.push_image(
        registry.url,
        repo,
        "1",
        layers=[images.blob_bytes(f"{repo}/{n}", 300)],
        config=images.image_config("linux/amd64", labels={"n": str(n)}),
        media="oci",
    )


def _signatures(proxy: CountingProxy) -> int:
    """Requests for signature artifacts (the `.sig` tag, referrers, fallback tag, blobs)."""
    return sum(
        n
        for (_, path), n in proxy.counts().items()
        if "/manifests/sha256-" in path or "/referrers/" in path or "/blobs/" in path
    )


def _resolve(resolver: RegistryResolver, ref: Reference, pair: cosign.KeyPair) -> ImageFacts:
    return resolver.resolve([(ref, _needs(pair))], deadline=Deadline(10))[0]


def test_signatures_one_replica_found_are_read_by_the_others_and_verified_by_each(
    registry: SeededRegistry, proxy: CountingProxy, replicas: list[RegistryResolver]
) -> None:
    digest = _image(registry, "shared/signed")
    cosign.sign_cosign(registry.url, "shared/signed", digest, KEY)
    ref = Reference(proxy.host, "shared/signed", None, digest)
    first = _resolve(replicas[0], ref, KEY)
    assert first.signatures is not None and any(s.verified for s in first.signatures)
    asked = _signatures(proxy)
    assert asked >= 3  # the .sig manifest, its payload, the referrers fallback tag
    second = _resolve(replicas[1], ref, KEY)
    assert second.signatures == first.signatures
    # the third replica's rules name another key: the same artifacts, verified against it
    third = _resolve(replicas[2], ref, OTHER_KEY)
    assert third.signatures is not None and not any(s.verified for s in third.signatures)
    assert _signatures(proxy) == asked  # the other replicas asked the registry nothing


def test_unsigned_is_shared_for_the_unsigned_ttl_only(
    registry: SeededRegistry, proxy: CountingProxy, replicas: list[RegistryResolver]
) -> None:
    digest = _image(registry, "shared/unsigned")
    ref = Reference(proxy.host, "shared/unsigned", None, digest)
    assert _resolve(replicas[0], ref, KEY).signatures == ()
    asked = _signatures(proxy)
    assert _resolve(replicas[1], ref, KEY).signatures == ()
    assert _signatures(proxy) == asked
    shared = replicas[0].shared
    assert shared is not None
    key = f"{shared.prefix}signatures:{proxy.host}/shared/unsigned@{digest}"
    ttl_ms = shared.client.pttl(key)
    assert 0 < ttl_ms <= 30_000  # "no signatures" lives as long as the resolver believes it


@pytest.mark.parametrize(
    "value",
    [
        b"garbage",
        encode("signatures", {"at": 0}, b"{not json"),
        encode("signatures", {"at": 0}, b'{"cosign": 1, "bundles": [], "refused": []}'),
        encode("signatures", {"at": 0}, b'{"cosign": [], "bundles": ["%%%"], "refused": []}'),
        encode("signatures", {"at": 0}, b"[" * 10_000 + b"]" * 10_000),
        encode("signatures", {"at": 1e18}, b'{"cosign": [], "bundles": [], "refused": []}'),
        encode("signatures", {"at": True}, b'{"cosign": [], "bundles": [], "refused": []}'),
    ],
    ids=["garbage", "not-json", "wrong-shape", "bad-base64", "deep", "future", "bool-time"],
)
def test_a_hostile_signature_entry_is_a_miss_dropped_and_refetched(
    registry: SeededRegistry,
    proxy: CountingProxy,
    replicas: list[RegistryResolver],
    value: bytes,
) -> None:
    digest = _image(registry, "shared/hostile")
    cosign.sign_cosign(registry.url, "shared/hostile", digest, KEY)
    shared = replicas[0].shared
    assert shared is not None
    key = f"{shared.prefix}signatures:{proxy.host}/shared/hostile@{digest}"
    shared.client.set(key, value)
    facts = _resolve(replicas[0], Reference(proxy.host, "shared/hostile", None, digest), KEY)
    assert facts.signatures is not None and any(s.verified for s in facts.signatures)
    assert _signatures(proxy) >= 3  # asked the registry
    stored = shared.client.get(key)
    assert stored is not None and stored != value  # replaced by the real answer


def test_an_injected_signature_verifies_only_if_its_signer_signed_that_digest(
    registry: SeededRegistry, proxy: CountingProxy, replicas: list[RegistryResolver]
) -> None:
    """Write access to Redis cannot forge a signature: an artifact signed by the rules' key
    for another digest, injected as this digest's, is read and refused."""
    digest = _image(registry, "shared/forged")
    other = _image(registry, "shared/forged")
    body = cosign.payload(other, f"{proxy.host}/shared/forged")
    annotations = {"dev.cosignproject.cosign/signature": base64.b64encode(KEY.sign(body)).decode()}
    shared = replicas[0].shared
    assert shared is not None
    key = f"{shared.prefix}signatures:{proxy.host}/shared/forged@{digest}"
    shared.client.set(key, encode_signatures([(body, annotations)], [], [], at=0.0))
    facts = _resolve(replicas[0], Reference(proxy.host, "shared/forged", None, digest), KEY)
    assert facts.signatures is not None
    assert not any(s.verified for s in facts.signatures)
    assert _signatures(proxy) == 0  # read from Redis, judged, refused: never trusted as found


def test_attestations_one_replica_found_are_read_by_the_others(
    registry: SeededRegistry, proxy: CountingProxy, replicas: list[RegistryResolver]
) -> None:
    """cosign's `.att` attestations of a digest: the first replica asks the registry (`.att`,
    referrers fallback, its envelope), the next ones read the answer from Redis."""
    digest = _image(registry, "shared/attested")
    _, statement = attest.provenance_v02(digest)
    cosign.push_attestations(
        registry.url, "shared/attested", digest, [(cosign.envelope(KEY, statement), {})]
    )
    der = signing.parse_public_key(KEY.public_pem).der
    needs = Needs(digest=True, manifest=True, attestations=True, select=("*",), keys=(der,))
    ref = Reference(proxy.host, "shared/attested", None, digest)
    [first] = replicas[0].resolve([(ref, needs)], deadline=Deadline(10))
    [platform] = first.platforms
    assert platform.attestations and platform.attestations[0].predicate_type.startswith("https")
    asked = _signatures(proxy)
    assert asked >= 3
    [second] = replicas[1].resolve([(ref, needs)], deadline=Deadline(10))
    assert second.platforms == first.platforms
    assert _signatures(proxy) == asked
