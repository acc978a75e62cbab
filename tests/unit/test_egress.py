"""The egress policy (pure): which host, port and address a connection may go to."""

from __future__ import annotations

import ipaddress

import pytest

from policy.egress import EgressPolicy, parse_entry
from policy.patterns import Glob

WEBHOOK = EgressPolicy(mode="webhook", own_addresses=frozenset({ipaddress.ip_address("10.1.2.3")}))
CLI = EgressPolicy(mode="cli")


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize(
    ("host", "port", "address", "webhook", "cli"),
    [
        # Public addresses: allowed in both modes.
        ("ghcr.io", 443, "140.82.112.34", None, None),
        ("2606:50c0:8000::154", 443, "2606:50c0:8000::154", None, None),
        # Cloud metadata, link-local: never (by name before any DNS, or by address).
        (
            "metadata.google.internal",
            80,
            "169.254.169.254",
            "cloud metadata service",
            "cloud metadata",
        ),
        (
            "METADATA.Google.Internal.",
            80,
            "169.254.169.254",
            "cloud metadata service",
            "cloud metadata",
        ),
        ("169.254.169.254", 443, "169.254.169.254", "link-local", "link-local"),
        ("fe80::1", 80, "fe80::1", "link-local", "link-local"),
        ("fd00:ec2::254", 80, "fd00:ec2::254", "link-local", "link-local"),
        ("100.100.100.200", 80, "100.100.100.200", "link-local", "link-local"),
        # ... also when an IPv6 address carries the IPv4 one (mapped, NAT64, 6to4, compatible).
        ("x", 443, "::ffff:169.254.169.254", "link-local", "link-local"),
        ("x", 443, "64:ff9b::a9fe:a9fe", "link-local", "link-local"),
        ("x", 443, "2002:a9fe:a9fe::1", "link-local", "link-local"),
        ("x", 443, "::169.254.169.254", "link-local", "link-local"),
        # Not unicast.
        ("0.0.0.0", 443, "0.0.0.0", "not a unicast address", "not a unicast address"),
        ("x", 443, "224.0.0.1", "not a unicast address", "not a unicast address"),
        ("x", 443, "240.0.0.1", "not a unicast address", "not a unicast address"),
        # Loopback and private networks: the webhook refuses, the CLI allows.
        ("localhost", 5000, "127.0.0.1", "loopback", None),
        ("127.1", 22, "127.0.0.1", "loopback", None),
        ("2130706433", 80, "127.0.0.1", "loopback", None),
        ("x", 80, "::1", "loopback", None),
        ("x", 80, "::ffff:127.0.0.1", "loopback", None),
        ("kubernetes.default.svc", 443, "10.96.0.1", "private network", None),
        ("x", 443, "172.16.5.4", "private network", None),
        ("x", 443, "192.168.1.1", "private network", None),
        ("x", 443, "100.64.0.1", "private network", None),
        ("x", 443, "fd12:3456::1", "private network", None),
        ("x", 443, "10.1.2.3", "this pod's own address", None),
    ],
)
def test_defaults_by_mode(
    host: str, port: int, address: str, webhook: str | None, cli: str | None
) -> None:
    for policy, expected in ((WEBHOOK, webhook), (CLI, cli)):
        why = policy.refusal(host, port, ip(address))
        if expected is None:
            assert why is None, (policy.mode, why)
        else:
            assert why is not None and expected in why, (policy.mode, why)


def test_configured_endpoints_are_allowed_on_their_port_only() -> None:
    policy = WEBHOOK.with_endpoints(
        ["127.0.0.1:5000", "http://127.0.0.1:39139", "harbor.corp.example", "https://auth.corp/t"]
    )
    assert policy.refusal("127.0.0.1", 5000, ip("127.0.0.1")) is None
    assert policy.refusal("127.0.0.1", 39139, ip("127.0.0.1")) is None
    assert "loopback" in (policy.refusal("127.0.0.1", 15000, ip("127.0.0.1")) or "")
    for port in (443, 80):
        assert policy.refusal("harbor.corp.example", port, ip("10.20.0.5")) is None
    assert policy.refusal("harbor.corp.example", 22, ip("10.20.0.5")) is not None
    assert policy.refusal("auth.corp", 443, ip("10.0.0.9")) is None
    assert policy.refusal("auth.corp", 80, ip("10.0.0.9")) is not None
    # A configured registry on the metadata address is the operator's explicit choice.
    explicit = WEBHOOK.with_endpoints(["169.254.169.254:5000"])
    assert explicit.refusal("169.254.169.254", 5000, ip("169.254.169.254")) is None


def test_allow_and_deny_lists() -> None:
    allow = (parse_entry("10.20.0.0/16"), parse_entry("*.corp.example"))
    deny = (parse_entry("10.20.99.0/24"), parse_entry("bad.corp.example"))
    policy = EgressPolicy(
        mode="webhook",
        allow_networks=tuple(e for e in allow if not isinstance(e, Glob)),
        allow_hosts=tuple(e for e in allow if isinstance(e, Glob)),
        deny_networks=tuple(e for e in deny if not isinstance(e, Glob)),
        deny_hosts=tuple(e for e in deny if isinstance(e, Glob)),
    )
    assert policy.refusal("x", 443, ip("10.20.1.1")) is None
    assert "egress.deny" in (policy.refusal("x", 443, ip("10.20.99.1")) or "")
    assert policy.refusal("h.corp.example", 8443, ip("192.168.0.9")) is None
    assert "egress.deny" in (policy.refusal_by_name("bad.corp.example", 443) or "")
    # deny wins over everything, even a configured endpoint
    configured = policy.with_endpoints(["bad.corp.example"])
    assert "egress.deny" in (configured.refusal("bad.corp.example", 443, ip("8.8.8.8")) or "")
    assert "egress.deny" in (
        configured.with_endpoints(["10.20.99.1"]).refusal("10.20.99.1", 443, ip("10.20.99.1")) or ""
    )


@pytest.mark.parametrize("text", ["10.0.0.0/33", "a:b", "x/y", "", "bad host"])
def test_parse_entry_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_entry(text)
