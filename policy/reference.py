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
`docker.io`, and a single-component Docker Hub path gets the `library/` namespace. After that the
digest is checked as go-digest's `Validate` does: sha256, sha384 and sha512 are supported
(lowercase hex of exactly 64, 96 and 128 characters), any other algorithm is "unsupported digest
algorithm".

The path (after normalization, so `library/` counts) may be at most 255 characters; since
distribution/reference v0.6.0 the domain is not counted.

**One canonical identity.** Go keeps the host as written; a container runtime does not care:
`GHCR.IO/x`, `ghcr.io:443/x` and `ghcr.io:0443/x` are all pulled from `ghcr.io`, and
`registry-1.docker.io/x` from Docker Hub. So the host of every `Reference` is canonical
(`canonical_host`): lower-cased, the HTTPS port 443 dropped (but from a single label such as
`myreg:443`, which without its port would name a Docker Hub namespace; a port is written as a
decimal number without leading zeros), an IPv6 literal in its compressed form, and every host that
serves Docker Hub's registry API folded to `docker.io` (`DOCKER_HUB_HOSTS` says which and why).
Rules, exceptions, caches, credentials, mirrors, metrics and the decision log all see only that
form; the text as written stays with whoever read it (messages, file:line reports, `pin`).
Port 80 is kept: whether `host` means port 443 or 80 depends on each runtime's per-host
configuration (containerd's hosts.toml, Docker's insecure-registries), which the webhook cannot
see, so `host:80` stays a registry of its own, and a rule meant to cover both names both.

Where we differ from the Go code, on purpose:
- The canonical host above (Go folds only the exact `index.docker.io`).
- A first component that Go treats as a domain but that is not a valid host (`foo_bar.com/x`)
  makes Go return a reference with an empty domain; no registry can serve that, so we reject it.
  So is a host that is a domain only because of its capital letters (`NGINX/x`): written in
  lower case it would name a Docker Hub repository instead, so it has no canonical spelling.
- Problems are more specific than Go's single "invalid reference format" (they say which part is
  wrong); otherwise the set of accepted inputs is the same.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from policy.errors import InvalidReference

DEFAULT_REGISTRY = "docker.io"
OFFICIAL_NAMESPACE = "library"
LOCALHOST = "localhost"
HTTPS_PORT = "443"
DOCKER_HUB_HOSTS: Mapping[str, str] = MappingProxyType(
    {
        # host → why a runtime pulling from it gets Docker Hub's registry (the one table:
        # references, patterns, settings, credentials and token realms all read it).
        "docker.io": "the canonical name (distribution/reference defaultDomain); containerd "
        "and the Docker daemon send its requests to registry-1.docker.io",
        "index.docker.io": "the legacy name: distribution/reference's legacyDefaultDomain, the "
        "Docker CLI's IndexHostname and the key of its config.json (https://index.docker.io/v1/)",
        "registry-1.docker.io": "the wire host: containerd's and the Docker daemon's default "
        "registry host for docker.io",
        "registry.hub.docker.com": "an older wire name of the same service that still answers "
        "/v2/ (used by Jenkins' docker.withRegistry and accepted by docker-py)",
    }
)
"""Hosts folded to `docker.io`. Not on it, on purpose: `hub.docker.com` (the website and the
Hub REST API; its /v2/ is not the registry API, so no runtime pulls from it), `auth.docker.io`
(the token realm), `production.cloudflare.docker.com` (the blob CDN), and mirrors run by others
(`mirror.gcr.io`, `public.ecr.aws/docker/library`): they serve a copy that may lag or differ and
are registries of their own, matched by their own rules."""
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
_PORT_RE = re.compile("[0-9]+")
_IPV6_RE = re.compile(_IPV6)
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
    service's memos, and a dataclass's `__hash__` is a Python call (a tuple's is C); this saves
    ~1.5% of a warm review, the per-review named tuples together ~9% (1b, BENCHMARKS.md).
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


def canonical_host(domain: str) -> str:
    """The one spelling of a registry host[:port] (see the module docstring); ValueError when
    its port or IPv6 literal is impossible.

    `GHCR.IO:443` → `ghcr.io`, `Registry-1.Docker.IO` → `docker.io`, `[0:0::1]:05000` →
    `[::1]:5000`, `myreg:80` → `myreg:80`, `myreg:443` → `myreg:443` (without its port a
    single label would name a Docker Hub namespace, not a registry). Glob characters (a
    pattern's host) pass through.
    """
    host, port = domain.lower(), None
    colon = host.rfind(":")
    if colon > host.rfind("]"):
        host, port = host[:colon], host[colon + 1 :]
    if _IPV6_RE.fullmatch(host) is not None:  # the grammar's shape only, so no `*` either
        try:
            host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
        except ValueError:
            raise ValueError(f"invalid IPv6 address {host}") from None
    if port is not None and _PORT_RE.fullmatch(port) is not None:
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError(f"invalid port {port} (expected 1 to 65535)")
        port = str(number)
        if number == int(HTTPS_PORT) and ("." in host or ":" in host or host == LOCALHOST):
            port = None  # (a single label keeps it: `foo:443/x` is a registry, `foo/x` is not)
    if port is None:
        return DEFAULT_REGISTRY if host in DOCKER_HUB_HOSTS else host
    return f"{host}:{port}"


def split_domain(name: str) -> tuple[str, str]:
    """Split a name-like string into (canonical domain, path) with Docker's normalization.

    The first `/`-separated component is the domain when it is `localhost`, contains `.` or
    `:`, or has an uppercase letter; otherwise the domain is `docker.io` and the whole string is
    the path. The domain is made canonical (`canonical_host`; left lower-cased when it cannot
    be, for `parse` to reject), and a Docker Hub path without `/` gets `library/`. Anything
    after the name (`:tag`, `*`) is left in the path.
    """
    first, slash, rest = name.partition("/")
    if not slash:
        return DEFAULT_REGISTRY, f"{OFFICIAL_NAMESPACE}/{name}"
    if first == LOCALHOST or "." in first or ":" in first or first.lower() != first:
        try:
            domain = canonical_host(first)
        except ValueError:
            domain = first.lower()
        path = rest
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
    try:
        canonical_host(registry)  # split_domain left an impossible port or IPv6 address as is
    except ValueError as exc:
        raise InvalidReference(text, f"invalid reference format: {exc}") from None
    first = text.partition("/")[0]
    if (
        "/" in text
        and "." not in first
        and ":" not in first
        and first.lower() != first
        and first.lower() != LOCALHOST
    ):
        raise InvalidReference(
            text,
            f"invalid reference format: {first!r} is a registry host only because of its "
            "capital letters, and hosts are case-insensitive: in lower case it names a Docker "
            "Hub namespace; write the host with a '.' or a ':port'",
        )
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
