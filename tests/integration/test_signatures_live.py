"""Signatures against the real registry (distribution 2.8: no referrers API, so the referrers
fallback tag), and through a proxy that adds the referrers API: cosign's `.sig` layout and
Sigstore bundles as referrers, signed in the tests; every wrong signature denied with its
reason; requests counted; caching by digest; hostile artifacts bounded."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec

from policy import loader, signing
from policy.deadline import Deadline
from policy.facts import ImageFacts, Needs
from policy.reference import Reference
from policy.registry.client import RegistryClient
from policy.resolver import MAX_SIGNATURES, RegistryResolver
from policy.service import Item, Service
from tests.support import cosign, images
from tests.support.clock import FakeClock
from tests.support.proxy import CountingProxy
from tests.support.referrers import ReferrersProxy
from tests.support.registry import SeededRegistry
from tests.support.sigstore import GITHUB, SIGNED_AT, WORKFLOW, Sigstore

pytestmark = pytest.mark.registry

KEY = cosign.keypair()
OTHER_KEY = cosign.keypair("ed25519")
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def _der(pair: cosign.KeyPair) -> bytes:
    return signing.parse_public_key(pair.public_pem).der


SIGNED = Needs(digest=True, signatures=True, keys=(_der(KEY),))


def _resolver(clock: FakeClock) -> RegistryResolver:
    return RegistryResolver(
        RegistryClient(requests.Session(), authenticator=None), tag_ttl=300, clock=clock
    )


@pytest.fixture
def resolver(clock: FakeClock) -> Iterator[RegistryResolver]:
    r = _resolver(clock)
    yield r
    r.close()


_COUNTER = iter(range(10_000))


def _image(registry: SeededRegistry, repo: str, tag: str = "1") -> str:
    """A fresh single-platform image (its own layer), pushed; its digest."""
    n = next(_COUNTER)
    return images.push_image(
        registry.url,
        repo,
        tag,
        layers=[images.blob_bytes(f"{repo}/{tag}/{n}", 300)],
        config=images.image_config("linux/amd64", labels={"n": str(n)}),
        media="oci",
    )


def _resolve(resolver: RegistryResolver, ref: Reference, needs: Needs = SIGNED) -> ImageFacts:
    return resolver.resolve([(ref, needs)], deadline=Deadline(10))[0]


def _paths(proxy: CountingProxy) -> list[tuple[str, str]]:
    return sorted(
        (method, path.split("/", 3)[-1].split("/", 1)[-1])  # drop /v2/<repo…>/ noise below
        for (method, path), n in proxy.counts().items()
        for _ in range(n)
    )


def _kinds(proxy: CountingProxy, digest: str) -> list[str]:
    """Each request as what it asked for: `HEAD tag`, `GET .sig`, `GET referrers`, …"""
    hexa = digest.partition(":")[2]
    out = []
    for (method, path), n in proxy.counts().items():
        if path.endswith(f"/manifests/sha256-{hexa}.sig"):
            what = ".sig"
        elif path.endswith(f"/manifests/sha256-{hexa}"):
            what = "fallback tag"
        elif f"/referrers/{digest}" in path:
            what = "referrers"
        elif "/blobs/" in path:
            what = "blob"
        elif "/manifests/sha256:" in path:
            what = "manifest by digest"
        else:
            what = "tag"
        out += [f"{method} {what}"] * n
    return sorted(out)


# --- cosign's .sig tag --------------------------------------------------------------------------


def test_cosign_tag_signature_verifies_and_costs_the_protocol_minimum(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver
) -> None:
    digest = _image(registry, "signed/app")
    cosign.sign_cosign(registry.url, "signed/app", digest, KEY)
    facts = _resolve(resolver, Reference(proxy.host, "signed/app", "1"))
    assert facts.errors == {}
    assert facts.digest == digest
    assert facts.signatures is not None
    (found,) = facts.signatures
    assert (found.format, found.verified, found.key) == ("cosign", True, KEY.fingerprint)
    # The tag's digest, the .sig manifest and its one payload, the referrers API (404 on this
    # registry) and then its fallback tag (404: no referrers): five requests, none wasted.
    assert _kinds(proxy, digest) == [
        "GET .sig",
        "GET blob",
        "GET fallback tag",
        "GET referrers",
        "HEAD tag",
    ]


def test_signatures_are_cached_by_digest_and_reviews_cost_nothing_more(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver, clock: FakeClock
) -> None:
    digest = _image(registry, "signed/cached")
    cosign.sign_cosign(registry.url, "signed/cached", digest, KEY)
    ref = Reference(proxy.host, "signed/cached", "1")
    first = _resolve(resolver, ref)
    proxy.reset()
    assert _resolve(resolver, ref) is first
    assert proxy.total() == 0
    # Past the tag TTL the tag is asked again (one HEAD); the signatures stay cached by digest.
    clock.now += 301
    again = _resolve(resolver, ref)
    assert again.signatures == first.signatures
    assert _kinds(proxy, digest) == ["HEAD tag"]


def test_unsigned_is_believed_only_briefly(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver, clock: FakeClock
) -> None:
    digest = _image(registry, "signed/later")
    ref = Reference(proxy.host, "signed/later", "1")
    assert _resolve(resolver, ref).signatures == ()
    cosign.sign_cosign(registry.url, "signed/later", digest, KEY)
    proxy.reset()
    clock.now += 29
    assert _resolve(resolver, ref).signatures == ()  # "unsigned" still believed
    assert proxy.total() == 0
    clock.now += 2  # past UNSIGNED_TTL (30 s): asked again, now signed
    facts = _resolve(resolver, ref)
    assert facts.signatures is not None and [s.verified for s in facts.signatures] == [True]
    assert _kinds(proxy, digest) == [
        "GET .sig",
        "GET blob",
        "GET fallback tag",
        "GET referrers",
    ]  # the tag's answer (HEAD) is still fresh


def _service(resolver: RegistryResolver, rules: str) -> Service:
    return Service(loader.load_rules_text(rules, "rules.yaml"), resolver, now=lambda: NOW)


def _rules(*pairs: cosign.KeyPair, extra: str = "") -> str:
    keys = "".join(
        "\n          - |\n" + "".join(f"            {line}\n" for line in p.public_pem.splitlines())
        for p in pairs
    )
    return (
        "apiVersion: image-policy/v1\nkind: RuleSet\nmetadata: {name: s}\n"
        "defaults: {platforms: ['linux/amd64']}\n"
        "rules:\n  - id: signed\n    match: {images: ['**']}\n    require:\n"
        f"      signatures:\n        keys:{keys}{extra}"
    )


def _decide(service: Service, ref: Reference) -> tuple[bool, list[str]]:
    (decision,) = service.decide([Item(ref)], deadline=Deadline(10))
    return decision.allowed, [v.message for v in decision.violations]


def test_each_wrong_signature_is_denied_with_its_reason(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver
) -> None:
    service = _service(resolver, _rules(KEY))
    repo = "signed/wrong"
    good = _image(registry, repo, "good")
    cosign.sign_cosign(registry.url, repo, good, KEY)
    wrong_key = _image(registry, repo, "wrong-key")
    cosign.sign_cosign(registry.url, repo, wrong_key, OTHER_KEY)
    moved = _image(registry, repo, "moved")  # a valid signature of another digest, copied over
    body = cosign.payload(good, f"{registry.host}/{repo}")
    cosign.push_cosign(
        registry.url, repo, moved, [(body, base64.b64encode(KEY.sign(body)).decode())]
    )
    tampered = _image(registry, repo, "tampered")
    signed_body = cosign.payload(good, f"{registry.host}/{repo}")
    forged = cosign.payload(tampered, f"{registry.host}/{repo}")
    cosign.push_cosign(
        registry.url, repo, tampered, [(forged, base64.b64encode(KEY.sign(signed_body)).decode())]
    )
    unsigned = _image(registry, repo, "unsigned")
    short = signing.short(KEY.fingerprint)

    assert _decide(service, Reference(proxy.host, repo, "good")) == (True, [])
    allowed, (message,) = _decide(service, Reference(proxy.host, repo, "wrong-key"))
    assert not allowed
    assert message == (
        f"{proxy.host}/{repo}:wrong-key: 1 signature for {signing.short(wrong_key)}, none by a "
        "configured signer (cosign signature by unknown key, not verified: does not verify with a "
        f"configured key); rule signed requires a signature by the configured key {short}"
    )
    allowed, (message,) = _decide(service, Reference(proxy.host, repo, "moved"))
    assert not allowed
    assert (
        f"(cosign signature by key {short}, not verified: the payload names "
        f"{signing.short(good)}, not this image {signing.short(moved)})"
    ) in message
    allowed, (message,) = _decide(service, Reference(proxy.host, repo, "tampered"))
    assert not allowed
    assert "not verified: does not verify with a configured key" in message
    allowed, (message,) = _decide(service, Reference(proxy.host, repo, "unsigned"))
    assert not allowed
    assert message.startswith(
        f"{proxy.host}/{repo}:unsigned: no signatures found for {signing.short(unsigned)} "
        "(cosign .sig tag, OCI referrers)"
    )


def test_minimum_two_distinct_keys(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver
) -> None:
    service = _service(resolver, _rules(KEY, OTHER_KEY, extra="        minimum: 2\n"))
    repo = "signed/two"
    digest = _image(registry, repo)
    cosign.sign_cosign(registry.url, repo, digest, KEY)
    allowed, (message,) = _decide(service, Reference(proxy.host, repo, "1"))
    assert not allowed and "1 by a configured signer" in message
    # A second signer, as a referrer bundle in the fallback tag: both count.
    cosign.push_referrer(
        registry.url, repo, digest, cosign.dsse_bundle(OTHER_KEY, cosign.statement(digest))
    )
    fresh = _resolver(FakeClock())
    try:
        assert _decide(
            _service(fresh, _rules(KEY, OTHER_KEY, extra="        minimum: 2\n")),
            Reference(proxy.host, repo, "1"),
        ) == (True, [])
    finally:
        fresh.close()


# --- referrers: fallback tag (this registry) and the API (the proxy) -----------------------


def test_bundle_in_the_referrers_fallback_tag_verifies(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver
) -> None:
    repo = "signed/bundle"
    digest = _image(registry, repo)
    cosign.push_referrer(registry.url, repo, digest, cosign.message_bundle(KEY, digest))
    facts = _resolve(resolver, Reference(proxy.host, repo, "1"))
    assert facts.signatures is not None
    assert [(s.format, s.verified, s.key) for s in facts.signatures] == [
        ("bundle", True, KEY.fingerprint)
    ]
    # No .sig (404), referrers API missing (404) → fallback tag, the referrer, its bundle.
    assert _kinds(proxy, digest) == [
        "GET .sig",
        "GET blob",
        "GET fallback tag",
        "GET manifest by digest",
        "GET referrers",
        "HEAD tag",
    ]


def test_referrers_api_is_used_when_offered_and_no_fallback_request_is_made(
    registry: SeededRegistry, referrers_proxy: ReferrersProxy, resolver: RegistryResolver
) -> None:
    repo = "signed/api"
    digest = _image(registry, repo)
    _, descriptor = cosign.push_referrer(
        registry.url,
        repo,
        digest,
        cosign.dsse_bundle(KEY, cosign.statement(digest)),
        fallback_tag=False,
    )
    referrers_proxy.listed[(repo, digest)] = [descriptor]
    facts = _resolve(resolver, Reference(referrers_proxy.host, repo, "1"))
    assert facts.signatures is not None
    assert [(s.format, s.verified) for s in facts.signatures] == [("bundle", True)]
    assert _kinds(referrers_proxy, digest) == [
        "GET .sig",
        "GET blob",
        "GET manifest by digest",
        "GET referrers",
        "HEAD tag",
    ]


def test_index_signatures_must_cover_the_index_digest(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver
) -> None:
    """cosign signs the digest it is given, the index's by default: that is what is judged
    (and pinned); a signature of one platform's manifest does not sign the index."""
    repo = "signed/multi"
    amd = _image(registry, repo, "amd")
    index = images.push_index(registry.url, repo, "multi", [(amd, "linux/amd64")], media="oci")
    service = _service(resolver, _rules(KEY))
    cosign.sign_cosign(registry.url, repo, amd, KEY)
    allowed, (message,) = _decide(service, Reference(proxy.host, repo, "multi"))
    assert not allowed
    assert f"no signatures found for {signing.short(index.digest)}" in message
    cosign.sign_cosign(registry.url, repo, index.digest, KEY)
    fresh = _resolver(FakeClock())
    try:
        assert _decide(_service(fresh, _rules(KEY)), Reference(proxy.host, repo, "multi")) == (
            True,
            [],
        )
    finally:
        fresh.close()


# --- hostile registries -------------------------------------------------------------------------


def _manifest(
    registry: SeededRegistry, repo: str, tag: str, layers: list[dict[str, object]]
) -> None:
    config = images.push_blob(registry.url, repo, b"{}")
    body = images.canonical(
        {
            "schemaVersion": 2,
            "mediaType": images.OCI_MANIFEST,
            "config": {"mediaType": images.OCI_CONFIG, "digest": config, "size": 2},
            "layers": layers,
        }
    )
    images.put_manifest(registry.url, repo, tag, body, images.OCI_MANIFEST)


def test_thousands_of_signature_layers_are_read_only_up_to_the_cap(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver
) -> None:
    repo = "signed/many"
    digest = _image(registry, repo)
    junk = images.push_blob(registry.url, repo, b'{"critical": {}}')
    layer = {
        "mediaType": cosign.SIMPLE_SIGNING,
        "digest": junk,
        "size": 16,
        "annotations": {cosign.SIGNATURE_ANNOTATION: "AAAA"},
    }
    _manifest(registry, repo, digest.replace(":", "-") + ".sig", [layer] * 3000)
    facts = _resolve(resolver, Reference(proxy.host, repo, "1"))
    assert facts.errors == {}
    assert facts.signatures is not None and len(facts.signatures) == MAX_SIGNATURES
    assert {s.reason for s in facts.signatures} == {
        "the payload is not a cosign container image signature"
    }
    blobs = sum(n for (_, path), n in proxy.counts().items() if "/blobs/" in path)
    assert blobs == MAX_SIGNATURES


def test_oversized_payload_is_refused_unread(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver
) -> None:
    repo = "signed/huge"
    digest = _image(registry, repo)
    big = images.push_blob(registry.url, repo, b" " * (300 * 1024))
    _manifest(
        registry,
        repo,
        digest.replace(":", "-") + ".sig",
        [{"mediaType": cosign.SIMPLE_SIGNING, "digest": big, "size": 300 * 1024}],
    )
    facts = _resolve(resolver, Reference(proxy.host, repo, "1"))
    assert facts.signatures is not None
    assert [s.reason for s in facts.signatures] == ["payload of 307200 bytes, over the limit"]
    assert not any("/blobs/" in path for (_, path) in proxy.counts())


def test_payload_whose_size_lies_is_an_integrity_error_not_a_crash(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver
) -> None:
    repo = "signed/liar"
    digest = _image(registry, repo)
    body = cosign.payload(digest, "x")
    real = images.push_blob(registry.url, repo, body)
    _manifest(
        registry,
        repo,
        digest.replace(":", "-") + ".sig",
        [{"mediaType": cosign.SIMPLE_SIGNING, "digest": real, "size": 10}],
    )
    facts = _resolve(resolver, Reference(proxy.host, repo, "1"))
    # The blob is read under the payload cap and verified by its digest: its declared size is
    # not trusted; the signature then fails on its own (no annotation).
    assert facts.signatures is not None
    assert [s.reason for s in facts.signatures] == [
        "the layer has no dev.cosignproject.cosign/signature annotation"
    ]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            (200, "application/vnd.oci.image.index.v1+json", b"[" * 100_000),
            "malformed manifest: JSON nested 100000 levels deep, more than the limit of 64",
        ),
        (
            (
                200,
                "application/vnd.oci.image.index.v1+json",
                json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [
                            {
                                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                "digest": "sha256:" + "0" * 64,
                                "size": 1,
                            }
                        ]
                        * 5000,
                    }
                ).encode(),
            ),
            "index has 5000 entries, more than the limit of 1000",
        ),
    ],
)
def test_hostile_referrers_answers_fail_the_lookup_with_a_reason(
    registry: SeededRegistry,
    referrers_proxy: ReferrersProxy,
    resolver: RegistryResolver,
    override: tuple[int, str, bytes],
    expected: str,
) -> None:
    repo = "signed/hostile"
    digest = _image(registry, repo)
    referrers_proxy.overrides[(repo, digest)] = override
    facts = _resolve(resolver, Reference(referrers_proxy.host, repo, "1"))
    assert facts.signatures is None
    assert facts.errors["signatures"] == "registry answered something invalid"
    assert expected in facts.details["signatures"]


def test_many_bundle_referrers_are_read_only_up_to_the_cap(
    registry: SeededRegistry, referrers_proxy: ReferrersProxy, resolver: RegistryResolver
) -> None:
    repo = "signed/referrers"
    digest = _image(registry, repo)
    _, descriptor = cosign.push_referrer(
        registry.url,
        repo,
        digest,
        cosign.dsse_bundle(OTHER_KEY, cosign.statement(digest)),
        fallback_tag=False,
    )
    referrers_proxy.listed[(repo, digest)] = [descriptor] * 500
    facts = _resolve(resolver, Reference(referrers_proxy.host, repo, "1"))
    assert facts.signatures is not None and len(facts.signatures) == MAX_SIGNATURES
    assert {s.reason for s in facts.signatures} == {"does not verify with a configured key"}


# --- coalescing and the deadline ----------------------------------------------------------------


def test_concurrent_lookups_of_one_digest_share_one_fetch(
    registry: SeededRegistry, clock: FakeClock
) -> None:
    import threading

    repo = "signed/coalesced"
    digest = _image(registry, repo)
    cosign.sign_cosign(registry.url, repo, digest, KEY)
    with CountingProxy(registry.url, latency=0.2) as slow:
        ref = Reference(slow.host, repo, "1")
        # Ask for the digest first so that the eight lookups below start together at the
        # signatures (each with its own keys: different answers, the same artifacts).
        r = _resolver(clock)
        try:
            _resolve(r, ref, Needs(digest=True))
            slow.reset()
            keys = [(_der(cosign.keypair()), _der(KEY)) for _ in range(8)]
            results: list[ImageFacts] = []
            lock = threading.Lock()

            def one(pair: tuple[bytes, bytes]) -> None:
                facts = _resolve(
                    r, ref, Needs(digest=True, signatures=True, keys=tuple(sorted(pair)))
                )
                with lock:
                    results.append(facts)

            threads = [threading.Thread(target=one, args=(k,)) for k in keys]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            r.close()
        assert len(results) == 8
        assert all(
            f.signatures is not None and [s.key for s in f.signatures] == [KEY.fingerprint]
            for f in results
        )
        assert _kinds(slow, digest) == [
            "GET .sig",
            "GET blob",
            "GET fallback tag",
            "GET referrers",
        ]


def test_a_slow_registry_fails_the_signature_lookup_within_the_deadline(
    registry: SeededRegistry, clock: FakeClock
) -> None:
    import time

    repo = "signed/slow"
    digest = _image(registry, repo)
    with CountingProxy(registry.url, latency=1.0) as slow:
        r = _resolver(clock)
        try:
            pinned = Reference(slow.host, repo, digest=digest)
            started = time.monotonic()
            facts = r.resolve([(pinned, SIGNED)], deadline=Deadline(0.5))[0]
            elapsed = time.monotonic() - started
        finally:
            r.close()
        time.sleep(1.0)  # let the proxy's delayed request finish while the registry still runs
    assert elapsed < 0.9
    assert facts.signatures is None
    assert facts.errors["signatures"] == "registry unreachable"
    assert "within the decision deadline" in facts.details["signatures"]


# --- keyless, against a test Sigstore configured as the trusted root -------------------------


def _keyless_rules(tmp_path: Path, store: Sigstore, subject: str) -> str:
    (tmp_path / "root.json").write_bytes(store.trusted_root())
    return (
        "apiVersion: image-policy/v1\nkind: RuleSet\nmetadata: {name: s}\n"
        "rules:\n  - id: signed\n    match: {images: ['**']}\n    require:\n"
        "      signatures:\n"
        f"        keyless: [{{issuer: '{GITHUB}', subject: '{subject}'}}]\n"
        f"        trustedRoot: {tmp_path / 'root.json'}\n"
    )


def test_keyless_signatures_each_wrong_part_denied_with_its_reason(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver, tmp_path: Path
) -> None:
    store = Sigstore()
    service = _service(
        resolver, _keyless_rules(tmp_path, store, "https://github.com/acme/app/*@refs/tags/*")
    )
    repo = "keyless/app"
    signer = f"keyless {WORKFLOW} (issuer {GITHUB})"

    def signed(tag: str, **options: object) -> Reference:
        digest = _image(registry, repo, tag)
        body = cosign.payload(digest, f"{registry.host}/{repo}")
        cosign.push_cosign(
            registry.url, repo, digest, [(body, store.sign_cosign_layer(body, **options))]
        )
        return Reference(proxy.host, repo, tag)

    assert _decide(service, signed("good")) == (True, [])
    cases = {
        "wrong-identity": (
            {"subject": "https://github.com/evil/app/.github/workflows/x.yml@refs/heads/main"},
            "(cosign signature by keyless https://github.com/evil/app/.github/workflows/x.yml"
            f"@refs/heads/main (issuer {GITHUB}) (not an identity of this rule))",
        ),
        "expired": (
            {"log_at": SIGNED_AT + timedelta(hours=1)},
            f"(cosign signature by {signer}, not verified: the certificate was not valid when "
            "signed (2026-10-01T13:00:00Z; valid 2026-10-01T11:59:00Z to 2026-10-01T12:09:00Z))",
        ),
        "unlogged": (
            {"logged": False},
            f"(cosign signature by {signer}, not verified: no transparency-log entry proves "
            "when it was signed)",
        ),
        "unknown-ct-log": (
            {"ct_key": ec.generate_private_key(ec.SECP256R1())},
            f"(cosign signature by {signer}, not verified: no SCT from a CT log of the trusted "
            "root verifies)",
        ),
    }
    for tag, (options, reason) in cases.items():
        allowed, messages = _decide(service, signed(tag, **options))
        assert not allowed, tag
        (message,) = messages
        assert reason in message, (tag, message)
        assert message.endswith(
            "rule signed requires a signature by keyless https://github.com/acme/app/*@refs/tags/* "
            f"(issuer {GITHUB})"
        )


def test_keyless_bundle_as_a_referrer_verifies(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver, tmp_path: Path
) -> None:
    store = Sigstore()
    repo = "keyless/bundle"
    digest = _image(registry, repo)
    cosign.push_referrer(registry.url, repo, digest, store.message_bundle(digest))
    service = _service(resolver, _keyless_rules(tmp_path, store, WORKFLOW))
    assert _decide(service, Reference(proxy.host, repo, "1")) == (True, [])


@pytest.mark.parametrize("status", [400, 405])
def test_a_registry_refusing_the_referrers_api_costs_one_request_more_not_a_failure(
    registry: SeededRegistry,
    referrers_proxy: ReferrersProxy,
    resolver: RegistryResolver,
    status: int,
) -> None:
    repo = "signed/noapi"
    digest = _image(registry, repo)
    cosign.push_referrer(registry.url, repo, digest, cosign.message_bundle(KEY, digest))
    referrers_proxy.overrides[(repo, digest)] = (status, "text/plain", b"unsupported")
    facts = _resolve(resolver, Reference(referrers_proxy.host, repo, "1"))
    assert facts.errors == {}
    assert facts.signatures is not None
    assert [(s.format, s.verified) for s in facts.signatures] == [("bundle", True)]
    assert "GET fallback tag" in _kinds(referrers_proxy, digest)


def test_a_failing_referrers_api_fails_the_lookup_for_on_resolve_error(
    registry: SeededRegistry, referrers_proxy: ReferrersProxy, resolver: RegistryResolver
) -> None:
    repo = "signed/broken"
    digest = _image(registry, repo)
    referrers_proxy.overrides[(repo, digest)] = (503, "text/plain", b"down")
    facts = _resolve(resolver, Reference(referrers_proxy.host, repo, "1"))
    assert facts.signatures is None
    assert facts.errors["signatures"] == "registry answered an error (HTTP 503)"
    assert "answered HTTP 503" in facts.details["signatures"]
