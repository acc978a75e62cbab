"""Attestations against the real registry: multi-platform indexes with BuildKit-shaped
attestation manifests (SLSA provenance v0.2, SPDX SBOM, plain or DSSE-signed), judged per
selected platform; every missing or wrong attestation denied with its reason."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from policy import loader
from policy.deadline import Deadline
from policy.facts import Needs
from policy.reference import Reference
from policy.resolver import RegistryResolver
from policy.service import Item, Service
from tests.support import attest, cosign
from tests.support.proxy import CountingProxy
from tests.support.registry import SeededRegistry

pytestmark = pytest.mark.registry

NOW = datetime(2026, 11, 1, tzinfo=UTC)
KEY = cosign.keypair()


def _platform_image(registry: SeededRegistry, repo: str, platform: str) -> str:
    return attest.push_platform_image(registry.url, repo, platform)


def _index(
    registry: SeededRegistry,
    repo: str,
    statements: attest.Callable[[str, str], list[attest.Statement]],
) -> tuple[str, str, str]:
    tag, _, amd, arm = attest.push_two_platform_index(registry.url, repo, statements)
    return tag, amd, arm


RULES = """\
apiVersion: image-policy/v1
kind: RuleSet
metadata: {name: a}
defaults: {platforms: ["linux/amd64", "linux/arm64"]}
rules:
  - id: built-here
    match: {images: ["**"]}
    require:
      attestations:
        provenance:
          builder: ["https://github.com/acme/*"]
          source: ["https://github.com/acme/*"]
          buildType: ["https://mobyproject.org/buildkit@v1"]
        sbom: true
"""


def _decide(service: Service, ref: Reference) -> tuple[bool, list[str]]:
    (decision,) = service.decide([Item(ref)], deadline=Deadline(10))
    return decision.allowed, [v.message for v in decision.violations]


def _service(resolver: RegistryResolver, rules: str = RULES) -> Service:
    return Service(loader.load_rules_text(rules, "rules.yaml"), resolver, now=lambda: NOW)


def test_attested_index_is_allowed_and_costs_two_requests_per_platform_three_per_image(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver
) -> None:
    repo = "attested/app"
    tag, amd, _ = _index(registry, repo, lambda d, p: [attest.provenance_v02(d), attest.sbom(d)])
    facts = resolver.resolve(
        [
            (
                Reference(proxy.host, repo, tag),
                Needs(digest=True, manifest=True, attestations=True, select=("linux/amd64",)),
            )
        ],
        deadline=Deadline(10),
    )[0]
    (amd_facts,) = [p for p in facts.platforms if p.digest == amd]
    assert amd_facts.attestations is not None
    kinds = sorted((a.kind, a.builder, a.source, a.reason) for a in amd_facts.attestations)
    assert kinds == [
        (
            "provenance",
            "https://github.com/acme/app/actions/runs/1",
            "https://github.com/acme/app.git#refs/tags/v1.2.0",
            "",
        ),
        ("sbom", None, None, ""),
    ]
    # The index (by tag), the amd64 manifest, its attestation manifest and the provenance
    # statement; the SBOM is counted by its layer's predicate type, unread. Per image, not per
    # platform: cosign's `.att` tag and the referrers (no API here: its fallback tag too).
    gets = sorted(
        path.rsplit("/", 2)[-2] for (m, path), n in proxy.counts().items() for _ in range(n)
    )
    assert gets == ["blobs", *["manifests"] * 5, "referrers"]
    assert _decide(_service(resolver), Reference(proxy.host, repo, tag)) == (True, [])


def test_each_missing_or_wrong_attestation_is_denied_per_platform(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver
) -> None:
    repo = "attested/wrong"
    service = _service(resolver)

    def only_amd_sbom(d: str, p: str) -> list[attest.Statement]:
        return [attest.provenance_v02(d), *([attest.sbom(d)] if p == "linux/amd64" else [])]

    tag, _, _ = _index(registry, repo, only_amd_sbom)
    allowed, messages = _decide(service, Reference(proxy.host, repo, tag))
    assert not allowed
    assert messages == [
        f"{proxy.host}/{repo}:{tag} (linux/arm64) has no SBOM attestation (provenance); "
        "rule built-here requires one"
    ]

    tag, _, _ = _index(
        registry,
        repo,
        lambda d, p: [attest.provenance_v02(d, builder="https://evil.example/ci"), attest.sbom(d)],
    )
    allowed, messages = _decide(service, Reference(proxy.host, repo, tag))
    assert not allowed
    assert messages == [
        f"{proxy.host}/{repo}:{tag} ({p}): provenance builder id 'https://evil.example/ci' "
        "matches none of https://github.com/acme/*; rule built-here requires a match"
        for p in ("linux/amd64", "linux/arm64")
    ]

    other = "sha256:" + "9" * 64  # statements about another image, attached to these
    tag, _, _ = _index(registry, repo, lambda d, p: [attest.provenance_v02(other), attest.sbom(d)])
    allowed, messages = _decide(service, Reference(proxy.host, repo, tag))
    assert not allowed
    assert (
        f"{proxy.host}/{repo}:{tag} (linux/amd64) has no SLSA provenance attestation "
        "(provenance (its subject is not this image), sbom); rule built-here requires one"
    ) in messages

    tag, _, _ = _index(registry, repo, lambda d, p: [])
    allowed, messages = _decide(service, Reference(proxy.host, repo, tag))
    assert (
        f"{proxy.host}/{repo}:{tag} (linux/amd64) has no SLSA provenance attestation "
        "(no attestations); rule built-here requires one"
    ) in messages


def test_signed_attestations_count_only_with_a_configured_key(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver
) -> None:
    repo = "attested/signed"
    rules = (
        "apiVersion: image-policy/v1\nkind: RuleSet\nmetadata: {name: a}\n"
        "defaults: {platforms: ['linux/amd64']}\n"
        "rules:\n  - id: signed-provenance\n    match: {images: ['**']}\n    require:\n"
        "      attestations:\n        provenance: true\n        signed:\n          keys:\n"
        "            - |\n"
        + "".join(f"              {line}\n" for line in KEY.public_pem.splitlines())
    )
    service = _service(resolver, rules)
    tag, _, _ = _index(registry, repo, lambda d, p: [attest.signed(KEY, attest.provenance_v02(d))])
    assert _decide(service, Reference(proxy.host, repo, tag)) == (True, [])
    stranger = cosign.keypair()
    for made in (
        lambda d, p: [attest.provenance_v02(d)],
        lambda d, p: [attest.signed(stranger, attest.provenance_v02(d))],
    ):
        tag, _, _ = _index(registry, repo, made)
        allowed, messages = _decide(service, Reference(proxy.host, repo, tag))
        assert not allowed
        assert messages == [
            f"{proxy.host}/{repo}:{tag} (linux/amd64) has no SLSA provenance attestation signed "
            "by a configured key (provenance (not signed by a configured key)); rule "
            "signed-provenance requires one"
        ]


def test_a_single_platform_image_has_no_attestations(
    registry: SeededRegistry, proxy: CountingProxy, resolver: RegistryResolver
) -> None:
    repo = "attested/single"
    digest = _platform_image(registry, repo, "linux/amd64")
    allowed, messages = _decide(_service(resolver), Reference(proxy.host, repo, digest=digest))
    assert not allowed
    assert messages[0].endswith(
        "has no SLSA provenance attestation (no attestations); rule built-here requires one"
    )
