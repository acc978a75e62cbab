"""Image references, parsed exactly as github.com/distribution/reference's ParseNormalizedNamed.

Grammar (distribution/reference v0.6):

```
reference        := name [ ":" tag ] [ "@" digest ]
name             := [domain "/"] path
domain           := host [":" port]          host: domain-name | "[" IPv6 "]"
domain-name      := domain-component ("." domain-component)*
domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
port             := [0-9]+
path             := path-component ("/" path-component)*
path-component   := [a-z0-9]+ (separator [a-z0-9]+)*     separator: "." | "_" | "__" | "-"+
tag              := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
digest           := algorithm ":" [0-9a-fA-F]{32,}
algorithm        := [A-Za-z][A-Za-z0-9]* ([-_+.][A-Za-z][A-Za-z0-9]*)*
```

Normalization (ParseNormalizedNamed): the first `/`-separated component is a domain only if it
is `localhost`, contains `.` or `:`, or contains an uppercase letter; otherwise the domain is
`docker.io`. `index.docker.io` becomes `docker.io`, and a single-component Docker Hub path gets
the `library/` namespace. After that the digest is checked as go-digest's `Validate` does:
sha256, sha384 and sha512 are supported (lowercase hex of exactly 64, 96 and 128 characters),
any other algorithm is "unsupported digest algorithm".

The path (after normalization, so `library/` counts) may be at most 255 characters; since
distribution/reference v0.6.0 the domain is not counted.

Where we differ from the Go code, on purpose:
- `registry-1.docker.io`, the wire host of Docker Hub, normalizes to `docker.io` exactly as
  `index.docker.io` does, so one repository has one name.
- A first component that Go treats as a domain but that is not a valid host (`foo_bar.com/x`)
  makes Go return a reference with an empty domain; no registry can serve that, so we reject it.
- Problems are more specific than Go's single "invalid reference format" (they say which part is
  wrong); the set of accepted inputs is the same.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

from policy.errors import InvalidReference

DEFAULT_REGISTRY = "docker.io"
OFFICIAL_NAMESPACE = "library"
LOCALHOST = "localhost"
# Docker Hub's other names: the legacy "index" (normalized by the Go code) and the wire host
# (normalized by us, see the module docstring).
DOCKER_HUB_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io"})
REPOSITORY_PATH_MAX = 255
TAG_MAX = 128
# go-digest algorithms available in a Docker build (crypto/sha256 + crypto/sha512), and the
# length of their hex encoding.
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
# Only inputs up to this length are cached, so the cache cannot hold huge strings.
_CACHE_TEXT_MAX = 1024

_ALNUM = "[a-z0-9]+"
_SEPARATOR = "(?:[._]|__|-+)"
_PATH_COMPONENT = f"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH = f"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[[a-fA-F0-9:]+\]"
_DOMAIN = f"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = f"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{TAG_MAX - 1}}}"
_ALGORITHM = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*"
_DIGEST = f"{_ALGORITHM}:[0-9a-fA-F]{{32,}}"

# All used with fullmatch: unlike Python's `$`, Go's `$` never matches before a final newline.
_REFERENCE_RE = re.compile(
    f"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?"
)
_DOMAIN_RE = re.compile(_DOMAIN)
_PATH_COMPONENT_RE = re.compile(_PATH_COMPONENT)
_TAG_RE = re.compile(_TAG)
_DIGEST_RE = re.compile(_DIGEST)
_IDENTIFIER_RE = re.compile("[a-f0-9]{64}")
# go-digest's own digest grammar, which decides "invalid format" vs "unsupported algorithm".
_GO_DIGEST_RE = re.compile("[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_LOWER_HEX_RE = re.compile("[a-f0-9]+")


class Reference(NamedTuple):
    """A normalized image reference: `registry/repository[:tag][@digest]`.

    A named tuple, not a frozen dataclass: references key the resolver's caches and the
    service's memos, and a dataclass's `__hash__` is a Python call (a tuple's is C), which made
    hashing them a measurable share of a warm webhook review.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """`registry/repository`, e.g. `docker.io/library/nginx`."""
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    @property
    def familiar(self) -> str:
        """The short form docker prints: `nginx:1.25`, `mycorp/app`, `ghcr.io/o/app@sha256:…`.

        Docker Hub loses its `docker.io/` prefix, and its `library/` namespace too when nothing
        is nested under it (`library/a/b` stays).
        """
        name = self.name
        if self.registry == DEFAULT_REGISTRY:
            name = self.repository
            namespace, _, rest = name.partition("/")
            if namespace == OFFICIAL_NAMESPACE and rest and "/" not in rest:
                name = rest
        if self.tag is not None:
            name += f":{self.tag}"
        if self.digest is not None:
            name += f"@{self.digest}"
        return name

    def with_tag(self, tag: str) -> Reference:
        """This reference with `tag` (any digest is kept); InvalidReference if `tag` is invalid."""
        if _TAG_RE.fullmatch(tag) is None:
            raise InvalidReference(f"{self.name}:{tag}", f"invalid tag {tag!r}")
        return self._replace(tag=tag)

    def with_digest(self, digest: str) -> Reference:
        """This reference pinned to `digest` (any tag is kept).

        The digest must pass the same checks as in `parse` (grammar, supported algorithm,
        exact lowercase hex length), else InvalidReference.
        """
        text = f"{self.name}@{digest}"
        if _DIGEST_RE.fullmatch(digest) is None:
            raise InvalidReference(text, f"invalid digest format {digest!r}")
        _check_digest(text, digest)
        return self._replace(digest=digest)


def split_domain(name: str) -> tuple[str, str]:
    """Split a name-like string into (domain, path) with Docker's normalization, validating nothing.

    The first `/`-separated component is the domain when it is `localhost`, contains `.` or
    `:`, or has an uppercase letter; otherwise the domain is `docker.io` and the whole string is
    the path. `index.docker.io` and `registry-1.docker.io` become `docker.io`, and a Docker Hub
    path without `/` gets `library/`. Anything after the name (`:tag`, `*`) is left in the path.
    """
    first, slash, rest = name.partition("/")
    if not slash:
        return DEFAULT_REGISTRY, f"{OFFICIAL_NAMESPACE}/{name}"
    if first in DOCKER_HUB_ALIASES:
        domain, path = DEFAULT_REGISTRY, rest
    elif first == LOCALHOST or "." in first or ":" in first or first.lower() != first:
        domain, path = first, rest
    else:
        domain, path = DEFAULT_REGISTRY, name
    if domain == DEFAULT_REGISTRY and "/" not in path:
        path = f"{OFFICIAL_NAMESPACE}/{path}"
    return domain, path


def parse(text: str) -> Reference:
    """Parse and normalize `text`; raise InvalidReference saying what is wrong.

    `nginx` → `docker.io/library/nginx`; `ghcr.io/o/app:1@sha256:…` keeps both tag and digest.
    Results are cached (References are immutable).
    """
    if len(text) <= _CACHE_TEXT_MAX:
        return _parse_cached(text)
    return _parse(text)


def _parse(text: str) -> Reference:
    if text == "":
        raise InvalidReference(text, "repository name must not be empty")
    if _IDENTIFIER_RE.fullmatch(text) is not None:
        raise InvalidReference(
            text,
            "invalid repository name (64 hex chars), cannot specify 64-byte hexadecimal strings",
        )
    domain, remainder = split_domain(text)
    remote = remainder.partition(":")[0]
    if remote.lower() != remote:
        raise InvalidReference(text, "repository name must be lowercase")
    normalized = f"{domain}/{remainder}"
    match = _REFERENCE_RE.fullmatch(normalized)
    if match is None:
        lowered = normalized.lower()
        if lowered != normalized and _REFERENCE_RE.fullmatch(lowered) is not None:
            raise InvalidReference(text, "repository name must be lowercase")
        raise InvalidReference(text, _diagnose(text, domain, remainder))
    # The domain group is optional but tried first, and a domain holds no "/", so this is the
    # split Go's anchored name pattern makes of the matched name.
    registry, path = match["domain"], match["path"]
    if registry is None:
        # Go yields a reference without a domain here (e.g. `foo_bar.com/x`); see module doc.
        raise InvalidReference(text, f"invalid reference format: invalid domain {domain!r}")
    if len(path) > REPOSITORY_PATH_MAX:
        raise InvalidReference(
            text,
            f"repository name too long (max {REPOSITORY_PATH_MAX}): "
            f"{path[:40]!r}… has {len(path)} characters",
        )
    digest = match["digest"]
    if digest is not None:
        _check_digest(text, digest)
    return Reference(registry=registry, repository=path, tag=match["tag"], digest=digest)


_parse_cached = functools.lru_cache(maxsize=4096)(_parse)


def _check_digest(text: str, digest: str) -> None:
    """Apply go-digest's Validate to a digest that already matches the reference grammar."""
    algorithm, _, encoded = digest.partition(":")
    size = DIGEST_HEX_LENGTHS.get(algorithm)
    if size is None:
        if _GO_DIGEST_RE.fullmatch(digest) is None:
            raise InvalidReference(text, f"invalid digest format: algorithm {algorithm!r}")
        raise InvalidReference(text, f"unsupported digest algorithm {algorithm!r}")
    if len(encoded) != size:
        raise InvalidReference(
            text,
            f"invalid digest length: {algorithm} needs {size} hex characters, got {len(encoded)}",
        )
    if _LOWER_HEX_RE.fullmatch(encoded) is None:
        raise InvalidReference(
            text, f"invalid digest format: {algorithm} hex must be lowercase (a-f, 0-9)"
        )


def _diagnose(text: str, domain: str, remainder: str) -> str:
    """Say which part of a reference that failed the grammar is wrong, left to right."""
    if text[:1] in (":", "@"):
        return "repository name must not be empty"
    rest, at, digest = remainder.partition("@")
    path, tag = rest, None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        path, tag = rest[:colon], rest[colon + 1 :]
    problem = "invalid reference format"
    if _DOMAIN_RE.fullmatch(domain) is None:
        return f"{problem}: invalid domain {domain!r}"
    for component in path.split("/"):
        if component == "":
            return f"{problem}: empty path component"
        if _PATH_COMPONENT_RE.fullmatch(component) is None:
            return f"{problem}: invalid path component {component!r}"
    if tag is not None and _TAG_RE.fullmatch(tag) is None:
        return f"{problem}: invalid tag {tag!r}"
    if at and _DIGEST_RE.fullmatch(digest) is None:
        return f"{problem}: invalid digest {digest!r}"
    return problem
