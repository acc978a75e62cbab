"""Token-realm policy: whether a Bearer realm may be contacted at all (pure, table-tested).

`realm_refusal` says why credentials (or even an anonymous request) must not go to a realm a
registry named, `realm_allowed` whether it may; `registrable_domain` is the naive eTLD+1 they
match a realm to its registry with.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import SplitResult, urlsplit

from policy import reference

DOCKER_HUB_REALM_HOST = "auth.docker.io"

# Second-level labels that, under a two-letter country TLD, act as public suffixes
# (example.co.uk, example.com.au, example.ac.jp, ...).
_GENERIC_SECOND_LEVEL = frozenset({"ac", "co", "com", "edu", "gov", "net", "org"})
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")
_ZERO_NETWORK = ipaddress.ip_network("0.0.0.0/8")

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def registrable_domain(host: str) -> str:
    """A naive eTLD+1 of a lowercase host name, used to match a token realm to its registry.

    The heuristic, without the Public Suffix List: the last two labels (`example.com` for
    `registry.example.com`), or the last three when the TLD has two letters and the label
    before it is a generic second level (`ac co com edu gov net org`: `example.co.uk`).
    A host with fewer labels than that is its own domain (`localhost`). Known limits: shared
    hosting suffixes (`github.io`, `herokuapp.com`) are treated as one domain, and country
    suffixes outside that list (`example.gv.at`) are cut one label too short.
    """
    labels = host.split(".")
    keep = 2
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _GENERIC_SECOND_LEVEL:
        keep = 3
    return ".".join(labels[-keep:])


def _split_hostport(hostport: str) -> tuple[str, int | None]:
    """Split `host[:port]` (IPv6 in brackets, or bare) into a normalized host and a port."""
    text = hostport.strip().lower()
    port: int | None = None
    if text.startswith("["):
        end = text.find("]")
        host = text[1:end] if end > 0 else text[1:]
        rest = text[end + 1 :] if end > 0 else ""
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if port_text.isdigit():
            port = int(port_text)
    else:
        host = text
    return host.rstrip("."), port


def _ip_of(host: str) -> _IP | None:
    """The IP address a host string denotes, including legacy IPv4 forms (`0xa9fea9fe`, `127.1`).

    Those legacy forms are resolved by the system's `inet_aton`, so a realm written that way
    would reach the address; treating them as addresses keeps them under the IP rules.
    """
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if host and all(c in "0123456789abcdefx." for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _forbidden_ip(ip: _IP) -> bool:
    """Link-local (169.254.0.0/16, fe80::/10), unspecified or 0.0.0.0/8: never a token realm."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_link_local or ip.is_unspecified:
        return True
    return isinstance(ip, ipaddress.IPv4Address) and ip in _ZERO_NETWORK


def _is_loopback(host: str, ip: _IP | None) -> bool:
    return host == "localhost" or (ip is not None and ip.is_loopback)


def _valid_host_name(host: str) -> bool:
    return bool(host) and all(c in _HOST_CHARS for c in host) and ".." not in host


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def _trusted_match(realm: SplitResult, host: str, trusted: Sequence[str]) -> str | None:
    """The trusted entry that covers this realm, if any.

    An entry is a host (`auth.example.com`, optionally `:port`), which trusts https realms on
    that host, or a URL prefix (`https://auth.example.com/token`), which trusts realms starting
    with it at a path boundary. Only an explicit `http://` prefix trusts a plain-http realm.
    """
    realm_port = realm.port or _default_port(realm.scheme)
    for entry in trusted:
        text = entry.strip()
        if "://" in text:
            try:
                prefix = urlsplit(text)
                prefix_port = prefix.port or _default_port(prefix.scheme)
            except ValueError:
                continue
            if (prefix.hostname or "").rstrip(".") != host or prefix.scheme != realm.scheme:
                continue
            if prefix_port != realm_port:
                continue
            base = prefix.path
            path = realm.path or "/"
            if (
                not base
                or base == "/"
                or path == base
                or path.startswith(base if base.endswith("/") else base + "/")
            ):
                return entry
        else:
            entry_host, entry_port = _split_hostport(text)
            if entry_host != host or realm.scheme != "https":
                continue
            if entry_port is None or entry_port == realm_port:
                return entry
    return None


def realm_refusal(
    realm_url: str,
    registry_host: str,
    *,
    trusted: Sequence[str] = (),
    registry: str | None = None,
) -> str | None:
    """Why credentials (or even an anonymous request) must not go to this token realm, or None.

    `registry_host` is the host actually contacted (`host[:port]`); `registry` the logical name
    used in the advice (defaults to `registry_host`). A realm is allowed when all hold:

    - it is `https`, or `http` on the registry's own host when that host is loopback
      (`localhost`, 127.0.0.0/8, ::1), or `http` under an explicit `http://` trusted prefix;
    - it is never link-local (169.254.0.0/16, fe80::/10), unspecified or 0.0.0.0/8, even if
      trusted; and an IP literal only when the registry is on that very address;
    - it is on the registry's host, on the same registrable domain (`registrable_domain`), on
      `auth.docker.io` for Docker Hub's hosts, or covered by a `trusted` entry.
    """
    name = registry or registry_host
    try:
        realm = urlsplit(realm_url.strip())
        realm.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return "refusing token realm: the realm is not a valid URL"
    host = (realm.hostname or "").rstrip(".")
    if realm.scheme not in ("http", "https") or not host:
        return "refusing token realm: the realm must be an absolute http(s) URL"
    shown = host
    if realm.username is not None or realm.password is not None:
        return f"refusing token realm {shown}: the realm URL carries user information"
    realm_ip = _ip_of(host)
    if realm_ip is None and not _valid_host_name(host):
        return f"refusing token realm {shown!r}: not a valid host name"
    if realm_ip is not None and _forbidden_ip(realm_ip):
        return f"refusing token realm {shown}: link-local or unspecified addresses are never used"
    reg_host, _ = _split_hostport(registry_host)
    reg_ip = _ip_of(reg_host)
    same_host = host == reg_host or (realm_ip is not None and realm_ip == reg_ip)
    if realm_ip is not None and not same_host:
        return f"refusing token realm {shown}: an IP address the registry {name} is not on"
    trusted_entry = _trusted_match(realm, host, trusted)
    if realm.scheme == "http" and not (
        (same_host and _is_loopback(reg_host, reg_ip))
        or (trusted_entry is not None and trusted_entry.strip().startswith("http://"))
    ):
        return (
            f"refusing token realm {shown}: plain http is only used for a loopback registry "
            "on the same host (or an explicitly trusted http:// prefix)"
        )
    if same_host or trusted_entry is not None or _related(host, reg_host, realm_ip, reg_ip):
        return None
    return (
        f"refusing token realm {shown}: not on the registry's domain "
        f"(configure registries.{name}.tokenRealms to trust it)"
    )


def _related(host: str, reg_host: str, realm_ip: _IP | None, reg_ip: _IP | None) -> bool:
    """Whether a realm on another host belongs with the registry: `auth.docker.io` for Docker
    Hub's hosts, or a host name on the registry's registrable domain."""
    if reg_host in reference.DOCKER_HUB_HOSTS and host == DOCKER_HUB_REALM_HOST:
        return True
    return (
        realm_ip is None
        and reg_ip is None
        and "." in host
        and "." in reg_host
        and registrable_domain(host) == registrable_domain(reg_host)
    )


def realm_allowed(realm_url: str, registry_host: str, *, trusted: Sequence[str] = ()) -> bool:
    """True when `realm_refusal` has no objection to this realm for this registry host."""
    return realm_refusal(realm_url, registry_host, trusted=trusted) is None
