"""The egress policy: which hosts and addresses the webhook and the CLI may connect to (pure).

Whoever writes an image string chooses the host the resolver contacts; a token realm or a
redirect is chosen by whichever registry answered. So every outgoing connection passes
`EgressPolicy.refusal(host, address)` with the address it is about to connect to (after DNS:
decimal, hex and IPv4-mapped spellings, and DNS rebinding, change nothing), in
`registry/transport`. In order:

1. `deny` (settings `egress.deny`: CIDRs and host globs) refuses, whatever else is said;
2. a host and port the operator configured (a `registries:` key, a mirror, a token realm, the
   Docker Hub API: that port only, 443 or 80 when none is written), a host listed in
   `egress.allow` (host globs, any port), or an address in an `egress.allow` CIDR, is allowed —
   even on loopback or a private network;
3. names that are cloud metadata services, and unspecified, multicast and reserved addresses
   are refused, and so are link-local addresses (169.254.0.0/16 holds every cloud's metadata
   service, fe80::/10, fd00:ec2::254 and 100.100.100.200 are AWS's and Alibaba's);
4. by the mode's defaults: the webhook refuses loopback, private networks (RFC 1918, CGNAT,
   unique-local IPv6) and the pod's own addresses; the CLI, run by an operator on a laptop or
   a CI runner, allows loopback and private networks (a local registry, a registry in the VPN);
5. everything else (public addresses) is allowed.

An IPv6 address that carries an IPv4 one (IPv4-mapped, NAT64 64:ff9b::/96, 6to4, IPv4-
compatible) is judged as the IPv4 address it reaches.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from policy import patterns

Mode = Literal["webhook", "cli"]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_HOSTS = (
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.com",
    "metadata.tencentyun.com",
)
"""Names of cloud metadata services (refused by name, before any DNS)."""

METADATA_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32")
)
"""Link-local networks and the metadata addresses outside them."""

PRIVATE_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")


def parse_entry(text: str) -> Network | patterns.Glob:
    """An `egress.allow`/`egress.deny` entry: a CIDR (`10.0.0.0/8`, `fd00::/8`, an address) or
    a host glob (`harbor.corp.example`, `*.corp.example`); ValueError says what is wrong."""
    raw = text.strip()
    try:
        return ipaddress.ip_network(raw.strip("[]"), strict=False)
    except ValueError:
        pass
    if ":" in raw or "/" in raw:
        raise ValueError("expected a CIDR (10.0.0.0/8) or a host name (harbor.corp.example)")
    return patterns.host_glob(raw)


@dataclass(frozen=True)
class EgressPolicy:
    """Decides each connection by host name and the address actually connected."""

    mode: Mode = "webhook"
    allow_hosts: tuple[patterns.Glob, ...] = ()
    allow_networks: tuple[Network, ...] = ()
    deny_hosts: tuple[patterns.Glob, ...] = ()
    deny_networks: tuple[Network, ...] = ()
    own_addresses: frozenset[Address] = field(default_factory=frozenset)
    """The pod's (or machine's) own addresses: refused in webhook mode."""
    configured: frozenset[tuple[str, int]] = frozenset()
    """(host, port) endpoints the settings configure: allowed on that port only."""

    def with_endpoints(self, urls: Iterable[str]) -> EgressPolicy:
        """This policy also allowing the endpoints of `urls` (`https://h[:p]`, `h[:p]` —
        configured registries, mirrors, realms; no port means 443 and 80)."""
        extra: set[tuple[str, int]] = set()
        for url in urls:
            parts = urlsplit(url if "://" in url else f"//{url}")
            try:
                host, port = parts.hostname, parts.port
            except ValueError:
                continue  # no valid port: the settings refused it already
            if not host:
                continue
            if port is not None:
                extra.add((_name(host), port))
            elif parts.scheme in ("http", "https"):
                extra.add((_name(host), 443 if parts.scheme == "https" else 80))
            else:
                extra |= {(_name(host), 443), (_name(host), 80)}
        return EgressPolicy(
            self.mode,
            self.allow_hosts,
            self.allow_networks,
            self.deny_hosts,
            self.deny_networks,
            self.own_addresses,
            self.configured | extra,
        )

    def refusal_by_name(self, host: str, port: int) -> str | None:
        """Why `host:port` is refused before resolving it (None: look at its addresses)."""
        name = _name(host)
        if any(g.matches(name) for g in self.deny_hosts):
            return f"{name} is denied by egress.deny"
        if self._named(name, port):
            return None
        if name in METADATA_HOSTS:
            return f"{name} is a cloud metadata service"
        return None

    def refusal(self, host: str, port: int, address: Address) -> str | None:
        """Why connecting to `address`, port `port`, for `host` is refused (None: allowed)."""
        name = _name(host)
        why = self.refusal_by_name(name, port)
        if why is not None:
            return why
        for each in _judged(address):
            why = self._address_refusal(name, port, each)
            if why is not None:
                return why
        return None

    def _named(self, name: str, port: int) -> bool:
        return (name, port) in self.configured or any(g.matches(name) for g in self.allow_hosts)

    def _address_refusal(self, name: str, port: int, address: Address) -> str | None:
        shown = f"{name} ({address})" if name != str(address) else str(address)
        if any(address in n for n in self.deny_networks):
            return f"{shown} is denied by egress.deny"
        if self._named(name, port) or any(address in n for n in self.allow_networks):
            return None
        if any(address in n for n in METADATA_NETWORKS):
            return f"{shown} is link-local (cloud metadata)"
        if address.is_loopback:
            if self.mode == "cli":
                return None
            return f"{shown} is loopback; configure the registry to allow it"
        if address.is_unspecified or address.is_multicast or address.is_reserved:
            return f"{shown} is not a unicast address"
        if self.mode == "cli":
            return None
        if address in self.own_addresses:
            return f"{shown} is this pod's own address"
        if any(address in n for n in PRIVATE_NETWORKS) or address.is_private:
            return (
                f"{shown} is on a private network; configure the registry under registries: "
                "or list it in egress.allow"
            )
        return None


def _name(host: str) -> str:
    """A host without brackets or a trailing dot, lower-cased."""
    return host.strip("[]").rstrip(".").lower()


def _judged(address: Address) -> tuple[Address, ...]:
    """The address, or the IPv4 address an IPv6 one carries (mapped, NAT64, 6to4, compatible:
    that is where the packets go)."""
    if isinstance(address, ipaddress.IPv4Address):
        return (address,)
    inner: list[Address] = []
    if address.ipv4_mapped is not None:
        inner.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        inner.append(address.sixtofour)
    packed = int(address)
    if address in _NAT64 or (address in _COMPATIBLE and packed > 1):
        inner.append(ipaddress.IPv4Address(packed & 0xFFFFFFFF))
    return tuple(inner) or (address,)
