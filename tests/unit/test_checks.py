"""Tests for policy/checks/: every `require` check, its parsing and its boundaries, with the
messages a person reads (each names the image and the rule)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import pytest

from policy import checks
from policy.errors import RuleError
from policy.facts import ATTESTATION_PLATFORM, ImageFacts, PlatformFacts
from policy.reference import parse
from policy.yamlsrc import Reader, load

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SHA = "sha256:" + "a" * 64
MIB = 1024**2


def setting(name: str, text: str) -> object:
    """The parsed setting of check `name` written as YAML `text`; fails on any parse error."""
    node, errors = load(text, "t.yaml")
    assert node is not None and errors == []
    reader = Reader(RuleError)
    value = checks.CHECKS[name].parse(reader, node, f"require.{name}")
    assert [str(e) for e in reader.errors] == []
    return value


def parse_errors(name: str, text: str) -> list[str]:
    node, errors = load(text, "t.yaml")
    assert node is not None and errors == []
    reader = Reader(RuleError)
    assert checks.CHECKS[name].parse(reader, node, f"require.{name}") is None
    return [str(e) for e in reader.errors]


def single(**fields: object) -> ImageFacts:
    """A single-platform image (linux/amd64) with these manifest/config facts."""
    platform = PlatformFacts("linux/amd64", **fields)  # type: ignore[arg-type]
    return ImageFacts(digest=SHA, index=False, platforms=(platform,))


def index(*platforms: PlatformFacts) -> ImageFacts:
    return ImageFacts(digest=SHA, index=True, platforms=platforms)


def judge(
    name: str,
    text: str,
    image: str,
    facts: ImageFacts | None = None,
    *,
    now: datetime = NOW,
) -> list[str]:
    """Run check `name` (setting `text`) on `image`, reading every image entry of `facts`."""
    facts = facts if facts is not None else ImageFacts()
    subject = checks.Subject(parse(image), facts, facts.image_platforms(), "r1", now)
    return checks.CHECKS[name].judge(setting(name, text), subject)


# --- registries ---------------------------------------------------------------------------------

REGISTRIES = '["docker.io", "*.gcr.io", "localhost:5000"]'
ONLY = "rule r1 allows only docker.io, *.gcr.io, localhost:5000"


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("nginx", []),
        ("index.docker.io/library/nginx:1", []),
        ("eu.gcr.io/project/image", []),
        ("EU.gcr.io/project/image", []),  # hosts are case-insensitive
        ("localhost:5000/app", []),
        ("a.b.gcr.io/p/i", [f"a.b.gcr.io/p/i is from registry a.b.gcr.io; {ONLY}"]),
        ("ghcr.io/o/app:1", [f"ghcr.io/o/app:1 is from registry ghcr.io; {ONLY}"]),
        ("localhost:5001/app", [f"localhost:5001/app is from registry localhost:5001; {ONLY}"]),
        (
            "docker.io.evil.com/library/nginx",
            [f"docker.io.evil.com/library/nginx is from registry docker.io.evil.com; {ONLY}"],
        ),
    ],
)
def test_registries(image: str, expected: list[str]) -> None:
    assert judge("registries", REGISTRIES, image) == expected


# --- tier ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "source", "expected"),
    [
        ("official", None, []),
        ("verified_publisher", None, []),
        (
            "sponsored_oss",
            None,
            [
                "docker.io/mycorp/app is in trusted-content tier 'sponsored_oss'; "
                "rule r1 allows official, verified_publisher"
            ],
        ),
        (
            "none",
            "Docker Hub",
            [
                "docker.io/mycorp/app is in trusted-content tier 'none' (from Docker Hub); "
                "rule r1 allows official, verified_publisher"
            ],
        ),
    ],
)
def test_tier(tier: str, source: str | None, expected: list[str]) -> None:
    facts = ImageFacts(tier=tier, tier_source=source)
    assert judge("tier", "[verified_publisher, official]", "mycorp/app", facts) == expected


# --- digest and denyTags ------------------------------------------------------------------------

NOT_PINNED = (
    "is not pinned by digest; rule r1 requires name@sha256:... "
    "(run `image-policy pin` or use the digest the registry reports)"
)


@pytest.mark.parametrize(
    ("value", "image", "expected"),
    [
        ("true", "nginx:1.25", [f"docker.io/library/nginx:1.25 {NOT_PINNED}"]),
        ("true", "nginx", [f"docker.io/library/nginx {NOT_PINNED}"]),
        ("true", f"nginx@{SHA}", []),
        ("true", f"nginx:1.25@{SHA}", []),
        ("false", "nginx", []),
    ],
)
def test_digest(value: str, image: str, expected: list[str]) -> None:
    assert judge("digest", value, image) == expected


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (
            "nginx",
            [
                "docker.io/library/nginx uses tag 'latest' (no tag means latest); "
                "rule r1 denies tags latest"
            ],
        ),
        (
            "nginx:latest",
            ["docker.io/library/nginx:latest uses tag 'latest'; rule r1 denies tags latest"],
        ),
        (
            f"nginx:latest@{SHA}",
            [f"docker.io/library/nginx:latest@{SHA} uses tag 'latest'; rule r1 denies tags latest"],
        ),
        (f"nginx@{SHA}", []),  # a digest and no tag is not `latest`
        (
            "nginx:1.0-dev",
            ["docker.io/library/nginx:1.0-dev uses tag '1.0-dev'; rule r1 denies tags *-dev"],
        ),
        ("nginx:dev", []),
        ("nginx:1.25", []),
        ("nginx:Latest", []),  # tags are case-sensitive
        ("nginx:latest2", []),
    ],
)
def test_deny_tags(image: str, expected: list[str]) -> None:
    assert judge("denyTags", '["latest", "*-dev"]', image) == expected


# --- maxLayers and maxSize ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (single(layers=1), []),
        (single(layers=30), []),
        (single(layers=31), ["docker.io/acme/app:latest has 31 layers; rule r1 allows at most 30"]),
        (single(layers=41), ["docker.io/acme/app:latest has 41 layers; rule r1 allows at most 30"]),
        (single(layers=None), []),  # not known: evaluate reports it through onResolveError
        (
            index(
                PlatformFacts("linux/amd64", layers=30),
                PlatformFacts("linux/arm64/v8", layers=31),
                PlatformFacts(ATTESTATION_PLATFORM, layers=99),
            ),
            ["docker.io/acme/app:latest (linux/arm64/v8) has 31 layers; rule r1 allows at most 30"],
        ),
    ],
)
def test_max_layers(facts: ImageFacts, expected: list[str]) -> None:
    assert judge("maxLayers", "30", "acme/app:latest", facts) == expected


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (single(size=500 * MIB), []),
        (single(size=1), []),
        (
            single(size=500 * MIB + 1),
            ["ghcr.io/o/app is 524288001 bytes compressed; rule r1 allows at most 524288000 bytes"],
        ),
        (
            single(size=750 * MIB),
            ["ghcr.io/o/app is 750.0 MiB compressed; rule r1 allows at most 500.0 MiB"],
        ),
        (single(size=None), []),
        (
            index(
                PlatformFacts("linux/amd64", size=2 * 1024**3), PlatformFacts("linux/arm64", size=9)
            ),
            ["ghcr.io/o/app (linux/amd64) is 2.0 GiB compressed; rule r1 allows at most 500.0 MiB"],
        ),
    ],
)
def test_max_size(facts: ImageFacts, expected: list[str]) -> None:
    assert judge("maxSize", "500MiB", "ghcr.io/o/app", facts) == expected


# --- platforms ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("required", "facts", "expected"),
    [
        (
            "[linux/amd64, linux/arm64]",
            index(
                PlatformFacts("linux/amd64"),
                PlatformFacts("linux/arm64/v8"),
                PlatformFacts(ATTESTATION_PLATFORM),
            ),
            [],
        ),
        (
            "[linux/amd64, linux/arm64]",
            index(PlatformFacts("linux/amd64"), PlatformFacts(ATTESTATION_PLATFORM)),
            ["ghcr.io/o/app offers linux/amd64; rule r1 requires linux/arm64 too"],
        ),
        (
            "[linux/amd64, linux/arm64]",
            single(layers=3),
            ["ghcr.io/o/app offers linux/amd64; rule r1 requires linux/arm64 too"],
        ),
        (
            "[linux/amd64, linux/arm64]",
            index(PlatformFacts(ATTESTATION_PLATFORM)),
            ["ghcr.io/o/app offers no platforms; rule r1 requires linux/amd64, linux/arm64"],
        ),
        ("[linux/*]", index(PlatformFacts("linux/arm/v7")), []),
        ("[linux/arm]", index(PlatformFacts("linux/arm/v7")), []),
        (
            "[linux/arm]",
            index(PlatformFacts("linux/arm/v6")),
            ["ghcr.io/o/app offers linux/arm/v6; rule r1 requires linux/arm too"],
        ),
    ],
)
def test_platforms(required: str, facts: ImageFacts, expected: list[str]) -> None:
    assert judge("platforms", required, "ghcr.io/o/app", facts) == expected


# --- nonRootUser --------------------------------------------------------------------------------

NEEDS_NON_ROOT = "rule r1 requires a non-root USER"


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        (None, [f"ghcr.io/o/app runs as no USER (root); {NEEDS_NON_ROOT}"]),
        ("", [f"ghcr.io/o/app runs as no USER (root); {NEEDS_NON_ROOT}"]),
        ("  ", [f"ghcr.io/o/app runs as no USER (root); {NEEDS_NON_ROOT}"]),
        ("0", [f"ghcr.io/o/app runs as user '0'; {NEEDS_NON_ROOT}"]),
        ("00", [f"ghcr.io/o/app runs as user '00'; {NEEDS_NON_ROOT}"]),
        ("root", [f"ghcr.io/o/app runs as user 'root'; {NEEDS_NON_ROOT}"]),
        ("0:0", [f"ghcr.io/o/app runs as user '0:0'; {NEEDS_NON_ROOT}"]),
        ("root:root", [f"ghcr.io/o/app runs as user 'root:root'; {NEEDS_NON_ROOT}"]),
        ("0:1000", [f"ghcr.io/o/app runs as user '0:1000'; {NEEDS_NON_ROOT}"]),
        ("1000", []),
        ("1000:0", []),  # the root group is not the root user
        ("app", []),
        ("nobody:nogroup", []),
        ("10", []),
    ],
)
def test_non_root_user(user: str | None, expected: list[str]) -> None:
    facts = single(user=user, config_known=True)
    assert judge("nonRootUser", "true", "ghcr.io/o/app", facts) == expected


def test_non_root_user_false_allows_root() -> None:
    assert judge("nonRootUser", "false", "ghcr.io/o/app", single(user="root")) == []


def test_non_root_user_names_each_index_entry() -> None:
    facts = index(
        PlatformFacts("linux/amd64", user="1000"),
        PlatformFacts("linux/arm64", user="0"),
    )
    assert judge("nonRootUser", "true", "ghcr.io/o/app", facts) == [
        f"ghcr.io/o/app (linux/arm64) runs as user '0'; {NEEDS_NON_ROOT}"
    ]


# --- maxAge -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        (NOW, []),
        (NOW - timedelta(days=90), []),
        (
            NOW - timedelta(days=90, seconds=1),
            ["ghcr.io/o/app was built 90 days ago (2026-03-03); rule r1 allows at most 90d"],
        ),
        (
            NOW - timedelta(days=400),
            ["ghcr.io/o/app was built 400 days ago (2025-04-27); rule r1 allows at most 90d"],
        ),
        (NOW + timedelta(days=1), []),  # a clock skew in the future is not "old"
        (datetime(2026, 3, 3, 12, 0), []),  # a naive timestamp reads as UTC: exactly 90 days
        (
            None,
            [
                "ghcr.io/o/app has no creation time in its config; "
                "rule r1 requires images newer than 90d"
            ],
        ),
    ],
)
def test_max_age(created: datetime | None, expected: list[str]) -> None:
    facts = single(created=created, config_known=True)
    assert judge("maxAge", "90d", "ghcr.io/o/app", facts) == expected


def test_max_age_with_a_naive_clock() -> None:
    facts = single(created=NOW - timedelta(days=91), config_known=True)
    naive = NOW.replace(tzinfo=None)
    assert judge("maxAge", "90d", "ghcr.io/o/app", facts, now=naive) == [
        "ghcr.io/o/app was built 91 days ago (2026-03-02); rule r1 allows at most 90d"
    ]


def test_max_age_in_hours() -> None:
    facts = single(created=NOW - timedelta(hours=13), config_known=True)
    assert judge("maxAge", "12h", "ghcr.io/o/app", facts) == [
        "ghcr.io/o/app was built 0 days ago (2026-05-31); rule r1 allows at most 12h"
    ]


# --- labels -------------------------------------------------------------------------------------

LABELS = '{team: null, version: "\\\\d+\\\\.\\\\d+"}'


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"team": "web", "version": "1.2"}, []),
        ({"team": "", "version": "10.20", "other": "x"}, []),  # presence: any value, even empty
        ({"version": "1.2"}, ["ghcr.io/o/app lacks label team; rule r1 requires it"]),
        (
            {"team": "web", "version": "1.2.3"},  # the regex must match the whole value
            [
                "ghcr.io/o/app has label version='1.2.3'; "
                "rule r1 requires it to match '\\\\d+\\\\.\\\\d+'"
            ],
        ),
        (
            {},
            [
                "ghcr.io/o/app lacks label team; rule r1 requires it",
                "ghcr.io/o/app lacks label version; rule r1 requires it",
            ],
        ),
        (
            None,
            [
                "ghcr.io/o/app lacks label team; rule r1 requires it",
                "ghcr.io/o/app lacks label version; rule r1 requires it",
            ],
        ),
    ],
)
def test_labels(labels: dict[str, str] | None, expected: list[str]) -> None:
    shown = MappingProxyType(labels) if labels is not None else None
    facts = single(labels=shown, config_known=True)
    assert judge("labels", LABELS, "ghcr.io/o/app", facts) == expected


def test_labels_as_a_list_of_names() -> None:
    facts = single(labels=MappingProxyType({"team": "web"}), config_known=True)
    assert judge("labels", "[team]", "ghcr.io/o/app", facts) == []
    assert judge("labels", "[team, owner]", "ghcr.io/o/app", facts) == [
        "ghcr.io/o/app lacks label owner; rule r1 requires it"
    ]


# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "value"),
    [
        ("digest", "true", True),
        ("nonRootUser", "false", False),
        ("maxLayers", "1", 1),
        ("maxSize", "1", 1),
        ("maxSize", "1KiB", 1024),
        ("maxAge", "1h30m", 5400.0),
        ("maxAge", "60", 60.0),
        ("tier", "[none, official]", frozenset({"none", "official"})),
    ],
)
def test_parse(name: str, text: str, value: object) -> None:
    assert setting(name, text) == value


@pytest.mark.parametrize(
    ("name", "text", "where", "message"),
    [
        ("registries", "ghcr.io", "1:1", 'expected a list of strings, got "ghcr.io"'),
        ("registries", "[]", "1:1", "expected a non-empty list"),
        (
            "registries",
            "[ghcr.io/o]",
            "1:2: [0]",
            "invalid registry pattern 'ghcr.io/o' (expected a host like ghcr.io)",
        ),
        (
            "tier",
            "[gold]",
            "1:2: [0]",
            "expected one of official | verified_publisher | sponsored_oss | none, got 'gold'",
        ),
        ("digest", "'yes'", "1:1", 'expected true or false, got "yes"'),
        ("digest", "1", "1:1", "expected true or false, got 1"),
        ("denyTags", "[]", "1:1", "expected a non-empty list"),
        ("denyTags", "['a b']", "1:2: [0]", "invalid tag pattern 'a b'"),
        ("maxLayers", "0", "1:1", "expected a positive integer, got 0"),
        ("maxLayers", "-3", "1:1", "expected a positive integer, got -3"),
        ("maxLayers", "1.5", "1:1", "expected a positive integer, got 1.5"),
        ("maxLayers", "true", "1:1", "expected a positive integer, got true"),
        ("maxLayers", "ten", "1:1", 'expected a positive integer, got "ten"'),
        ("maxSize", "big", "1:1", 'expected a size like 500MiB, got "big"'),
        ("maxSize", "0", "1:1", "expected a positive size, got 0"),
        (
            "platforms",
            "[linux]",
            "1:2: [0]",
            "invalid platform 'linux' (expected os/arch[/variant], e.g. linux/amd64)",
        ),
        ("nonRootUser", "1", "1:1", "expected true or false, got 1"),
        (
            "maxAge",
            "ninety",
            "1:1",
            'expected a duration like 90d, 12h, 5m, 30s or 1h30m, got "ninety"',
        ),
        ("maxAge", ".inf", "1:1", "duration too long (at most 10000 years), got inf"),
        (
            "labels",
            "5",
            "1:1",
            "expected a mapping of label names to value regexes (or null), got 5",
        ),
        (
            "labels",
            "{}",
            "1:1",
            "expected a mapping of label names to value regexes (or null), got a mapping",
        ),
        ("labels", "[]", "1:1", "expected a non-empty list"),
        (
            "labels",
            "{a: '[z-a]'}",
            "1:5: .a",
            "invalid regular expression: bad character range z-a at position 1",
        ),
    ],
)
def test_parse_rejects(name: str, text: str, where: str, message: str) -> None:
    """`where` is `LINE:COL` or `LINE:COL: SUFFIX` (the path below `require.NAME`)."""
    position, _, suffix = where.partition(": ")
    assert parse_errors(name, text) == [f"t.yaml:{position}: require.{name}{suffix}: {message}"]


def test_check_specs_are_complete() -> None:
    """Each check is registered under its name, reads a known fact, and is documented."""
    assert list(checks.CHECKS) == [
        "registries",
        "tier",
        "digest",
        "denyTags",
        "tagMatchesDigest",
        "maxLayers",
        "maxSize",
        "platforms",
        "nonRootUser",
        "maxAge",
        "labels",
        "signatures",
        "attestations",
    ]
    facts = {
        "reference",
        "tier",
        "platforms",
        "manifest",
        "config",
        "tag",
        "signatures",
        "attestations",
    }
    for name, spec in checks.CHECKS.items():
        assert spec.name == name
        assert spec.fact in facts
        assert spec.doc.strip()
        assert spec.schema


def test_subject_label() -> None:
    ref = parse("ghcr.io/o/app:1")
    entry = PlatformFacts("linux/arm64")
    on_index = checks.Subject(ref, index(entry), (entry,), "r", NOW)
    on_single = checks.Subject(ref, single(), (entry,), "r", NOW)
    assert on_index.label(entry) == "ghcr.io/o/app:1 (linux/arm64)"
    assert on_index.label() == "ghcr.io/o/app:1"
    assert on_single.label(entry) == "ghcr.io/o/app:1"
