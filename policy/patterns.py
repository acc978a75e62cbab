"""Anchored glob patterns for image names, registry hosts, tags and namespaces (pure).

Image patterns are normalized like references (`nginx` means `docker.io/library/nginx`; hosts
are canonical as `reference.canonical_host` makes them: `GHCR.IO:443` means `ghcr.io`, and
every host on `reference.DOCKER_HUB_HOSTS` means `docker.io`). `*` stays inside one path
component (or one host label), `**` spans components; every match is anchored at both ends, so
`docker.io/myco*` never matches `docker.io.evil.com/...` and `myregistry.io` never matches
`myregistry.io.evil.com`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from policy import reference

_NAME_CHARS = re.compile(r"^[A-Za-z0-9._\-/:\[\]*?]+$")
_TAG_CHARS = re.compile(r"^[\w.\-*?]+$")
_HOST_CHARS = re.compile(r"^[A-Za-z0-9.\-:\[\]*?]+$")
_NAMESPACE_CHARS = re.compile(r"^[a-z0-9\-*?]+$")


def _glob_regex(glob: str, *, one: str, many: str) -> str:
    out = []
    i = 0
    while i < len(glob):
        if glob.startswith("**", i):
            out.append(many)
            i += 2
        elif glob[i] == "*":
            out.append(one + "*")
            i += 1
        elif glob[i] == "?":
            out.append(one)
            i += 1
        else:
            out.append(re.escape(glob[i]))
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class ImagePattern:
    """A normalized image-name glob with an optional tag glob (`docker.io/library/nginx:1.*`)."""

    text: str
    name: str
    tag: str | None
    _name_re: re.Pattern[str]
    _tag_re: re.Pattern[str] | None

    def matches(self, ref: reference.Reference) -> bool:
        if not self._name_re.fullmatch(ref.name):
            return False
        if self._tag_re is None:
            return True
        tag = ref.tag
        if tag is None:
            if ref.digest is not None:
                return False
            tag = "latest"
        return self._tag_re.fullmatch(tag) is not None

    def __str__(self) -> str:
        return self.text


def image_pattern(text: str) -> ImagePattern:
    """Compile an image glob; ValueError says what is wrong with it."""
    raw = text.strip()
    if not raw:
        raise ValueError("empty image pattern")
    if "@" in raw:
        raise ValueError("image patterns match names and tags, not digests (remove the @...)")
    if not _NAME_CHARS.match(raw):
        raise ValueError(f"image pattern {raw!r} has characters a reference cannot contain")
    name, tag = raw, None
    colon = raw.rfind(":")
    if colon > raw.rfind("/"):
        # As in references, a colon after the last slash starts the tag (`test.com:5000` is
        # `docker.io/library/test.com` with tag glob `5000`).
        name, tag = raw[:colon], raw[colon + 1 :]
    if tag is not None and not _TAG_CHARS.match(tag):
        raise ValueError(f"invalid tag pattern {tag!r}")
    if "***" in name:
        raise ValueError("use * for one path component and ** for any number, not ***")
    if "" in name.split("/"):
        raise ValueError(f"image pattern {raw!r} has an empty path component")
    if name == "**" or name.startswith("**/"):
        normalized = name
        name_regex = _glob_regex(normalized, one="[^/]", many=".*")
    else:
        domain, path = reference.split_domain(name)
        try:
            reference.canonical_host(domain)  # an impossible port or IPv6 address
        except ValueError as exc:
            raise ValueError(f"image pattern {raw!r}: {exc}") from None
        first, _, rest = name.partition("/")
        if path == "library/**" and rest == "**" and first != reference.OFFICIAL_NAMESPACE:
            # `docker.io/**` is everything on Docker Hub, not only `library/`: `**` already
            # spans the namespace that normalization would insert.
            path = "**"
        normalized = f"{domain}/{path}"
        # The host is matched like a registry glob (`*` stays inside one DNS label), the path
        # like a repository glob (`*` stays inside one path component).
        name_regex = (
            _glob_regex(domain, one="[^.:/]", many="[^/]*")
            + "/"
            + _glob_regex(path, one="[^/]", many=".*")
        )
    path_part = normalized.split("/", 1)[1] if "/" in normalized else ""
    if path_part != path_part.lower():
        raise ValueError(
            f"image pattern {raw!r} has uppercase letters in the repository path; "
            "repository names are always lowercase"
        )
    name_re = re.compile(name_regex)
    tag_re = re.compile(_glob_regex(tag, one=".", many=".*")) if tag is not None else None
    full = normalized if tag is None else f"{normalized}:{tag}"
    return ImagePattern(full, normalized, tag, name_re, tag_re)


@dataclass(frozen=True)
class Glob:
    """An anchored glob over a flat string (hosts, tags, namespaces)."""

    text: str
    _re: re.Pattern[str]

    def matches(self, value: str) -> bool:
        return self._re.fullmatch(value) is not None

    def __str__(self) -> str:
        return self.text


def registry_glob(text: str) -> Glob:
    """A registry host glob: `*` stays inside one DNS label, `**` spans labels."""
    raw = text.strip().lower()
    if not raw or not _HOST_CHARS.match(raw) or "/" in raw:
        raise ValueError(f"invalid registry pattern {text!r} (expected a host like ghcr.io)")
    try:
        raw = reference.canonical_host(raw)  # `GHCR.IO:443` is `ghcr.io`
    except ValueError as exc:
        raise ValueError(f"invalid registry pattern {text!r}: {exc}") from None
    return Glob(raw, re.compile(_glob_regex(raw, one="[^.:/]", many="[^/]*")))


def host_glob(text: str) -> Glob:
    """A DNS name glob (egress policy): lower-cased, `*` inside one label, `**` across labels;
    no port and no folding of Docker Hub's hosts (the name as connected to)."""
    raw = text.strip().lower().rstrip(".")
    if not raw or not _HOST_CHARS.match(raw) or ":" in raw or "/" in raw:
        raise ValueError(
            f"invalid host pattern {text!r} (expected a name like harbor.corp.example)"
        )
    return Glob(raw, re.compile(_glob_regex(raw, one="[^.]", many=".*")))


def tag_glob(text: str) -> Glob:
    """A tag glob (`latest`, `*-rc*`)."""
    if not text or not _TAG_CHARS.match(text):
        raise ValueError(f"invalid tag pattern {text!r}")
    return Glob(text, re.compile(_glob_regex(text, one=".", many=".*")))


def namespace_glob(text: str) -> Glob:
    """A Kubernetes namespace glob (`team-*`, `*`)."""
    if not text or not _NAMESPACE_CHARS.match(text):
        raise ValueError(f"invalid namespace pattern {text!r}")
    return Glob(text, re.compile(_glob_regex(text, one="[^/]", many=".*")))


_ARCH_ALIASES = {"aarch64": "arm64", "x86_64": "amd64", "x86-64": "amd64", "armhf": "arm"}
_DEFAULT_VARIANT_DROPPED = {("arm64", "v8"), ("amd64", "v1")}


def normalize_platform(text: str) -> str:
    """`os/arch[/variant]` the way containerd compares them: `linux/aarch64` and
    `linux/arm64/v8` are `linux/arm64`; `linux/arm` is `linux/arm/v7`."""
    parts = text.lower().split("/")
    if len(parts) < 2:
        return text.lower()
    os_, arch = parts[0], _ARCH_ALIASES.get(parts[1], parts[1])
    variant = parts[2] if len(parts) > 2 else ""
    if (arch, variant) in _DEFAULT_VARIANT_DROPPED:
        variant = ""
    if arch == "arm" and not variant:
        variant = "v7"
    return f"{os_}/{arch}/{variant}" if variant else f"{os_}/{arch}"


def platform_glob(text: str) -> Glob:
    """A platform pattern: `linux/amd64`, `linux/arm64/v8`, `linux/*`, `*` (all).

    Match it against `normalize_platform(...)` of a platform; `linux/*` covers variants too.
    """
    if text != "*" and not re.fullmatch(r"[a-z0-9_*-]+(/[a-z0-9_*-]+){1,2}", text):
        raise ValueError(
            f"invalid platform {text!r} (expected os/arch[/variant], e.g. linux/amd64)"
        )
    if text == "*":
        return Glob(text, re.compile(".*"))
    normalized = normalize_platform(text) if "*" not in text else text
    regex = _glob_regex(normalized, one="[^/]", many=".*")
    if normalized.endswith("/*"):
        regex += "(/[^/]*)?"  # `linux/*` also covers variants such as linux/arm/v7
    return Glob(text, re.compile(regex))
