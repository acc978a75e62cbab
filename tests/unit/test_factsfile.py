"""Tests for policy/factsfile.py: facts files (what is known about images, for offline checks),
their located errors, and the FactsResolver that answers from them."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from policy import factsfile
from policy.deadline import Deadline
from policy.errors import InputError
from policy.facts import NO_NEEDS, ImageFacts, PlatformFacts, offline_tier
from policy.reference import parse

SHA_A = "sha256:" + "a" * 64
SHA_B = "sha256:" + "b" * 64
SHA_C = "sha256:" + "c" * 64

VALID = f"""\
images:
  nginx:1.25:
    digest: {SHA_A}
    tier: official
    platforms:
      linux/amd64: {{digest: {SHA_B}, layers: 7, size: 70MiB, user: "",
                    created: 2026-01-01T00:00:00Z, labels: {{team: web}}}}
      linux/arm64/v8: {{layers: 8, size: 68MiB}}
      unknown/unknown: {{digest: {SHA_C}}}
  localhost:5000/app:1:
    platform: linux/arm64
    layers: 3
    size: 12MiB
    user: 1000
    created: 2026-01-02
  ghcr.io/o/app@{SHA_C}:
    digest: {SHA_C}
  mycorp/app:2:
    tier: verified_publisher
    user: null
"""


def facts_of(text: str) -> dict[str, ImageFacts]:
    return factsfile.parse_facts(textwrap.dedent(text), "facts.yaml")


def test_valid_facts_file() -> None:
    facts = factsfile.parse_facts(VALID, "facts.yaml")
    assert list(facts) == [
        "docker.io/library/nginx:1.25",
        "localhost:5000/app:1",
        f"ghcr.io/o/app@{SHA_C}",
        "docker.io/mycorp/app:2",
    ]
    nginx = facts["docker.io/library/nginx:1.25"]
    assert (nginx.digest, nginx.index, nginx.tier, nginx.tier_source) == (
        SHA_A,
        True,
        "official",
        "facts file",
    )
    amd64, arm64, attestation = nginx.platforms
    assert amd64 == PlatformFacts(
        "linux/amd64",
        digest=SHA_B,
        layers=7,
        size=70 * 1024**2,
        user="",
        created=datetime(2026, 1, 1, tzinfo=UTC),
        labels={"team": "web"},
        config_known=True,
    )
    assert arm64 == PlatformFacts("linux/arm64/v8", layers=8, size=68 * 1024**2)
    assert not arm64.config_known and arm64.labels is None
    assert attestation == PlatformFacts("unknown/unknown", digest=SHA_C)
    assert nginx.image_platforms() == (amd64, arm64)

    app = facts["localhost:5000/app:1"]
    assert (app.index, app.digest, app.tier) == (False, None, None)
    assert app.platforms == (
        PlatformFacts(
            "linux/arm64",
            layers=3,
            size=12 * 1024**2,
            user="1000",
            created=datetime(2026, 1, 2, tzinfo=UTC),
            labels={},
            config_known=True,
        ),
    )

    pinned = facts[f"ghcr.io/o/app@{SHA_C}"]
    assert (pinned.digest, pinned.index, pinned.platforms) == (SHA_C, None, ())

    config_only = facts["docker.io/mycorp/app:2"]
    (entry,) = config_only.platforms
    assert (entry.platform, entry.user, entry.layers, entry.config_known) == (
        "linux/amd64",
        "",
        None,
        True,
    )


def test_size_without_layers_counts_as_a_known_manifest() -> None:
    (entry,) = facts_of("images:\n  a/b:1: {size: 1KiB}\n")["docker.io/a/b:1"].platforms
    assert (entry.layers, entry.size) == (0, 1024)


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        (
            "images: {a: [\n",
            ["facts.yaml:2:1: YAML syntax error: did not find expected node content"],
        ),
        ("", ["facts.yaml:1:1: empty facts file"]),
        ("# nothing\n", ["facts.yaml:1:1: empty facts file"]),
        (
            "imagez: {}\n",
            [
                'facts.yaml:1:1: imagez: unknown key "imagez" (did you mean "images"?)',
                "facts.yaml:1:1: missing required key 'images'",
            ],
        ),
        (
            "images: [nginx]\n",
            ["facts.yaml:1:9: images: expected a mapping of image references to facts, got a list"],
        ),
        (
            "images:\n  Nginx:1: {tier: official}\n",
            ["facts.yaml:2:3: images.Nginx:1: repository name must be lowercase"],
        ),
        (
            "images:\n  nginx: {layer: 3}\n",
            ['facts.yaml:2:11: images.nginx.layer: unknown key "layer" (did you mean "layers"?)'],
        ),
        (
            "images:\n  nginx: {tier: gold}\n",
            [
                "facts.yaml:2:17: images.nginx.tier: expected one of official | "
                'verified_publisher | sponsored_oss | none, got "gold"'
            ],
        ),
        (
            f"images:\n  nginx: {{digest: 'sha256:{'a' * 40}'}}\n",
            [
                "facts.yaml:2:19: images.nginx.digest: invalid digest: invalid digest length: "
                "sha256 needs 64 hex characters, got 40"
            ],
        ),
        (
            "images:\n  nginx: {digest: 'sha256:abc'}\n",
            [
                "facts.yaml:2:19: images.nginx.digest: invalid digest: invalid reference format: "
                "invalid digest 'sha256:abc'"
            ],
        ),
        (
            "images:\n  nginx: {layers: many, size: huge}\n",
            [
                'facts.yaml:2:19: images.nginx.layers: expected a positive integer, got "many"',
                'facts.yaml:2:31: images.nginx.size: expected a size like 500MiB, got "huge"',
            ],
        ),
        (
            "images:\n  nginx: {user: [root]}\n",
            ["facts.yaml:2:17: images.nginx.user: expected a user name or uid, got a list"],
        ),
        (
            "images:\n  nginx: {created: yesterday}\n",
            [
                "facts.yaml:2:20: images.nginx.created: expected a timestamp like "
                '2026-01-01T00:00:00Z, got "yesterday"'
            ],
        ),
        (
            "images:\n  nginx: {created: 2026-02-30}\n",
            [
                "facts.yaml:2:20: images.nginx.created: expected a timestamp like "
                '2026-01-01T00:00:00Z, got "2026-02-30"'
            ],
        ),
        (
            "images:\n  nginx: {labels: {a: 1}}\n",
            [
                "facts.yaml:2:19: images.nginx.labels: expected a mapping of label names to "
                "strings, got a mapping"
            ],
        ),
        (
            "images:\n  nginx: {platforms: []}\n",
            [
                "facts.yaml:2:22: images.nginx.platforms: expected a mapping of platforms to "
                "facts, got a list"
            ],
        ),
        (
            "images:\n  nginx:\n    platforms:\n      linux/amd64: {layers: 0, tier: x}\n",
            [
                'facts.yaml:4:32: images.nginx.platforms.linux/amd64.tier: unknown key "tier" '
                "(expected one of: digest, layers, size, user, created, labels, "
                "attestations)",
                "facts.yaml:4:29: images.nginx.platforms.linux/amd64.layers: expected a positive "
                "integer, got 0",
            ],
        ),
        (
            "images:\n  nginx: null\n",
            ["facts.yaml:2:10: images.nginx: expected a mapping, got nothing (null)"],
        ),
    ],
)
def test_facts_file_errors(text: str, errors: list[str]) -> None:
    with pytest.raises(factsfile.FactsFileError) as info:
        factsfile.parse_facts(text, "facts.yaml")
    assert str(info.value).splitlines() == errors
    assert isinstance(info.value, InputError)


def test_load_facts(tmp_path: Path) -> None:
    path = tmp_path / "facts.yaml"
    path.write_text(VALID)
    assert factsfile.load_facts(path) == factsfile.parse_facts(VALID, str(path))
    with pytest.raises(factsfile.FactsFileError, match=r"missing.yaml: cannot read facts file"):
        factsfile.load_facts(tmp_path / "missing.yaml")
    path.write_text("images: [x]\n")
    with pytest.raises(factsfile.FactsFileError, match=rf"^{path}:1:9: images: expected"):
        factsfile.load_facts(path)


# --- FactsResolver ------------------------------------------------------------------------------

RESOLVER = factsfile.FactsResolver(factsfile.parse_facts(VALID, "facts.yaml"))
MISSING = ("digest", "platforms", "manifest", "config")


def test_resolver_answers_recorded_facts() -> None:
    recorded = RESOLVER.lookup(parse("nginx:1.25"))
    assert recorded.tier == "official" and recorded.tier_source == "facts file"
    assert recorded.digest == SHA_A and len(recorded.platforms) == 3
    assert dict(recorded.errors) == {}


def test_resolver_fills_in_the_offline_tier() -> None:
    app = RESOLVER.lookup(parse("localhost:5000/app:1"))
    assert (app.tier, app.tier_source) == ("none", "offline rule")
    assert app.platforms[0].layers == 3
    assert dict(app.errors) == {}


def test_resolver_finds_name_at_digest_for_a_tag_and_digest() -> None:
    found = RESOLVER.lookup(parse(f"ghcr.io/o/app:v1@{SHA_C}"))
    assert found.digest == SHA_C
    assert found.tier == "none"


@pytest.mark.parametrize(
    ("image", "tier", "tier_error"),
    [
        ("redis:7", "official", None),
        ("ghcr.io/o/other:1", "none", None),
        ("mycorp/other:1", None, "docker.io/mycorp/other:1 has no tier in the facts file"),
    ],
)
def test_resolver_misses_become_errors(
    image: str, tier: str | None, tier_error: str | None
) -> None:
    ref = parse(image)
    found = RESOLVER.lookup(ref)
    assert found.tier == tier
    assert found.index is None and found.platforms == () and found.digest is None
    expected = {fact: f"{ref} is not in the facts file" for fact in MISSING}
    if tier_error:
        expected["tier"] = tier_error
    assert dict(found.details) == expected
    # What a pod author could read is the class alone, the same for every file and image.
    assert dict(found.errors) == dict.fromkeys(expected, "not recorded in the facts file")


def test_resolver_names_its_source_and_resolves_in_order() -> None:
    resolver = factsfile.FactsResolver({}, source="facts file ci.yaml")
    refs = [parse("ghcr.io/a/b:1"), parse("nginx")]
    found = resolver.resolve([(r, NO_NEEDS) for r in refs], deadline=Deadline.never())
    assert [f.details["digest"] for f in found] == [
        "ghcr.io/a/b:1 is not in the facts file ci.yaml",
        "docker.io/library/nginx is not in the facts file ci.yaml",
    ]
    assert [f.tier for f in found] == ["none", "official"]


@pytest.mark.parametrize(
    ("registry", "repository", "tier"),
    [
        ("docker.io", "library/nginx", "official"),
        ("docker.io", "library/a/b", None),
        ("docker.io", "mycorp/app", None),
        ("docker.io", "bitnami/redis", None),
        ("ghcr.io", "library/nginx", "none"),
        ("localhost:5000", "app", "none"),
    ],
)
def test_offline_tier(registry: str, repository: str, tier: str | None) -> None:
    assert offline_tier(registry, repository) == tier


def test_a_pinned_reference_keeps_its_digest_even_with_a_recorded_tier() -> None:
    digest = "sha256:" + "e" * 64
    text = f"images:\n  ghcr.io/a/b@{digest}: {{tier: none, layers: 2}}\n"
    resolver = factsfile.FactsResolver(factsfile.parse_facts(text, "facts.yaml"))
    found = resolver.lookup(parse(f"ghcr.io/a/b:1@{digest}"))
    assert (found.digest, found.tier, found.errors) == (digest, "none", {})


def test_an_entry_keyed_by_tag_answers_for_its_digest() -> None:
    """`nginx:1.25` with `digest: D` is used for `nginx:1.25@D` and `nginx@D` (and confirms
    the tag); another digest, or another repository with D, is not in the file."""
    digest = "sha256:" + "4" * 64
    resolver = factsfile.FactsResolver(
        factsfile.parse_facts(
            f"images:\n  nginx:1.25:\n    digest: {digest}\n    layers: 7\n    user: '101'\n",
            "f.yaml",
        )
    )
    from policy.facts import Needs

    needs = Needs(manifest=True, config=True, tag=True)
    pinned, bare, other, elsewhere = resolver.resolve(
        [
            (parse(f"nginx:1.25@{digest}"), needs),
            (parse(f"nginx@{digest}"), needs),
            (parse("nginx:1.25@sha256:" + "5" * 64), needs),
            (parse(f"redis:7@{digest}"), needs),
        ],
        deadline=Deadline(1),
    )
    assert [p.layers for p in pinned.platforms] == [7]
    assert (pinned.tag_digest, pinned.tag_match) == (digest, True)
    assert [p.layers for p in bare.platforms] == [7]
    assert "manifest" in other.errors and other.tag_match is False
    assert "manifest" in elsewhere.errors


def test_the_readme_facts_example_allows_its_pinned_reference(tmp_path: Path) -> None:
    """The README's facts example, judged by rules/default.yaml: nginx:1.25@<its digest> is
    allowed, nginx:1.25 is denied (not pinned)."""
    import io
    import re

    from policy import cli

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    section = readme[readme.index("## Facts files (offline)") :]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block is not None
    facts = tmp_path / "facts.yaml"
    facts.write_text(block.group(1))
    digest = re.search(r"digest: (sha256:[0-9a-f]{64})", block.group(1))
    assert digest is not None
    rules = str(root / "rules" / "default.yaml")

    def check(image: str) -> int:
        return cli.main(
            ["check", "--rules", rules, "--facts", str(facts), "--image", image],
            out=io.StringIO(),
            err=io.StringIO(),
        )

    assert check(f"nginx:1.25@{digest.group(1)}") == 0
    assert check("nginx:1.25") == 1
