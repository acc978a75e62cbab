"""cosign `attest` attestations (the `sha256-<hex>.att` tag) and Sigstore bundles with DSSE
content among the OCI referrers, against the real registry (no referrers API: the fallback
tag) and a proxy adding the referrers API; signed keyless against a test Sigstore configured
as the trusted root, or by keys. Each wrong case denied with its reason; the requests they
cost counted."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from policy import loader, signing
from policy.deadline import Deadline
from policy.facts import Needs
from policy.reference import Reference
from policy.resolver import MAX_SIGNATURES, RegistryResolver
from policy.service import Item, Service
from tests.support import attest, cosign
from tests.support.proxy import CountingProxy
from tests.support.referrers import ReferrersProxy
from tests.support.registry import SeededRegistry
from tests.support.sigstore import GITHUB, WORKFLOW, Sigstore

pytestmark = pytest.mark.registry

NOW = datetime(2026, 11, 1, tzinfo=UTC)
STORE = Sigstore()
KEY = cosign.keypair()


def _index(
    registry: SeededRegistry,
    repo: str,
    statements: Callable[[str, str], list[attest.Statement]] = lambda d, p: [],
) -> tuple[str, str, str, str]:
    """A two-platform index (BuildKit attestations from `statements`): tag, index digest,
    amd64 and arm64 digests."""
    return attest.push_two_platform_index(registry.url, repo, statements)


def _rules(tmp_path: Path, subject: str = "https://github.com/acme/*", extra: str = "") -> str:
    (tmp_path / "root.json").write_bytes(STORE.trusted_root())
    return (
        "apiVersion: image-policy/v1\nkind: RuleSet\nmetadata: {name: a}\n"
        "defaults: {platforms: ['linux/amd64', 'linux/arm64']}\n"
        "rules:\n  - id: attested\n    match: {images: ['**']}\n    require:\n"
        "      attestations:\n"
        "        provenance: {builder: ['https://github.com/acme/*']}\n"
        "        sbom: true\n"
        "        signed:\n"
        f"          keyless: [{{issuer: '{GITHUB}', subject: '{subject}'}}]\n"
        f"          trustedRoot: {tmp_path / 'root.json'}\n" + extra
    )


def _decide(service: Service, ref: Reference) -> tuple[bool, list[str]]:
    (decision,) = service.decide([Item(ref)], deadline=Deadline(10))
    return decision.allowed, [v.message for v in decision.violations]


def _service(resolver: RegistryResolver, rules: str) -> Service:
    return Service(loader.load_rules_text(rules, "rules.yaml"), resolver, now=lambda: NOW)


def _attested(repo: str, registry: SeededRegistry, image: str, **options: Any) -> None:
    """`cosign attest` keyless, provenance and SBOM about `image`, into its `.att` tag."""
    _, provenance = attest.provenance_v02(image)
    _, sbom = attest.sbom(image)
    layers = [STORE.attest_cosign_layer(s, **options) for s in (provenance, sbom)]
    cosign.push_attestations(registry.url, repo, image, layers)


def _kinds(proxy: CountingProxy, digest: str) -> list[str]:
    """The requests about `digest`'s cosign tags and referrers, by what they asked for."""
    hexa = digest.partition(":")[2]
    out = []
    for (method, path), n in proxy.counts().items():
        for suffix, what in ((".sig", ".sig"), (".att", ".att"), ("", "fallback tag")):
            if path.endswith(f"/manifests/sha256-{hexa}{suffix}"):
                out += [f"{method} {what}"] * n
                break
        else:
            if f"/referrers/{digest}" in path:
                out += [f"{method} referrers"] * n
    return sorted(out)


def test_keyless_cosign_attestations_of_an_index_count_for_every_platform(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver, tmp_path: Path
) -> None:
    repo = "attcosign/app"
    tag, index, amd, arm = _index(registry, repo)
    _attested(repo, registry, index)
    ref = Reference(proxy.host, repo, tag)
    assert _decide(_service(resolver, _rules(tmp_path)), ref) == (True, [])
    facts = resolver.resolve(
        [(ref, Needs(digest=True, manifest=True, attestations=True, select=("*",)))],
        deadline=Deadline(10),
    )[0]
    assert {p.digest for p in facts.image_platforms()} == {amd, arm}
    for p in facts.image_platforms():
        assert p.attestations is not None
        assert sorted((a.kind, a.format, a.reason) for a in p.attestations) == [
            ("provenance", "cosign", ""),
            ("sbom", "cosign", ""),
        ]


def test_keyless_cosign_attestations_wrong_cases_are_denied_with_their_reasons(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver, tmp_path: Path
) -> None:
    repo = "attcosign/wrong"
    service = _service(resolver, _rules(tmp_path))

    tag, index, _, _ = _index(registry, repo)
    _attested(repo, registry, index, subject="https://github.com/evil/app/.github/x.yml@main")
    allowed, messages = _decide(service, Reference(proxy.host, repo, tag))
    assert not allowed
    assert messages[0] == (
        f"{proxy.host}/{repo}:{tag} (linux/amd64) has no SLSA provenance attestation signed by "
        "a configured signer (provenance (cosign) (signed by keyless "
        f"https://github.com/evil/app/.github/x.yml@main (issuer {GITHUB}), not an identity of "
        "this rule), sbom (cosign) (signed by keyless https://github.com/evil/app/.github/"
        f"x.yml@main (issuer {GITHUB}), not an identity of this rule)); rule attested requires one"
    )

    tag, index, _, _ = _index(registry, repo)  # statements about another image
    _, other_image, _, _ = _index(registry, repo)
    _attested(repo, registry, other_image)
    cosign.push_attestations(
        registry.url,
        repo,
        index,
        [STORE.attest_cosign_layer(attest.provenance_v02(other_image)[1])],
    )
    allowed, messages = _decide(service, Reference(proxy.host, repo, tag))
    assert not allowed
    assert "(provenance (cosign) (its subject is not this image))" in messages[0]

    tag, index, _, _ = _index(registry, repo)  # a payload changed after signing
    envelope, annotations = STORE.attest_cosign_layer(attest.provenance_v02(index)[1])
    document = json.loads(envelope)
    forged = attest.provenance_v02(index, builder="https://github.com/acme/forged")[1]
    document["payload"] = base64.b64encode(forged).decode()
    cosign.push_attestations(
        registry.url, repo, index, [(json.dumps(document).encode(), annotations)]
    )
    allowed, messages = _decide(service, Reference(proxy.host, repo, tag))
    assert not allowed
    assert (
        "(provenance (cosign) (its signature did not verify: the signature does not verify "
        "with its certificate))"
    ) in messages[0]

    tag, index, _, _ = _index(registry, repo)  # never logged: no proof of when it was signed
    _attested(repo, registry, index, logged=False)
    allowed, messages = _decide(service, Reference(proxy.host, repo, tag))
    assert not allowed
    assert (
        f"(its signature did not verify: keyless {WORKFLOW} (issuer {GITHUB}): no "
        "transparency-log entry proves when it was signed)"
    ) in messages[0]


def test_buildkit_attestations_signed_in_the_index_cannot_meet_a_keyless_identity(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver, tmp_path: Path
) -> None:
    repo = "attcosign/buildkit"
    tag, _, _, _ = _index(
        registry,
        repo,
        lambda d, p: [
            attest.signed(KEY, attest.provenance_v02(d)),
            attest.signed(KEY, attest.sbom(d)),
        ],
    )
    allowed, messages = _decide(
        _service(resolver, _rules(tmp_path)), Reference(proxy.host, repo, tag)
    )
    assert not allowed
    because = (
        "signed in the index (BuildKit's DSSE carries no certificate), not by a configured "
        "key; a keyless identity cannot apply"
    )
    assert messages[0] == (
        f"{proxy.host}/{repo}:{tag} (linux/amd64) has no SLSA provenance attestation signed by "
        f"a configured signer (provenance ({because}), sbom ({because})); rule attested "
        "requires one"
    )
    # With the key as well, the same attestations count.
    pem = "".join(f"              {line}\n" for line in KEY.public_pem.splitlines())
    both = _rules(tmp_path) + "          keys:\n            - |\n" + pem
    assert _decide(_service(resolver, both), Reference(proxy.host, repo, tag)) == (True, [])


def test_keyless_dsse_bundles_as_referrers_count_fallback_tag_and_api(
    registry: SeededRegistry,
    proxy: CountingProxy,
    referrers_proxy: ReferrersProxy,
    resolver: RegistryResolver,
    tmp_path: Path,
) -> None:
    repo = "attcosign/bundles"
    service = _service(resolver, _rules(tmp_path))
    tag, index, _, _ = _index(registry, repo)
    for made in (attest.provenance_v02(index), attest.sbom(index)):
        cosign.push_referrer(registry.url, repo, index, STORE.dsse_bundle(made[1]))
    assert _decide(service, Reference(proxy.host, repo, tag)) == (True, [])

    tag, index, _, _ = _index(registry, repo)
    listed = [
        cosign.push_referrer(
            registry.url, repo, index, STORE.dsse_bundle(made[1]), fallback_tag=False
        )[1]
        for made in (attest.provenance_v02(index), attest.sbom(index))
    ]
    referrers_proxy.listed[(repo, index)] = listed
    assert _decide(service, Reference(referrers_proxy.host, repo, tag)) == (True, [])
    assert _kinds(referrers_proxy, index) == ["GET .att", "GET referrers"]

    tag, index, _, _ = _index(registry, repo)  # a bundle from another Sigstore
    stranger = Sigstore(log_key=STORE.log_key, ct_key=STORE.ct_key, name="other-fulcio")
    cosign.push_referrer(
        registry.url, repo, index, stranger.dsse_bundle(attest.provenance_v02(index)[1])
    )
    allowed, messages = _decide(service, Reference(proxy.host, repo, tag))
    assert not allowed
    assert (
        "(provenance (bundle) (its signature did not verify: keyless "
        f"{WORKFLOW} (issuer {GITHUB}): the certificate does not chain to the trusted root))"
    ) in messages[0]


def test_attestation_lookups_cost_the_protocol_minimum_and_nothing_when_warm(
    registry: SeededRegistry,
    proxy: CountingProxy,
    referrers_proxy: ReferrersProxy,
    resolver: RegistryResolver,
) -> None:
    """An image with BuildKit attestations only: its `.att` tag and its referrers (the API,
    else the fallback tag) are asked once per image digest — 3 requests more on a registry
    without the referrers API, 2 with it; with signatures also required, the referrers answer
    is shared (1 more: the `.att` tag); a warm review asks nothing."""
    repo = "attcosign/cost"
    tag, index, _, _ = _index(registry, repo, lambda d, p: [attest.provenance_v02(d)])
    needs = Needs(digest=True, manifest=True, attestations=True, select=("*",))
    ref = Reference(proxy.host, repo, tag)
    resolver.resolve([(ref, needs)], deadline=Deadline(10))
    assert _kinds(proxy, index) == ["GET .att", "GET fallback tag", "GET referrers"]
    before = proxy.total()
    # index, 2 manifests, 2 attestation manifests, 2 statements, and those 3
    assert before == 1 + 2 + 2 + 2 + 3
    resolver.resolve([(ref, needs)], deadline=Deadline(10))
    assert proxy.total() == before

    with_signatures = needs | Needs(
        signatures=True, keys=(signing.parse_public_key(KEY.public_pem).der,)
    )
    ref2 = Reference(referrers_proxy.host, repo, tag)
    resolver.resolve([(ref2, with_signatures)], deadline=Deadline(10))
    assert _kinds(referrers_proxy, index) == ["GET .att", "GET .sig", "GET referrers"]


def test_a_hostile_att_manifest_is_read_no_further_than_the_cap(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver, tmp_path: Path
) -> None:
    """40 junk envelope layers: 32 are read (one blob each), each a reason; the decision is a
    denial, never an error."""
    repo = "attcosign/hostile"
    tag, index, _, _ = _index(registry, repo)
    junk = [(b"{" * 10 + bytes([i]), {}) for i in range(40)]
    cosign.push_attestations(registry.url, repo, index, junk)
    allowed, messages = _decide(
        _service(resolver, _rules(tmp_path)), Reference(proxy.host, repo, tag)
    )
    assert not allowed
    assert messages[0].endswith(
        f"({MAX_SIGNATURES} other (cosign) (the DSSE envelope is not valid JSON (not JSON "
        "(Expecting property name enclosed in double quotes at line 1 column 2)))); rule "
        "attested requires one"
    )
    blobs = sum(n for (m, path), n in proxy.counts().items() if "/blobs/" in path)
    assert blobs == MAX_SIGNATURES


def test_inclusion_proofs_of_referrer_bundles_are_verified_through_the_registry(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver, tmp_path: Path
) -> None:
    """A keyless signature bundle and an attestation bundle among the referrers, each with an
    inclusion proof from the test log (a tree of several entries) and its checkpoint: allowed;
    the same with one proof hash changed, or a checkpoint signed by another key: denied."""
    repo = "attcosign/proofs"
    rules = _rules(tmp_path) + (
        "      signatures:\n"
        f"        keyless: [{{issuer: '{GITHUB}', subject: 'https://github.com/acme/*'}}]\n"
        f"        trustedRoot: {tmp_path / 'root.json'}\n"
    )
    service = _service(resolver, rules)

    def push(index: str, change: Callable[[dict[str, Any]], None] | None = None) -> None:
        for bundle in (
            STORE.message_bundle(index),
            STORE.dsse_bundle(attest.provenance_v02(index)[1]),
            STORE.dsse_bundle(attest.sbom(index)[1]),
        ):
            document = json.loads(bundle)
            proof = document["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
            assert int(proof["treeSize"]) > 5 and proof["hashes"]
            if change is not None:
                change(proof)
            cosign.push_referrer(registry.url, repo, index, json.dumps(document).encode())

    tag, index, _, _ = _index(registry, repo)
    push(index)
    assert _decide(service, Reference(proxy.host, repo, tag)) == (True, [])

    def wrong_hash(proof: dict[str, Any]) -> None:
        proof["hashes"][0] = base64.b64encode(b"\x00" * 32).decode()

    tag, index, _, _ = _index(registry, repo)
    push(index, wrong_hash)
    allowed, messages = _decide(service, Reference(proxy.host, repo, tag))
    assert not allowed
    because = "its inclusion proof does not lead from the entry to its root hash"
    said = "\n".join(messages)
    assert f"bundle signature by keyless {WORKFLOW} (issuer {GITHUB}), not verified: {because}" in (
        said
    )
    assert f"(its signature did not verify: keyless {WORKFLOW} (issuer {GITHUB}): {because})" in (
        said
    )

    def foreign_checkpoint(proof: dict[str, Any]) -> None:
        stranger = Sigstore()
        root = base64.b64decode(proof["rootHash"])
        proof["checkpoint"]["envelope"] = stranger.checkpoint(int(proof["treeSize"]), root)

    tag, index, _, _ = _index(registry, repo)
    push(index, foreign_checkpoint)
    allowed, messages = _decide(service, Reference(proxy.host, repo, tag))
    assert not allowed
    said = "\n".join(messages)
    assert "not verified: its inclusion proof's checkpoint is not signed by the log" in said
    assert f"{GITHUB}): its inclusion proof's checkpoint is not signed by the log)" in said
