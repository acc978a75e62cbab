"""The pure parts of `policy.tiers`: badges, picking the exact search result, the catalog and its
precedence, and the settings file's `tiers:` catalog and `dockerHub.tierTTL`."""

from __future__ import annotations

import pytest

from policy import reference, tiers
from policy.deadline import Deadline
from policy.errors import RegistryError, SettingsErrors
from policy.patterns import image_pattern
from policy.settings import Settings, parse_settings


@pytest.mark.parametrize(
    ("badge", "tier"),
    [
        ("official", "official"),
        ("verified_publisher", "verified_publisher"),
        ("open_source", "sponsored_oss"),
        ("none", "none"),
        (None, "none"),
    ],
)
def test_badge_maps_to_tier(badge: object, tier: str) -> None:
    assert tiers.badge_tier(badge) == tier


@pytest.mark.parametrize("badge", ["gold", "", "Verified_Publisher", 1, True, ["official"], {}])
def test_unknown_badge_is_a_bad_answer(badge: object) -> None:
    with pytest.raises(tiers.BadAnswer, match="unknown badge"):
        tiers.badge_tier(badge)


def _result(id_: str, badge: object, name: str | None = None) -> dict[str, object]:
    return {"id": id_, "name": name if name is not None else id_, "badge": badge}


@pytest.mark.parametrize(
    ("results", "repository", "expected_badge"),
    [
        # The exact repository is found wherever it is, not the first (better-badged) result.
        (
            [_result("acme/app-operator", "verified_publisher"), _result("acme/app", "none")],
            "acme/app",
            "none",
        ),
        # A bare official `app` must not stand for acme/app.
        ([_result("app", "official"), _result("acme/app", None)], "acme/app", None),
        # Matching by `name` when `id` is opaque.
        ([_result("0f3c", "open_source", name="acme/app")], "acme/app", "open_source"),
        # An official image may be listed by its bare name.
        ([_result("nginx", "official")], "library/nginx", "official"),
        # Prefixes and suffixes are not the repository.
        ([_result("acme/ap", "official"), _result("acme/appx", "official")], "acme/app", "-"),
        ([], "acme/app", "-"),
    ],
)
def test_exact_result(results: list[object], repository: str, expected_badge: object) -> None:
    found = tiers.exact_result({"total": len(results), "results": results}, repository)
    if expected_badge == "-":
        assert found is None
    else:
        assert found is not None
        assert found["badge"] == expected_badge


@pytest.mark.parametrize(
    "document",
    [None, [], "results", {"total": 0}, {"results": {}}, {"results": ["acme/app"]}],
)
def test_exact_result_rejects_undocumented_shapes(document: object) -> None:
    with pytest.raises(tiers.BadAnswer):
        tiers.exact_result(document, "acme/app")


@pytest.mark.parametrize(
    ("text", "namespace"),
    [
        ("acme/app", "acme"),
        ("nginx", "library"),
        ("docker.io/acme/team/app:1", "acme"),
        ("ghcr.io/acme/app", None),
        ("localhost:5000/acme/app", None),
    ],
)
def test_hub_namespace(text: str, namespace: str | None) -> None:
    assert tiers.hub_namespace(reference.parse(text)) == namespace


CATALOG = (
    ("verified_publisher", image_pattern("docker.io/acme/**")),
    ("none", image_pattern("docker.io/library/busybox")),
    ("official", image_pattern("registry.k8s.io/**")),
    ("sponsored_oss", image_pattern("registry.corp.example:5000/oss/*")),
    # Never reached for acme: the earlier entry wins.
    ("none", image_pattern("docker.io/acme/app")),
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Catalog first, in file order.
        ("acme/app:1.0", ("verified_publisher", "catalog")),
        ("acme/db", ("verified_publisher", "catalog")),
        # The catalog beats the offline rule for library/ and other registries.
        ("busybox", ("none", "catalog")),
        ("registry.k8s.io/pause:3.9", ("official", "catalog")),
        ("registry.corp.example:5000/oss/tool", ("sponsored_oss", "catalog")),
        # Then the offline rule.
        ("nginx:1.25", ("official", "offline rule")),
        ("registry.corp.example:5000/oss/deep/tool", ("none", "offline rule")),
        ("ghcr.io/acme/app", ("none", "offline rule")),
        # Only Docker Hub can tell.
        ("bitnami/redis", None),
        ("docker.io/library/a/b", None),
    ],
)
def test_known_tier_precedence(text: str, expected: tuple[str, str] | None) -> None:
    ref = reference.parse(text)
    assert tiers.known_tier(CATALOG, ref) == expected
    assert tiers.Tiers(CATALOG).known(ref) == expected


def test_without_hub_an_unplaced_image_has_an_unknown_tier() -> None:
    source = tiers.Tiers(CATALOG)
    with pytest.raises(
        RegistryError, match=r"tier of docker.io/bitnami/redis is unknown: no Docker Hub"
    ):
        source.tier(reference.parse("bitnami/redis"), deadline=Deadline(1))
    assert source.tier(reference.parse("acme/app"), deadline=Deadline(1)) == (
        "verified_publisher",
        "catalog",
    )


def test_catalog_rejects_unknown_tiers() -> None:
    with pytest.raises(ValueError, match="unknown tier 'gold'"):
        tiers.Tiers((("gold", image_pattern("docker.io/**")),))


# --- settings -----------------------------------------------------------------------------------

SETTINGS = """\
dockerHub:
  api: http://127.0.0.1:9/
  tierTTL: 12h
tiers:
  none: ["docker.io/acme/legacy"]
  verified_publisher:
    - docker.io/acme/**
    - quay.io/acme/*
  official: [registry.k8s.io/**]
"""


def test_settings_catalog_keeps_file_order() -> None:
    settings = parse_settings(SETTINGS, "settings.yaml")
    assert settings.docker_hub_api == "http://127.0.0.1:9"
    assert settings.tier_ttl == 12 * 3600
    assert [(tier, str(p)) for tier, p in settings.tier_catalog] == [
        ("none", "docker.io/acme/legacy"),
        ("verified_publisher", "docker.io/acme/**"),
        ("verified_publisher", "quay.io/acme/*"),
        ("official", "registry.k8s.io/**"),
    ]
    source = tiers.Tiers(settings.tier_catalog)
    assert source.known(reference.parse("acme/legacy")) == ("none", "catalog")
    assert source.known(reference.parse("acme/app")) == ("verified_publisher", "catalog")


def test_settings_defaults() -> None:
    settings = parse_settings("cache: {tagTTL: 1m}\n", "s.yaml")
    assert settings.tier_ttl == Settings().tier_ttl == 24 * 3600
    assert settings.tier_catalog == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "tiers:\n  verified: [docker.io/acme/**]\n",
            's.yaml:2:3: tiers: unknown key (did you mean "verified_publisher"?)',
        ),
        (
            "tiers:\n  official:\n    - docker.io/acme/***\n",
            "s.yaml:3:7: tiers.official[0]: use * for one path component",
        ),
        (
            "tiers:\n  none: [nginx@sha256:" + "a" * 64 + "]\n",
            "s.yaml:2:10: tiers.none[0]: image patterns match names and tags, not digests",
        ),
        ("tiers:\n  none: docker.io/**\n", "s.yaml:2:9: tiers.none: expected a list of strings"),
        ("tiers:\n  none: []\n", "s.yaml:2:9: tiers.none: expected a non-empty list"),
        ("tiers: [official]\n", "s.yaml:1:8: tiers: expected a mapping"),
        ("dockerHub: {tierTTL: soon}\n", "s.yaml:1:22: dockerHub.tierTTL: expected a duration"),
        ("dockerHub: {tierTTL: 0}\n", "s.yaml:1:22: dockerHub.tierTTL: expected a positive"),
        ("dockerHub: {tierTTl: 1h}\n", "s.yaml:1:13: dockerHub: unknown key (did you mean"),
    ],
)
def test_settings_catalog_errors_are_located(text: str, message: str) -> None:
    with pytest.raises(SettingsErrors) as info:
        parse_settings(text, "s.yaml")
    assert any(str(e).startswith(message) for e in info.value.errors), [
        str(e) for e in info.value.errors
    ]
