"""Where a logical registry is reached: its configuration (mirrors, CA, plain http), the
endpoints tried in order (each mirror, then the upstream) and where its redirects may lead
(pure, table-tested)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from policy.errors import InvalidReference, RegistryError

DOCKER_HUB = "docker.io"
DOCKER_HUB_UPSTREAM = "https://registry-1.docker.io"

_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9-]+)*(?::\d{1,5})?")
_IPV6_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\](?::\d{1,5})?")


@dataclass(frozen=True)
class RegistryConfig:
    """How to reach one logical registry (from the settings file)."""

    mirrors: tuple[str, ...] = ()
    ca: str | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        for mirror in self.mirrors:
            parts = urlsplit(mirror)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"mirror {mirror!r} is not an http(s) base URL")
            if parts.query or parts.fragment or "@" in parts.netloc:
                raise ValueError(f"mirror {mirror!r} must not carry credentials, query or fragment")
            if parts.scheme == "http" and not (self.insecure or is_loopback(parts.netloc)):
                raise ValueError(f"mirror {mirror!r} uses plain http; set insecure: true to allow")


@dataclass(frozen=True)
class Endpoint:
    """One place to ask: a mirror or the upstream."""

    base: str  # scheme://netloc[/prefix], no trailing slash
    host: str  # netloc, what the authenticator is keyed on
    verify: bool | str
    mirror: bool


def endpoints(registry: str, config: RegistryConfig) -> list[Endpoint]:
    """The mirrors of `registry`, then its upstream (Docker Hub's registry host for docker.io;
    plain http for a loopback registry without a CA or an `insecure` one)."""
    if not (_HOST.fullmatch(registry) or _IPV6_HOST.fullmatch(registry)):
        raise InvalidReference(registry, "not a registry host[:port]")
    verify: bool | str = config.ca if config.ca else True
    found = [
        Endpoint(base=m.rstrip("/"), host=urlsplit(m).netloc, verify=verify, mirror=True)
        for m in config.mirrors
    ]
    if registry == DOCKER_HUB:
        upstream = DOCKER_HUB_UPSTREAM
    elif (is_loopback(registry) and config.ca is None) or config.insecure:
        upstream = f"http://{registry}"
    else:
        upstream = f"https://{registry}"
    found.append(
        Endpoint(base=upstream, host=urlsplit(upstream).netloc, verify=verify, mirror=False)
    )
    return found


def is_loopback(netloc: str) -> bool:
    """Whether `host[:port]` names this machine: localhost, 127.0.0.0/8 or [::1]."""
    host = netloc
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redirect_target(
    current: str, location: str, config: RegistryConfig, registry: str, ref: str
) -> str:
    """The absolute URL a redirect from `current` leads to; RegistryError when it is not
    http(s), carries user information, or goes to plain http from https or to a plain http
    host the registry's configuration does not allow."""
    url = urljoin(current, location)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
        raise RegistryError(
            f"{ref}: refusing redirect to a non-http(s) location",
            registry=registry,
            reference=ref,
        )
    if parts.scheme == "http" and urlsplit(current).scheme == "https":
        raise RegistryError(
            f"{ref}: refusing redirect from https to plain http host {parts.hostname}",
            registry=registry,
            reference=ref,
        )
    if parts.scheme == "http" and not (config.insecure or is_loopback(parts.netloc)):
        raise RegistryError(
            f"{ref}: refusing redirect to plain http host {parts.hostname}",
            registry=registry,
            reference=ref,
        )
    return url
