"""Tests for policy/patterns.py: normalized, anchored globs for images, hosts, tags, namespaces
and platforms."""

from __future__ import annotations

import pytest

from policy import patterns
from policy.reference import parse

SHA = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("pattern", "normalized"),
    [
        ("nginx", "docker.io/library/nginx"),
        ("nginx:1.*", "docker.io/library/nginx:1.*"),
        ("library/nginx", "docker.io/library/nginx"),
        ("docker.io/nginx", "docker.io/library/nginx"),
        ("index.docker.io/nginx", "docker.io/library/nginx"),
        ("registry-1.docker.io/mycorp/app", "docker.io/mycorp/app"),
        ("mycorp/*", "docker.io/mycorp/*"),
        ("docker.io/**", "docker.io/**"),
        ("index.docker.io/**", "docker.io/**"),
        ("docker.io/library/**", "docker.io/library/**"),
        ("library/**", "docker.io/library/**"),
        ("docker.io/*", "docker.io/library/*"),
        ("nginx*", "docker.io/library/nginx*"),
        ("**", "**"),
        ("**/nginx", "**/nginx"),
        ("**:latest", "**:latest"),
        ("ghcr.io/owner/**", "ghcr.io/owner/**"),
        ("*.gcr.io/**", "*.gcr.io/**"),
        ("localhost:5000/app", "localhost:5000/app"),
        ("test.com:5000", "docker.io/library/test.com:5000"),  # as in references: a tag
        ("  ghcr.io/o/app  ", "ghcr.io/o/app"),
    ],
)
def test_image_pattern_normalization(pattern: str, normalized: str) -> None:
    assert str(patterns.image_pattern(pattern)) == normalized


@pytest.mark.parametrize(
    ("pattern", "image", "expected"),
    [
        # Normalization on both sides.
        ("nginx", "nginx", True),
        ("nginx", "docker.io/library/nginx:1.25", True),
        ("nginx", "index.docker.io/library/nginx", True),
        ("index.docker.io/library/nginx", "nginx", True),
        ("registry-1.docker.io/mycorp/app", "mycorp/app", True),
        ("nginx", "mycorp/nginx", False),
        ("nginx", "ghcr.io/library/nginx", False),
        # `*` stays inside one path component, `**` spans them.
        ("mycorp/*", "mycorp/app", True),
        ("mycorp/*", "mycorp/team/app", False),
        ("mycorp/**", "mycorp/team/app", True),
        ("mycorp/**", "mycorp/app", True),
        ("mycorp/**", "mycorpx/app", False),
        ("ghcr.io/owner/*", "ghcr.io/owner/app", True),
        ("ghcr.io/owner/*", "ghcr.io/owner/team/app", False),
        ("ghcr.io/owner/**", "ghcr.io/owner/team/app", True),
        ("ghcr.io/*/app", "ghcr.io/owner/app", True),
        ("ghcr.io/*/app", "ghcr.io/a/b/app", False),
        ("ghcr.io/**/app", "ghcr.io/a/b/app", True),
        ("*", "nginx", True),
        ("*", "mycorp/app", False),
        ("nginx?", "nginx1", True),
        ("nginx?", "nginx", False),
        ("**", "localhost:5000/a/b", True),
        ("**", "nginx", True),
        ("**/nginx", "nginx", True),
        ("**/nginx", "ghcr.io/o/nginx", True),
        ("**/nginx", "ghcr.io/o/nginx-x", False),
        # `docker.io/**` is all of Docker Hub, not only library/.
        ("docker.io/**", "nginx", True),
        ("docker.io/**", "mycorp/app", True),
        ("docker.io/**", "mycorp/team/app", True),
        ("docker.io/**", "ghcr.io/o/app", False),
        ("docker.io/*", "nginx", True),
        ("docker.io/*", "mycorp/app", False),
        # Anchoring: a pattern never matches a longer host or name.
        ("docker.io/myco*", "mycorp", True),
        ("docker.io/myco*/**", "mycorp/app", True),
        ("docker.io/myco*/**", "docker.io.evil.com/mycorp/app", False),
        ("docker.io/**", "docker.io.evil.com/x/y", False),
        ("docker.io/myco*", "docker.io.evil.com/mycorp", False),
        ("myregistry.io/**", "myregistry.io/team/app", True),
        ("myregistry.io/**", "myregistry.io.evil.com/team/app", False),
        ("myregistry.io/**", "evil.com/myregistry.io/app", False),
        ("myregistry.io/**", "myregistry.io:5000/app", False),
        ("ghcr.io/owner/app", "ghcr.io/owner/app2", False),
        ("ghcr.io/owner/app", "ghcr.io/owner/app/sub", False),
        # In the host, `*` stays inside one DNS label.
        ("*.gcr.io/**", "eu.gcr.io/project/image", True),
        ("*.gcr.io/**", "a.b.gcr.io/project/image", False),
        ("*.gcr.io/**", "gcr.io/project/image", False),
        ("*.gcr.io/**", "evil.com/x.gcr.io/image", False),
        ("**.gcr.io/**", "a.b.gcr.io/project/image", True),
        ("localhost:*/**", "localhost:5000/app", True),
        ("localhost:5000/**", "localhost:5001/app", False),
        # Tag globs: no tag counts as latest; a digest-only reference has no tag to match.
        ("nginx:1.*", "nginx:1.25", True),
        ("nginx:1.*", "nginx:1.25.3-alpine", True),
        ("nginx:1.*", "nginx:2", False),
        ("nginx:1.*", "nginx", False),
        ("nginx:latest", "nginx", True),
        ("nginx:latest", "nginx:latest", True),
        ("nginx:latest", f"nginx@{SHA}", False),
        ("nginx:1.*", f"nginx@{SHA}", False),
        ("nginx:1.*", f"nginx:1.25@{SHA}", True),
        ("nginx", f"nginx@{SHA}", True),
        ("**:latest", "ghcr.io/a/b", True),
        ("**:latest", "ghcr.io/a/b:v1", False),
        ("**:*-dev", "ghcr.io/a/b:1.0-dev", True),
        # Hosts are canonical on both sides: no spelling of a host escapes its pattern.
        ("docker.io/**", "registry-1.docker.io:443/evilcorp/miner:1.0", True),
        ("docker.io/**", "index.docker.io:443/evilcorp/miner:1.0", True),
        ("docker.io/**", "INDEX.DOCKER.IO/evilcorp/miner:1.0", True),
        ("docker.io/**", "Registry-1.Docker.IO/evilcorp/miner:1.0", True),
        ("docker.io/**", "registry.hub.docker.com/evilcorp/miner", True),
        ("ghcr.io/**", "ghcr.io:443/x/y:1", True),
        ("ghcr.io/**", "GHCR.IO/x/y:1", True),
        ("ghcr.io/**", "ghcr.io:0443/x/y:1", True),
        ("GHCR.IO:443/x/*", "ghcr.io/x/y", True),
        ("registry-1.docker.io:443/mycorp/*", "mycorp/app", True),
        ("ghcr.io/**", "ghcr.io:8443/x/y", False),
        ("docker.io/**", "docker.io:5000/x/y", False),
        ("docker.io/**", "hub.docker.com/x/y", False),
        ("example.com:80/**", "example.com/x", False),
        ("[::1]:5000/**", "[0:0::1]:05000/x", True),
    ],
)
def test_image_pattern_matches(pattern: str, image: str, expected: bool) -> None:
    assert patterns.image_pattern(pattern).matches(parse(image)) is expected


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("", "empty image pattern"),
        ("   ", "empty image pattern"),
        (f"nginx@{SHA}", "not digests"),
        ("nginx app", "characters a reference cannot contain"),
        ("ngin$x", "characters a reference cannot contain"),
        ("a***b", r"use \* for one path component and \*\* for any number"),
        ("docker.io/MyCorp/*", "uppercase letters in the repository path"),
        ("ghcr.io/Owner/app", "uppercase letters in the repository path"),
        ("ghcr.io/", "empty path component"),
        ("ghcr.io//app", "empty path component"),
        ("/app", "empty path component"),
        ("nginx:", "invalid tag pattern ''"),
        ("nginx:a+b", "characters a reference cannot contain"),
        ("ghcr.io:0/**", "invalid port 0"),
        ("ghcr.io:99999/**", "invalid port 99999"),
    ],
)
def test_image_pattern_rejects(pattern: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        patterns.image_pattern(pattern)


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("ghcr.io", "ghcr.io", True),
        ("GHCR.io", "ghcr.io", True),
        ("myregistry.io", "myregistry.io", True),
        ("myregistry.io", "myregistry.io.evil.com", False),
        ("myregistry.io", "evil-myregistry.io", False),
        ("myregistry.io", "myregistry.io:5000", False),
        ("*.gcr.io", "eu.gcr.io", True),
        ("*.gcr.io", "a.b.gcr.io", False),
        ("*.gcr.io", "gcr.io", False),
        ("*.gcr.io", "eu.gcr.io.evil.com", False),
        ("**.gcr.io", "a.b.gcr.io", True),
        ("localhost:5000", "localhost:5000", True),
        ("localhost:5000", "localhost", False),
        ("localhost:*", "localhost:5000", True),
        ("index.docker.io", "docker.io", True),
        ("registry-1.docker.io", "docker.io", True),
        ("docker.io", "docker.io", True),
        ("registry.hub.docker.com", "docker.io", True),
        ("Index.Docker.IO:443", "docker.io", True),
        ("ghcr.io:443", "ghcr.io", True),
        ("ghcr.io:0443", "ghcr.io", True),
        ("ghcr.io:8443", "ghcr.io", False),
        ("hub.docker.com", "docker.io", False),
        ("[::1]:5000", "[::1]:5000", True),
        ("*", "ghcr.io", False),
        ("*", "localhost", True),
        ("**", "a.b.c:5000", True),
    ],
)
def test_registry_glob(pattern: str, host: str, expected: bool) -> None:
    assert patterns.registry_glob(pattern).matches(host) is expected


@pytest.mark.parametrize(
    "pattern",
    ["", "  ", "ghcr.io/owner", "https://ghcr.io", "ghcr io", "ghcr.io@x", "my_registry.io"],
)
def test_registry_glob_rejects(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"invalid registry pattern .* \(expected a host like"):
        patterns.registry_glob(pattern)


@pytest.mark.parametrize(
    ("pattern", "problem"), [("ghcr.io:0", "invalid port 0"), ("[::1::]", "IPv6")]
)
def test_registry_glob_rejects_impossible_hosts(pattern: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        patterns.registry_glob(pattern)


@pytest.mark.parametrize(
    ("pattern", "tag", "expected"),
    [
        ("latest", "latest", True),
        ("latest", "latest2", False),
        ("latest", "Latest", False),
        ("*-dev", "1.0-dev", True),
        ("*-dev", "dev", False),
        ("*-dev", "1.0-dev1", False),
        ("1.*", "1.25.3", True),
        ("v?", "v1", True),
        ("v?", "v10", False),
        ("*", "anything.at_all-1", True),
    ],
)
def test_tag_glob(pattern: str, tag: str, expected: bool) -> None:
    assert patterns.tag_glob(pattern).matches(tag) is expected


@pytest.mark.parametrize("pattern", ["", "bad tag", "a/b", "a:b", "a@b"])
def test_tag_glob_rejects(pattern: str) -> None:
    with pytest.raises(ValueError, match="invalid tag pattern"):
        patterns.tag_glob(pattern)


@pytest.mark.parametrize(
    ("pattern", "namespace", "expected"),
    [
        ("*", "default", True),
        ("prod", "prod", True),
        ("prod", "prod-eu", False),
        ("prod", "preprod", False),
        ("prod-*", "prod-eu", True),
        ("prod-*", "prod", False),
        ("team-?", "team-a", True),
        ("team-?", "team-ab", False),
    ],
)
def test_namespace_glob(pattern: str, namespace: str, expected: bool) -> None:
    assert patterns.namespace_glob(pattern).matches(namespace) is expected


@pytest.mark.parametrize("pattern", ["", "Prod", "a_b", "a.b", "a/b", "prod "])
def test_namespace_glob_rejects(pattern: str) -> None:
    with pytest.raises(ValueError, match="invalid namespace pattern"):
        patterns.namespace_glob(pattern)


@pytest.mark.parametrize(
    ("platform", "normalized"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/arm64", "linux/arm64"),
        ("linux/arm64/v8", "linux/arm64"),
        ("linux/aarch64", "linux/arm64"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/arm/v6", "linux/arm/v6"),
        ("Linux/AMD64", "linux/amd64"),
        ("windows/amd64", "windows/amd64"),
        ("unknown/unknown", "unknown/unknown"),
        ("linux", "linux"),
    ],
)
def test_normalize_platform(platform: str, normalized: str) -> None:
    assert patterns.normalize_platform(platform) == normalized


@pytest.mark.parametrize(
    ("pattern", "platform", "expected"),
    [
        ("linux/amd64", "linux/amd64", True),
        ("linux/amd64", "linux/arm64", False),
        ("linux/arm64", "linux/arm64/v8", True),
        ("linux/arm64/v8", "linux/arm64", True),
        ("linux/aarch64", "linux/arm64/v8", True),
        ("linux/arm", "linux/arm/v7", True),
        ("linux/arm", "linux/arm/v6", False),
        ("linux/arm/v6", "linux/arm/v6", True),
        ("linux/*", "linux/amd64", True),
        ("linux/*", "linux/arm/v7", True),
        ("linux/*", "windows/amd64", False),
        ("*/amd64", "windows/amd64", True),
        ("*/amd64", "linux/arm64", False),
        ("*", "linux/arm/v7", True),
        ("*", "windows/amd64", True),
        ("linux/amd64", "linux/amd64/v3", False),
    ],
)
def test_platform_glob(pattern: str, platform: str, expected: bool) -> None:
    glob = patterns.platform_glob(pattern)
    assert glob.matches(patterns.normalize_platform(platform)) is expected


@pytest.mark.parametrize(
    "pattern", ["", "linux", "Linux/amd64", "linux/amd64/v8/x", "linux//amd64", "linux amd64"]
)
def test_platform_glob_rejects(pattern: str) -> None:
    with pytest.raises(ValueError, match=r"invalid platform .* \(expected os/arch\[/variant\]"):
        patterns.platform_glob(pattern)
