"""What the settings file configures, as frozen values: `Settings`, a registry's
`RegistrySettings` (with its `RegistryAuth`) and the shared cache's `SharedCacheSettings`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from policy.egress import Address, EgressPolicy, Mode, Network
from policy.k8s import workloads
from policy.patterns import Glob, ImagePattern

DEFAULT_OWN_NAMESPACE = "image-policy"


@dataclass(frozen=True)
class RegistryAuth:
    """`registries.<host>.auth`: a username and password (never shown by `repr`)."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"RegistryAuth(username={self.username!r}, password=***)"


@dataclass(frozen=True)
class RegistrySettings:
    """`registries.<host>`: its mirrors, CA file, `insecure`, trusted token realms, auth."""

    mirrors: tuple[str, ...] = ()
    ca: str | None = None
    insecure: bool = False
    token_realms: tuple[str, ...] = ()
    auth: RegistryAuth | None = None


@dataclass(frozen=True)
class SharedCacheSettings:
    """`cache.shared`: the Redis (or Valkey) tier shared by every replica."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca: str | None = None
    key_prefix: str = "image-policy:"
    connect_timeout: float = 0.05
    command_timeout: float = 0.025
    lease: float = 3.0
    content_ttl: float = 7 * 24 * 3600.0
    max_entry_bytes: int = 4 * 1024 * 1024
    max_connections: int = 64
    break_after: int = 3
    break_for: float = 5.0


@dataclass(frozen=True)
class Settings:
    """The settings file, read; what it leaves out has the defaults below."""

    registries: Mapping[str, RegistrySettings] = field(default_factory=lambda: MappingProxyType({}))
    docker_config: str | None = None
    pull_secrets: tuple[str, ...] = ()
    docker_hub_api: str = "https://hub.docker.com"
    tier_ttl: float = 24 * 3600.0
    # (tier, pattern) in file order: the first match wins.
    tier_catalog: tuple[tuple[str, ImagePattern], ...] = ()
    tag_ttl: float = 300.0
    cache_max_bytes: int = 256 * 1024 * 1024
    shared_cache: SharedCacheSettings | None = None
    """`cache.shared`: the Redis tier; None (the default) keeps every cache in-process."""
    memo_bytes: int = 32 * 1024 * 1024
    """The webhook's and the services' warm-path memos together (judged reviews, batches,
    plans, decisions), outside `cache_max_bytes`."""
    per_registry: int = 16
    hub_in_flight: int = 4
    break_after: int = 5
    break_for: float = 5.0
    patience: float = 2.5
    """A registry whose oldest lookup in flight has run this long is slow: lookups queued for
    it give up at once instead of waiting for their deadline."""
    max_images: int = 1000
    """Image sites one review may hold; a review with more is denied at once."""
    request_timeout: float = 5.0
    decision_timeout: float = 8.0
    exclude_namespaces: tuple[str, ...] = ("kube-system", DEFAULT_OWN_NAMESPACE)
    recheck_unchanged: bool = False
    mutate_pin: bool = False
    break_glass: bool = False
    # egress.allow / egress.deny: CIDRs and host globs (see policy/egress.py)
    egress_allow: tuple[Network | Glob, ...] = ()
    egress_deny: tuple[Network | Glob, ...] = ()
    # workloads: (group, kind) → image paths, over workloads.BUILTIN_TABLE
    workload_table: workloads.Table = field(default_factory=lambda: workloads.BUILTIN_TABLE)
    source: str | None = None

    def registry(self, name: str) -> RegistrySettings:
        return self.registries.get(name, RegistrySettings())

    def egress_policy(self, mode: Mode, *, own: Iterable[Address] = ()) -> EgressPolicy:
        """The egress policy these settings describe in `mode`: `egress.allow`/`deny`, plus
        every host they configure (registries, their mirrors and token realms, the Docker Hub
        API) allowed by name; `own`: the pod's addresses (refused in webhook mode)."""
        allow_nets = tuple(e for e in self.egress_allow if not isinstance(e, Glob))
        allow_hosts = tuple(e for e in self.egress_allow if isinstance(e, Glob))
        deny_nets = tuple(e for e in self.egress_deny if not isinstance(e, Glob))
        deny_hosts = tuple(e for e in self.egress_deny if isinstance(e, Glob))
        configured: list[str] = [self.docker_hub_api]
        for name, registry in self.registries.items():
            configured.append(name)
            configured.extend(registry.mirrors)
            configured.extend(registry.token_realms)
        policy = EgressPolicy(mode, allow_hosts, allow_nets, deny_hosts, deny_nets, frozenset(own))
        return policy.with_endpoints(configured)
