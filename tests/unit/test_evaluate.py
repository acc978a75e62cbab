"""Tests for policy/evaluate.py: `needs` (which facts to fetch) and `evaluate` (the verdict),
with exceptions on an injected clock, namespaces, platform selection and resolve errors."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from types import MappingProxyType

import pytest

from policy import loader
from policy.evaluate import (
    Context,
    ImageDecision,
    Violation,
    evaluate,
    needs,
    registry_refused,
)
from policy.facts import ATTESTATION_PLATFORM, NO_NEEDS, ImageFacts, Needs, PlatformFacts
from policy.reference import parse
from policy.rules import RuleSet

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SHA = "sha256:" + "a" * 64
BOTH = ("linux/amd64", "linux/arm64")


def ruleset(rules: str, *, defaults: str = "", exceptions: str = "") -> RuleSet:
    """A rule set from YAML fragments (each indented as at the top level of a rule file)."""
    text = "apiVersion: image-policy/v1\nkind: RuleSet\nmetadata: {name: test}\n"
    if defaults:
        text += f"defaults:\n{defaults}"
    text += f"rules:\n{rules}"
    if exceptions:
        text += f"exceptions:\n{exceptions}"
    return loader.load_rules_text(text, "test.yaml")


def rule(rule_id: str, require: str, *, images: str = '["**"]', extra: str = "") -> str:
    return f"  - id: {rule_id}\n    match: {{images: {images}}}\n    require: {require}\n{extra}"


def good_platform(platform: str = "linux/amd64", **changes: object) -> PlatformFacts:
    """An image entry that passes every check of these tests."""
    fields: dict[str, object] = {
        "digest": SHA,
        "layers": 5,
        "size": 1000,
        "user": "1000",
        "created": NOW,
        "labels": MappingProxyType({"team": "web"}),
        "config_known": True,
    }
    fields.update(changes)
    return PlatformFacts(platform, **fields)  # type: ignore[arg-type]


def single(**changes: object) -> ImageFacts:
    return ImageFacts(
        digest=SHA,
        index=False,
        tier="official",
        platforms=(good_platform("linux/amd64", **changes),),
    )


def index(*platforms: PlatformFacts) -> ImageFacts:
    return ImageFacts(digest=SHA, index=True, tier="official", platforms=platforms)


def decide(
    rs: RuleSet,
    image: str,
    facts: ImageFacts | None = None,
    *,
    namespace: str | None = None,
    now: datetime = NOW,
) -> ImageDecision:
    facts = facts if facts is not None else single()
    decision = evaluate(rs, [(parse(image), facts)], Context(now, namespace))
    (image_decision,) = decision.images
    assert decision.allowed is image_decision.allowed
    return image_decision


def summary(d: ImageDecision) -> list[tuple[str, str, str]]:
    return [(v.rule, v.check, v.action) for v in d.violations]


# --- unmatched ----------------------------------------------------------------------------------


def test_unmatched_image_is_denied_by_default() -> None:
    rs = ruleset(rule("ghcr-pinned", "{digest: true}", images='["ghcr.io/**"]'))
    d = decide(rs, "nginx")
    assert not d.allowed
    assert d.violations == (
        Violation(
            "(unmatched)",
            "unmatched",
            "deny",
            "no rule of test matches docker.io/library/nginx; images no rule covers are denied "
            "(defaults.unmatched: deny)",
        ),
    )


def test_unmatched_allow() -> None:
    rs = ruleset(
        rule("ghcr-pinned", "{digest: true}", images='["ghcr.io/**"]'),
        defaults="  unmatched: allow\n",
    )
    d = decide(rs, "nginx")
    assert d.allowed and d.violations == ()


def test_excluded_image_is_unmatched() -> None:
    rs = ruleset(
        "  - id: hub\n    match: {images: ['docker.io/**'], excludeImages: ['mycorp/**']}\n"
        "    require: {digest: true}\n"
    )
    assert summary(decide(rs, "mycorp/app")) == [("(unmatched)", "unmatched", "deny")]
    assert summary(decide(rs, "bitnami/redis")) == [("hub", "digest", "deny")]


# --- actions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("default", "action", "effective", "allowed"),
    [
        ("", "", "deny", False),
        ("", "deny", "deny", False),
        ("", "warn", "warn", True),
        ("", "audit", "audit", True),
        ("warn", "", "warn", True),
        ("audit", "", "audit", True),
        ("warn", "deny", "deny", False),
        ("deny", "warn", "warn", True),
    ],
)
def test_actions(default: str, action: str, effective: str, allowed: bool) -> None:
    extra = f"    action: {action}\n" if action else ""
    rs = ruleset(
        rule("pinned", "{digest: true}", extra=extra),
        defaults=f"  action: {default}\n" if default else "",
    )
    d = decide(rs, "nginx:1.25")
    assert summary(d) == [("pinned", "digest", effective)]
    assert d.allowed is allowed
    assert d.by_action(effective) == d.violations  # type: ignore[arg-type]


def test_allowed_iff_no_deny_across_images_and_rules() -> None:
    rs = ruleset(
        rule("pinned", "{digest: true}", extra="    action: warn\n")
        + rule("no-latest", "{denyTags: [latest]}")
    )
    context = Context(NOW)
    decision = evaluate(rs, [(parse("nginx:1.25"), single()), (parse("nginx"), single())], context)
    first, second = decision.images
    assert summary(first) == [("pinned", "digest", "warn")]
    assert first.allowed
    assert summary(second) == [("pinned", "digest", "warn"), ("no-latest", "denyTags", "deny")]
    assert not second.allowed
    assert not decision.allowed
    assert evaluate(rs, [(parse("nginx:1.25"), single())], context).allowed
    assert evaluate(rs, [], context).allowed  # nothing to judge


def test_every_rule_that_matches_applies_and_messages_read_well() -> None:
    rs = ruleset(
        rule("few-layers", "{maxLayers: 30}")
        + rule("pinned", "{digest: true}", extra="    message: pin your images\n")
    )
    d = decide(rs, "acme/app:latest", single(layers=41))
    assert [v.message for v in d.violations] == [
        "docker.io/acme/app:latest has 41 layers; rule few-layers allows at most 30",
        "pin your images (docker.io/acme/app:latest is not pinned by digest; rule pinned "
        "requires name@sha256:... (run `image-policy pin` or use the digest the registry "
        "reports))",
    ]


def test_evaluation_is_deterministic() -> None:
    rs = ruleset(rule("a", "{maxLayers: 1, digest: true}") + rule("b", "{denyTags: [latest]}"))
    images = [(parse("nginx"), single()), (parse("ghcr.io/o/a:1"), single())]
    assert evaluate(rs, images, Context(NOW)) == evaluate(rs, images, Context(NOW))


# --- exceptions ---------------------------------------------------------------------------------

EXCEPTION_RULES = rule("pinned", "{digest: true}") + rule("no-latest", "{denyTags: [latest]}")
LEGACY = (
    "  - rules: [pinned]\n    images: ['docker.io/mycorp/legacy']\n    namespaces: [legacy]\n"
    "    reason: migration, ticket OPS-12\n    expires: 2027-03-31\n"
)
EXPIRED = (
    "exception for rule pinned on docker.io/mycorp/legacy expired on 2027-03-31 "
    "(migration, ticket OPS-12); the rule applies again"
)


@pytest.mark.parametrize(
    ("now", "namespace", "image", "violations", "warnings"),
    [
        (datetime(2026, 1, 1, tzinfo=UTC), "legacy", "mycorp/legacy:1", [], []),
        (datetime(2027, 3, 31, 0, 0, tzinfo=UTC), "legacy", "mycorp/legacy:1", [], []),
        (datetime(2027, 3, 31, 23, 59, 59, tzinfo=UTC), "legacy", "mycorp/legacy:2", [], []),
        (
            datetime(2027, 4, 1, 0, 0, tzinfo=UTC),
            "legacy",
            "mycorp/legacy:2",
            ["pinned"],
            [EXPIRED],
        ),
        (datetime(2030, 1, 1, tzinfo=UTC), "legacy", "mycorp/legacy:2", ["pinned"], [EXPIRED]),
        # Other namespaces, an unknown namespace and other images are not excepted.
        (datetime(2026, 1, 1, tzinfo=UTC), "prod", "mycorp/legacy:2", ["pinned"], []),
        (datetime(2026, 1, 1, tzinfo=UTC), None, "mycorp/legacy:2", ["pinned"], []),
        (datetime(2026, 1, 1, tzinfo=UTC), "legacy", "mycorp/legacy2:2", ["pinned"], []),
        (datetime(2026, 1, 1, tzinfo=UTC), "legacy", "ghcr.io/mycorp/legacy:2", ["pinned"], []),
    ],
)
def test_exception_lifts_rule_until_it_expires(
    now: datetime,
    namespace: str | None,
    image: str,
    violations: list[str],
    warnings: list[str],
) -> None:
    """Only `pinned` is lifted (`no-latest` still applies to an image without a tag)."""
    rs = ruleset(EXCEPTION_RULES, exceptions=LEGACY)
    d = decide(rs, image, namespace=namespace, now=now)
    assert [v.rule for v in d.violations] == violations
    assert list(d.warnings) == warnings
    untagged = decide(rs, image.split(":")[0], namespace=namespace, now=now)
    assert [v.rule for v in untagged.violations] == [*violations, "no-latest"]


def test_exception_without_namespaces_applies_everywhere_even_unknown() -> None:
    rs = ruleset(
        EXCEPTION_RULES,
        exceptions="  - rules: [pinned]\n    images: ['mycorp/**']\n    reason: r\n",
    )
    for namespace in (None, "prod", "legacy"):
        assert decide(rs, "mycorp/app:1", namespace=namespace).violations == ()


def test_exception_for_every_rule() -> None:
    rs = ruleset(
        EXCEPTION_RULES,
        exceptions="  - rules: ['*']\n    images: ['mycorp/**']\n    reason: scratch\n",
    )
    assert decide(rs, "mycorp/app").violations == ()
    assert summary(decide(rs, "other/app")) == [
        ("pinned", "digest", "deny"),
        ("no-latest", "denyTags", "deny"),
    ]


def test_a_valid_exception_wins_over_an_expired_one() -> None:
    rs = ruleset(
        EXCEPTION_RULES,
        exceptions=LEGACY + "  - rules: [pinned]\n    images: ['mycorp/**']\n    reason: r\n",
    )
    d = decide(rs, "mycorp/legacy:1", namespace="legacy", now=datetime(2028, 1, 1, tzinfo=UTC))
    assert d.violations == ()
    assert list(d.warnings) == [EXPIRED]


def test_every_matched_rule_excepted_is_not_unmatched() -> None:
    rs = ruleset(
        rule("pinned", "{digest: true}"),
        exceptions="  - rules: [pinned]\n    images: ['**']\n    reason: r\n",
    )
    assert decide(rs, "nginx").violations == ()


# --- rule namespaces ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("namespace", "rules"),
    [
        ("prod", ["prod-pinned"]),
        ("prod-eu", ["prod-pinned"]),
        ("dev", ["(unmatched)"]),
        (None, ["prod-pinned"]),  # unknown namespace: namespaced rules apply (fail closed)
    ],
)
def test_rule_namespaces(namespace: str | None, rules: list[str]) -> None:
    rs = ruleset(
        "  - id: prod-pinned\n    match: {images: ['**'], namespaces: [prod, 'prod-*']}\n"
        "    require: {digest: true}\n"
    )
    assert [v.rule for v in decide(rs, "nginx:1", namespace=namespace).violations] == rules


# --- platforms ----------------------------------------------------------------------------------

MULTI = index(
    good_platform("linux/amd64", layers=10),
    good_platform("linux/arm64/v8", layers=50, user="0"),
    good_platform("linux/s390x", layers=99),
    good_platform(ATTESTATION_PLATFORM, layers=500, user="0"),
)


@pytest.mark.parametrize(
    ("defaults", "rule_platforms", "offending"),
    [
        ("", "", ["linux/arm64/v8"]),  # the built-in default is linux/amd64 + linux/arm64
        ("  platforms: [linux/amd64, linux/arm64]\n", "", ["linux/arm64/v8"]),
        ("  platforms: [linux/amd64]\n", "", []),
        ("  platforms: ['*']\n", "", ["linux/arm64/v8", "linux/s390x"]),
        ("  platforms: ['linux/*']\n", "", ["linux/arm64/v8", "linux/s390x"]),
        ("", "    platforms: [linux/s390x]\n", ["linux/s390x"]),
        ("  platforms: ['*']\n", "    platforms: [linux/amd64]\n", []),
    ],
)
def test_platform_selection(defaults: str, rule_platforms: str, offending: list[str]) -> None:
    """Attestation entries (`unknown/unknown`) are never read, even under `*`."""
    rs = ruleset(rule("few-layers", "{maxLayers: 30}", extra=rule_platforms), defaults=defaults)
    d = decide(rs, "ghcr.io/o/app:1", MULTI)
    assert [v.message.split("(")[1].split(")")[0] for v in d.violations] == offending


def test_every_selected_platform_is_reported() -> None:
    rs = ruleset(rule("non-root", "{nonRootUser: true}"))
    d = decide(rs, "ghcr.io/o/app:1", MULTI)
    assert [v.message for v in d.violations] == [
        "ghcr.io/o/app:1 (linux/arm64/v8) runs as user '0'; rule non-root requires a non-root USER"
    ]


def test_index_without_the_selected_platforms_is_a_violation() -> None:
    rs = ruleset(rule("small", "{maxLayers: 30, nonRootUser: true}", extra="    action: warn\n"))
    facts = index(
        good_platform("linux/s390x", layers=99),
        good_platform(ATTESTATION_PLATFORM, layers=99),
    )
    d = decide(rs, "ghcr.io/o/app:1", facts)
    assert d.violations == (
        Violation(
            "small",
            "maxLayers",
            "warn",
            "ghcr.io/o/app:1 offers linux/s390x; none of the platforms rule small reads "
            "(linux/amd64, linux/arm64), so maxLayers cannot be checked",
        ),
    )


def test_index_of_attestations_only() -> None:
    rs = ruleset(rule("small", "{maxLayers: 30}"))
    d = decide(rs, "ghcr.io/o/app:1", index(good_platform(ATTESTATION_PLATFORM)))
    assert [v.message for v in d.violations] == [
        "ghcr.io/o/app:1 offers no images; none of the platforms rule small reads "
        "(linux/amd64, linux/arm64), so maxLayers cannot be checked"
    ]


def test_single_platform_image_is_always_read() -> None:
    rs = ruleset(rule("small", "{maxLayers: 30}"))
    facts = ImageFacts(
        digest=SHA, index=False, platforms=(good_platform("linux/s390x", layers=31),)
    )
    assert [v.message for v in decide(rs, "ghcr.io/o/app:1", facts).violations] == [
        "ghcr.io/o/app:1 has 31 layers; rule small allows at most 30"
    ]


def test_platforms_check_reads_the_whole_index() -> None:
    rs = ruleset(
        rule("multi-arch", "{platforms: [linux/amd64, linux/s390x]}"),
        defaults="  platforms: [linux/amd64]\n",
    )
    assert decide(rs, "ghcr.io/o/app:1", MULTI).violations == ()


# --- resolve errors -----------------------------------------------------------------------------

BROKEN = ImageFacts(
    errors=MappingProxyType(
        {
            "digest": "registry ghcr.io timed out",
            "platforms": "registry ghcr.io timed out",
            "manifest": "registry ghcr.io timed out",
            "config": "registry ghcr.io timed out",
            "tier": "Docker Hub unavailable",
        }
    )
)


@pytest.mark.parametrize(
    ("mode", "expected", "allowed"),
    [
        (
            "deny",
            [
                ("few-layers", "maxLayers", "deny", "image manifest"),
                ("non-root", "nonRootUser", "deny", "image config"),
                ("multi-arch", "platforms", "deny", "platform list"),
                ("trusted", "tier", "deny", "tier"),
            ],
            False,
        ),
        (
            "warn",
            [
                ("few-layers", "maxLayers", "warn", "image manifest"),
                ("non-root", "nonRootUser", "warn", "image config"),
                ("multi-arch", "platforms", "warn", "platform list"),
                ("trusted", "tier", "warn", "tier"),
            ],
            True,
        ),
        ("allow", [], True),
    ],
)
def test_on_resolve_error(
    mode: str, expected: list[tuple[str, str, str, str]], allowed: bool
) -> None:
    rs = ruleset(
        rule("few-layers", "{maxLayers: 30}")
        + rule("non-root", "{nonRootUser: true}")
        + rule("multi-arch", "{platforms: [linux/amd64]}")
        + rule("trusted", "{tier: [official]}")
        + rule("tag", "{denyTags: [dev]}"),
        defaults=f"  onResolveError: {mode}\n",
    )
    d = decide(rs, "ghcr.io/o/app:dev", BROKEN)
    reference_violation = ("tag", "denyTags", "deny")
    assert summary(d) == [(r, c, a) for r, c, a, _ in expected] + [reference_violation]
    assert not d.allowed  # the denyTags violation denies whatever the mode
    for (_, _, _, what), violation in zip(expected, d.violations, strict=False):
        reason = "Docker Hub unavailable" if what == "tier" else "registry ghcr.io timed out"
        assert violation.message == (
            f"cannot check ghcr.io/o/app:dev: {what} could not be fetched ({reason}); "
            f"onResolveError is {mode}"
        )
    without_tag_rule = ruleset(
        rule("few-layers", "{maxLayers: 30}"), defaults=f"  onResolveError: {mode}\n"
    )
    assert decide(without_tag_rule, "ghcr.io/o/app:1", BROKEN).allowed is allowed


@pytest.mark.parametrize(
    ("require", "facts", "message"),
    [
        (
            "{maxLayers: 3}",
            ImageFacts(),
            "cannot check ghcr.io/o/app:1: image manifest could not be fetched "
            "(manifest not resolved); onResolveError is deny",
        ),
        (
            "{nonRootUser: true}",
            index(PlatformFacts("linux/amd64", layers=3)),
            "cannot check ghcr.io/o/app:1: image config could not be fetched "
            "(config for linux/amd64 not resolved); onResolveError is deny",
        ),
        (
            "{maxLayers: 3}",
            index(PlatformFacts("linux/arm64")),
            "cannot check ghcr.io/o/app:1: image manifest could not be fetched "
            "(manifest for linux/arm64 not resolved); onResolveError is deny",
        ),
        (
            "{tier: [official]}",
            ImageFacts(),
            "cannot check ghcr.io/o/app:1: tier could not be fetched (tier not resolved); "
            "onResolveError is deny",
        ),
        (
            "{nonRootUser: true}",
            ImageFacts(errors=MappingProxyType({"manifest": "404 manifest unknown"})),
            "cannot check ghcr.io/o/app:1: image config could not be fetched "
            "(404 manifest unknown); onResolveError is deny",
        ),
    ],
)
def test_facts_not_resolved(require: str, facts: ImageFacts, message: str) -> None:
    d = decide(ruleset(rule("r", require)), "ghcr.io/o/app:1", facts)
    assert [v.message for v in d.violations] == [message]


LEAK = "ghcr.io/o/app:1: 10.0.0.7:5000 answered HTTP 500: X: internal-admin v3.2"


@pytest.mark.parametrize(
    ("require", "facts", "reason", "detail"),
    [
        (
            "{maxLayers: 3}",
            ImageFacts(
                errors=MappingProxyType(dict.fromkeys(("digest", "manifest"), "image not found")),
                details=MappingProxyType({"digest": "manifest unknown: x", "manifest": LEAK}),
            ),
            "image manifest could not be fetched (image not found)",
            LEAK,
        ),
        (
            "{nonRootUser: true}",
            ImageFacts(
                errors=MappingProxyType({"digest": "registry unreachable"}),
                details=MappingProxyType({"digest": LEAK}),
            ),
            "image config could not be fetched (registry unreachable)",
            LEAK,
        ),
        (
            "{tier: [official]}",
            ImageFacts(
                errors=MappingProxyType({"tier": "Docker Hub unreachable"}),
                details=MappingProxyType({"tier": LEAK}),
            ),
            "tier could not be fetched (Docker Hub unreachable)",
            LEAK,
        ),
        (  # a reason without a detail (facts made without one): no detail
            "{maxLayers: 3}",
            ImageFacts(errors=MappingProxyType({"manifest": "registry unreachable"})),
            "image manifest could not be fetched (registry unreachable)",
            "",
        ),
    ],
)
def test_a_fact_not_fetched_is_told_by_its_class_with_the_detail_beside(
    require: str, facts: ImageFacts, reason: str, detail: str
) -> None:
    """The message (what a pod author reads) has the classified reason of the fact the check
    reads; the violation's detail carries that same fact's full reason, for the operator."""
    d = decide(ruleset(rule("r", require)), "ghcr.io/o/app:1", facts)
    (violation,) = d.violations
    assert violation.message == f"cannot check ghcr.io/o/app:1: {reason}; onResolveError is deny"
    assert violation.detail == detail
    assert "10.0.0.7" not in violation.message


def test_the_tag_finding_keeps_the_detail_apart() -> None:
    facts = dataclasses.replace(
        tagged(None, tag="registry unreachable"), details=MappingProxyType({"tag": LEAK})
    )
    d = decide(ruleset(TAG_RULES, exceptions=LEGACY_TAG), f"mycorp/app:legacy-1@{DEBUG}", facts)
    (finding,) = [v for v in d.violations if v.rule == "(tag)"]
    assert "could not be confirmed to point to sha256:dddddddddddd… (registry unreachable)" in (
        finding.message
    )
    assert finding.detail == LEAK and "10.0.0.7" not in finding.message


# --- needs --------------------------------------------------------------------------------------

MANIFEST = Needs(digest=True, manifest=True, select=BOTH)
CONFIG = Needs(digest=True, manifest=True, config=True, select=BOTH)


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (rule("r", "{digest: true}"), NO_NEEDS),
        (rule("r", "{denyTags: [latest]}"), NO_NEEDS),
        (rule("r", "{registries: [ghcr.io]}"), NO_NEEDS),
        (rule("r", "{tier: [official]}"), Needs(tier=True)),
        (rule("r", "{platforms: [linux/amd64]}"), Needs(digest=True, platforms=True)),
        (rule("r", "{maxLayers: 3}"), MANIFEST),
        (rule("r", "{maxSize: 1MiB}"), MANIFEST),
        (rule("r", "{nonRootUser: true}"), CONFIG),
        (rule("r", "{maxAge: 90d}"), CONFIG),
        (rule("r", "{labels: [team]}"), CONFIG),
        (
            rule("r", "{maxLayers: 3}", extra="    platforms: [linux/arm64]\n"),
            Needs(digest=True, manifest=True, select=("linux/arm64",)),
        ),
        (
            rule("r", "{maxLayers: 3}", extra="    platforms: [linux/arm64]\n")
            + rule("s", "{maxAge: 1d}", extra="    platforms: ['*']\n")
            + rule("t", "{tier: [official], digest: true, platforms: [linux/amd64]}"),
            Needs(
                tier=True,
                digest=True,
                platforms=True,
                manifest=True,
                config=True,
                select=("linux/arm64", "*"),
            ),
        ),
        (rule("r", "{maxLayers: 3}", images="['docker.io/**']"), NO_NEEDS),  # not matched
    ],
)
def test_needs(rules: str, expected: Needs) -> None:
    rs = ruleset(rules)
    assert needs(rs, parse("ghcr.io/o/app:1"), Context(NOW)) == expected


def test_needs_skip_excepted_rules() -> None:
    rs = ruleset(
        rule("small", "{maxLayers: 3}") + rule("trusted", "{tier: [official]}"),
        exceptions="  - rules: [small]\n    images: ['ghcr.io/o/**']\n    reason: r\n",
    )
    assert needs(rs, parse("ghcr.io/o/app"), Context(NOW)) == Needs(tier=True)
    assert needs(rs, parse("ghcr.io/x/app"), Context(NOW)) == Needs(tier=True) | MANIFEST


REFUSING = (
    rule("allowed-registries", "{registries: [registry.corp.example]}")
    + rule("pinned", "{digest: true}")
    + rule("small", "{maxLayers: 3, nonRootUser: true}")
    + rule("trusted", "{tier: [official]}")
)


def test_needs_nothing_when_a_deny_registries_check_rejects_the_image() -> None:
    rs = ruleset(REFUSING)
    context = Context(NOW)
    assert needs(rs, parse("ghcr.io/o/app:1"), context) == NO_NEEDS
    assert registry_refused(rs, parse("ghcr.io/o/app:1"), context)
    assert needs(rs, parse("registry.corp.example/app:1"), context) == (Needs(tier=True) | CONFIG)
    assert not registry_refused(rs, parse("registry.corp.example/app:1"), context)


def test_refused_registry_reports_only_reference_checks() -> None:
    """Nothing was fetched, and missing facts are not blamed on the registry."""
    d = decide(ruleset(REFUSING), "ghcr.io/o/app:1", ImageFacts())
    assert summary(d) == [
        ("allowed-registries", "registries", "deny"),
        ("pinned", "digest", "deny"),
    ]
    assert d.violations[0].message == (
        "ghcr.io/o/app:1 is from registry ghcr.io; rule allowed-registries allows only "
        "registry.corp.example"
    )


@pytest.mark.parametrize("action", ["warn", "audit"])
def test_non_deny_registries_check_still_resolves(action: str) -> None:
    rs = ruleset(
        rule("registries", "{registries: [registry.corp.example]}", extra=f"    action: {action}\n")
        + rule("small", "{maxLayers: 3}")
    )
    assert needs(rs, parse("ghcr.io/o/app"), Context(NOW)) == MANIFEST
    assert not registry_refused(rs, parse("ghcr.io/o/app"), Context(NOW))
    d = decide(rs, "ghcr.io/o/app", single(layers=4))
    assert summary(d) == [("registries", "registries", action), ("small", "maxLayers", "deny")]


def test_excepted_registries_rule_does_not_refuse() -> None:
    rs = ruleset(
        REFUSING,
        exceptions="  - rules: [allowed-registries]\n    images: ['ghcr.io/o/**']\n    reason: r\n",
    )
    assert needs(rs, parse("ghcr.io/o/app:1"), Context(NOW)) == Needs(tier=True) | CONFIG


@pytest.mark.parametrize(
    ("rule_action", "mode", "expected"),
    [
        ("warn", "deny", "warn"),
        ("audit", "deny", "audit"),
        ("audit", "warn", "audit"),
        ("deny", "warn", "warn"),
        ("deny", "deny", "deny"),
    ],
)
def test_a_resolve_error_is_never_stricter_than_its_rule(
    rule_action: str, mode: str, expected: str
) -> None:
    rs = ruleset(
        rule("few-layers", "{maxLayers: 30}", extra=f"    action: {rule_action}\n"),
        defaults=f"  onResolveError: {mode}\n",
    )
    d = decide(rs, "ghcr.io/o/app:1", BROKEN)
    assert summary(d) == [("few-layers", "maxLayers", expected)]
    assert d.allowed is (expected != "deny")


# --- a tag beside a digest counts only when it is true ------------------------------------------

DEBUG = "sha256:" + "d" * 64
TAG_RULES = rule("non-root", "{nonRootUser: true}", images='["**"]') + rule(
    "no-debug", '{denyTags: ["*-debug"]}'
)
LEGACY_TAG = (
    "  - {rules: [non-root], images: ['mycorp/app:legacy-*'], reason: old builds, "
    "expires: 2030-01-01}\n"
)


def tagged(
    tag_match: bool | None, *, user: str = "0", points: str = SHA, **errors: str
) -> ImageFacts:
    """Facts for `name:tag@DEBUG`: a root image whose tag (asked of the registry) points at
    `points` (`tag_match` says whether that is the digest), or could not be asked (`errors`)."""
    facts = single(user=user)
    return ImageFacts(
        digest=DEBUG,
        index=False,
        tier="official",
        platforms=facts.platforms,
        tag_digest=points if tag_match is not None else None,
        tag_match=tag_match,
        errors=MappingProxyType(errors),
    )


@pytest.mark.parametrize(
    ("image", "facts", "violations"),
    [
        # An exception on a tag glob lifts non-root only when the tag really names the digest.
        (f"mycorp/app:legacy-1@{DEBUG}", tagged(True, points=DEBUG), []),
        (
            f"mycorp/app:legacy-1@{DEBUG}",
            tagged(False),
            [("non-root", "nonRootUser", "deny"), ("(tag)", "tagMatchesDigest", "warn")],
        ),
        (
            f"mycorp/app:legacy-1@{DEBUG}",
            tagged(None, tag="cannot reach registry"),
            [("non-root", "nonRootUser", "deny"), ("(tag)", "tagMatchesDigest", "warn")],
        ),
        # denyTags reads the tag: a debug build is not hidden behind a decent tag...
        (
            f"mycorp/app:1.0-debug@{DEBUG}",
            tagged(True, user="1000", points=DEBUG),
            [("no-debug", "denyTags", "deny")],
        ),
        (f"mycorp/app:1.0@{DEBUG}", tagged(True, user="1000", points=DEBUG), []),
        # ... and an untrue tag is judged by digest (here nothing else is wrong: only the warning).
        (
            f"mycorp/app:1.0@{DEBUG}",
            tagged(False, user="1000"),
            [("(tag)", "tagMatchesDigest", "warn")],
        ),
        # A digest alone or a tag alone has nothing to confirm.
        (f"mycorp/app@{DEBUG}", tagged(None, user="1000"), []),
    ],
)
def test_a_tag_beside_a_digest_counts_only_when_true(
    image: str, facts: ImageFacts, violations: list[tuple[str, str, str]]
) -> None:
    rs = ruleset(TAG_RULES, exceptions=LEGACY_TAG)
    d = decide(rs, image, facts)
    assert summary(d) == violations
    assert d.reference == parse(image)  # the decision still names the reference as written


def test_the_tag_finding_says_where_the_tag_points() -> None:
    rs = ruleset(TAG_RULES, exceptions=LEGACY_TAG)
    d = decide(rs, f"mycorp/app:legacy-1@{DEBUG}", tagged(False))
    assert d.violations[-1].message == (
        "tag legacy-1 points to sha256:aaaaaaaaaaaa…, not to sha256:dddddddddddd…; judged by "
        "digest alone (the runtime pulls the digest and ignores the tag)"
    )
    assert f"docker.io/mycorp/app@{DEBUG}" in d.violations[0].message


def test_tag_matches_digest_check_denies_an_untrue_tag() -> None:
    """A rule author makes an untrue tag a denial with `tagMatchesDigest`; the check's own
    violation replaces the warning, and a tag that cannot be confirmed goes by onResolveError."""
    rs = ruleset(rule("true-tags", "{tagMatchesDigest: true}"))
    untrue = decide(rs, f"mycorp/app:1.0@{DEBUG}", tagged(False, user="1000"))
    assert summary(untrue) == [("true-tags", "tagMatchesDigest", "deny")]
    assert "tag 1.0 points to" in untrue.violations[0].message
    assert decide(rs, f"mycorp/app:1.0@{DEBUG}", tagged(True, points=DEBUG)).allowed
    unknown = decide(rs, f"mycorp/app:1.0@{DEBUG}", tagged(None, tag="timed out"))
    assert [(v.rule, v.action) for v in unknown.violations] == [("true-tags", "deny")]
    assert "where the tag points could not be fetched (timed out)" in unknown.violations[0].message
    assert decide(rs, "mycorp/app:1.0", single()).allowed  # a tag alone names what is pulled


@pytest.mark.parametrize(
    ("rules", "exceptions", "image", "tag"),
    [
        # Something reads the tag: ask the registry where it points.
        (TAG_RULES, "", f"mycorp/app:1.0@{DEBUG}", True),
        (rule("non-root", "{nonRootUser: true}"), LEGACY_TAG, f"mycorp/app:legacy-1@{DEBUG}", True),
        (
            rule("r", "{nonRootUser: true}", images='["mycorp/app:1.*"]'),
            "",
            f"mycorp/app:1.0@{DEBUG}",
            True,
        ),
        # Nothing reads it, or there is no tag beside a digest: no request.
        (rule("non-root", "{nonRootUser: true}"), LEGACY_TAG, f"mycorp/app:2.0@{DEBUG}", False),
        (
            rule("r", "{nonRootUser: true}", images='["mycorp/app:*"]'),
            "",
            f"mycorp/app:2.0@{DEBUG}",
            True,
        ),
        (TAG_RULES, "", f"mycorp/app@{DEBUG}", False),
        (TAG_RULES, "", "mycorp/app:1.0", False),
    ],
)
def test_needs_ask_about_the_tag_only_when_it_could_change_the_decision(
    rules: str, exceptions: str, image: str, tag: bool
) -> None:
    rs = ruleset(rules, exceptions=exceptions)
    assert needs(rs, parse(image), Context(NOW)).tag is tag
