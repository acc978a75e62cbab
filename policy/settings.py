"""The settings file (`--config FILE` or `IMAGE_POLICY_CONFIG`): registries, credentials,
caches and timeouts, validated with the same file:line:column errors as rule files.

```yaml
registries:
  docker.io:
    mirrors: ["https://mirror.example.com"]
  registry.corp.example:
    ca: /etc/image-policy/corp-ca.pem
    insecure: false
    tokenRealms: ["https://auth.corp.example/token"]   # token realms trusted explicitly
    auth: {username: robot, passwordFile: /var/run/secrets/corp/password}
dockerConfig: /var/run/secrets/pull/.dockerconfigjson
pullSecrets: [/var/run/secrets/other/.dockerconfigjson]
dockerHub: {api: "https://hub.docker.com", tierTTL: 24h}
tiers:                          # operator catalog: first matching entry wins, in file order
  verified_publisher: ["docker.io/acme/**"]
  official: ["registry.k8s.io/**"]
cache:
  tagTTL: 5m
  maxBytes: 256MiB
  memoBytes: 32MiB
  shared:                    # a second tier shared by every replica (policy/sharedcache.py)
    url: rediss://redis.image-policy.svc:6379/0     # redis:// or rediss:// (TLS)
    username: image-policy   # ACL user (optional)
    passwordFile: /var/run/secrets/redis/password   # or passwordEnv: REDIS_PASSWORD
    ca: /etc/image-policy/redis-ca.pem              # rediss:// only; else the system CAs
    keyPrefix: "image-policy:"
    timeouts: {connect: 50ms, command: 25ms}        # per Redis call; then a miss
    lease: 3s                # one replica fetches, the others wait for its answer this long
    contentTTL: 7d           # manifests and configs (tags: as long as the resolver remembers)
    maxEntryBytes: 4MiB      # larger entries are neither written nor read
    maxConnections: 64       # per worker process
    breakAfter: 3            # consecutive Redis failures that skip Redis ...
    breakFor: 5s             # ... for this long, then one call probes it
timeouts: {request: 5s, decision: 8s}
bulkheads:                   # what one slow or dead registry may hold
  perRegistry: 16            # lookups in flight per registry (its index children: as many again)
  dockerHub: 4               # Docker Hub API requests in flight
  breakAfter: 5              # consecutive timeouts that short-circuit a registry ...
  breakFor: 5s               # ... for this long, then one request probes it
  patience: 2.5s             # a registry whose oldest lookup has run this long is slow:
                             # lookups queued for it give up at once
review: {maxImages: 1000}    # image sites per review; more: denied at once
excludeNamespaces: [kube-system, image-policy]   # allowed without lookups (webhook)
recheckUnchanged: false      # on UPDATE, re-check images identical to oldObject's
mutate: {pin: true}          # /mutate pins allowed tag references to their digest
breakGlass: false            # ImageReview: break-glass.image-policy.k8s.io/* allows and audits
egress:                      # where the resolver may connect (policy/egress.py); configured
  allow: ["10.20.0.0/16", "*.corp.example"]   # registries, mirrors and realms always may
  deny: ["10.20.99.0/24"]                     # refused whatever else says
workloads:                   # custom kinds' image paths (over the built-in table)
  example.com/Runner:        # group/Kind (Kind alone for the core group)
    podSpecs: ["spec.pod"]
    images: ["spec.steps[*].image"]
```
When `excludeNamespaces` is not set, it is `kube-system` plus the webhook's own namespace
(`$POD_NAMESPACE`, else `image-policy`).

The file may hold secrets (`auth.password`), and its errors reach the unauthenticated
`/readyz`, the log and the CLI's stderr, so they never repeat what the file holds: each names
the location, the key's path, what was expected and the *type* found ("expected a non-empty
string, got an integer"), never a value, an unknown key's text or a file's contents.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit

from policy import units
from policy.egress import Address, EgressPolicy, Mode, Network, parse_entry
from policy.errors import Location, SettingsError, SettingsErrors
from policy.facts import TIERS
from policy.k8s import workloads
from policy.patterns import Glob, ImagePattern, image_pattern
from policy.reference import LOCALHOST, canonical_host
from policy.yamlsrc import Node, Reader, join, load

ENV_VAR = "IMAGE_POLICY_CONFIG"

_TOP_KEYS = (
    "registries",
    "dockerConfig",
    "pullSecrets",
    "dockerHub",
    "tiers",
    "cache",
    "timeouts",
    "excludeNamespaces",
    "recheckUnchanged",
    "mutate",
    "breakGlass",
    "egress",
    "workloads",
    "bulkheads",
    "review",
)
_BULKHEAD_KEYS = ("perRegistry", "dockerHub", "breakAfter", "breakFor", "patience")
DEFAULT_OWN_NAMESPACE = "image-policy"
_REGISTRY_KEYS = ("mirrors", "ca", "insecure", "tokenRealms", "auth")
_AUTH_KEYS = ("username", "password", "passwordFile")
_SIZE_UNITS = "units B, KB, MB, GB, KiB, MiB, GiB"
_CACHE_KEYS = ("tagTTL", "maxBytes", "memoBytes", "shared")
_SHARED_KEYS = (
    "url",
    "username",
    "passwordFile",
    "passwordEnv",
    "ca",
    "keyPrefix",
    "timeouts",
    "lease",
    "contentTTL",
    "maxEntryBytes",
    "maxConnections",
    "breakAfter",
    "breakFor",
)


@dataclass(frozen=True)
class RegistryAuth:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"RegistryAuth(username={self.username!r}, password=***)"


@dataclass(frozen=True)
class RegistrySettings:
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


def _url(reader: Reader, node: Node, path: str) -> str | None:
    text = reader.string(node, path)
    if text is None:
        return None
    if not text.startswith(("https://", "http://")):
        reader.error(node, path, f"expected an http(s) URL, got {reader.found(node)}")
        return None
    return text.rstrip("/")


def _registry_name(reader: Reader, node: Node, name: str) -> str | None:
    if not name or "/" in name or any(c.isspace() for c in name):
        # Not repeated: a key that is no host name may be anything (a pasted secret).
        message = "expected a registry host like ghcr.io as the key (no '/' or spaces)"
        reader.error(node, "registries", message, at_key=True)
        return None
    lowered = name.lower()
    if lowered != LOCALHOST and "." not in lowered and ":" not in lowered:
        # A capital letter alone makes `NGINX/x` a host to Go, but references are canonical in
        # lower case, where `nginx` is a Docker Hub namespace.
        message = "expected a registry host like ghcr.io as the key (it has no '.' or ':')"
        reader.error(node, "registries", message, at_key=True)
        return None
    try:
        return canonical_host(name)  # `GHCR.IO:443` configures `ghcr.io`
    except ValueError:
        message = (
            "expected a registry host like ghcr.io as the key "
            "(a port from 1 to 65535, an IPv6 address that parses)"
        )
        reader.error(node, "registries", message, at_key=True)
        return None


def _egress_entry(text: str) -> Network | Glob:
    try:
        return parse_entry(text)
    except ValueError:
        # Not repeated, like every settings value.
        raise ValueError(
            "expected a CIDR like 10.0.0.0/8 or a host name like harbor.corp.example"
        ) from None


def _auth(reader: Reader, node: Node, path: str, base: Path) -> RegistryAuth | None:
    children = reader.mapping(node, path, allowed=_AUTH_KEYS, required=("username",))
    if children is None or "username" not in children:
        return None
    username = reader.string(children["username"], join(path, "username"))
    password = None
    if "password" in children and "passwordFile" in children:
        reader.error(node, path, "give password or passwordFile, not both")
        return None
    if "password" in children:
        password = reader.string(children["password"], join(path, "password"))
    elif "passwordFile" in children:
        file_path = reader.string(children["passwordFile"], join(path, "passwordFile"))
        if file_path is not None:
            try:
                password = (base / file_path).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                reader.error(
                    children["passwordFile"],
                    join(path, "passwordFile"),
                    f"cannot read password file: {_why_unreadable(exc)}",
                )
    else:
        reader.error(node, path, "missing password or passwordFile")
    if username is None or password is None:
        return None
    return RegistryAuth(username, password)


def _urls(reader: Reader, children: Mapping[str, Node], key: str, path: str) -> list[str]:
    """The valid URLs of list `children[key]` (none when absent); the others are errors."""
    urls: list[str] = []
    if key in children:
        for item_path, child in reader.items(children[key], join(path, key)):
            url = _url(reader, child, item_path)
            if url is not None:
                urls.append(url)
    return urls


def _registry(reader: Reader, node: Node, path: str, base: Path) -> RegistrySettings:
    children = reader.mapping(node, path, allowed=_REGISTRY_KEYS) or {}
    mirrors = _urls(reader, children, "mirrors", path)
    ca = None
    if "ca" in children:
        ca = reader.string(children["ca"], join(path, "ca"))
        if ca is not None and not (base / ca).is_file():
            message = "no such file (a relative path is read from the settings file's directory)"
            reader.error(children["ca"], join(path, "ca"), message)
        elif ca is not None:
            ca = str(base / ca)
    insecure = False
    if "insecure" in children:
        insecure = bool(reader.boolean(children["insecure"], join(path, "insecure")))
    realms = _urls(reader, children, "tokenRealms", path)
    auth = _auth(reader, children["auth"], join(path, "auth"), base) if "auth" in children else None
    return RegistrySettings(tuple(mirrors), ca, insecure, tuple(realms), auth)


def _duration(reader: Reader, node: Node, path: str) -> float | None:
    try:
        return units.parse_duration(node.value)
    except ValueError as exc:
        reader.error(node, path, f"{exc}, got {reader.found(node)}")
        return None


def _catalog_pattern(text: str) -> ImagePattern:
    """An image pattern; its error keeps the reason only when the reason quotes nothing."""
    try:
        return image_pattern(text)
    except ValueError as exc:
        if "'" in str(exc) or '"' in str(exc):
            raise ValueError("expected an image pattern like docker.io/acme/**") from None
        raise


def _why_unreadable(exc: OSError | UnicodeDecodeError) -> str:
    """Why a file could not be read, without its name or contents."""
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    return exc.strerror or type(exc).__name__


def _workload_table(reader: Reader, node: Node) -> workloads.Table:
    """`workloads:` — `group/Kind` (or `Kind` for the core group) → `podSpecs` and `images`
    paths (`spec.steps[*].image`), added to (or replacing) the built-in table's entries."""
    table: dict[tuple[str, str], workloads.KindImages] = dict(workloads.BUILTIN_TABLE)
    if not isinstance(node.value, dict):
        reader.expected(node, "workloads", "a mapping of group/Kind to image paths")
        return table
    for name, child in node.value.items():
        path = f"workloads.{name}"
        group, _, kind = name.rpartition("/")
        if not kind or not kind[:1].isupper() or not kind.isalnum():
            reader.error(
                child, path, "expected group/Kind (Kind alone for the core group)", at_key=True
            )
            continue
        if workloads.pod_spec_path(kind) is not None and workloads.is_builtin_group(group):
            reader.error(child, path, f"{kind} is a built-in workload kind", at_key=True)
            continue
        entry = reader.mapping(child, path, allowed=("podSpecs", "images")) or {}
        if not entry:
            if isinstance(child.value, dict):
                reader.error(child, path, "expected podSpecs or images")
            continue
        compiled = {
            key: reader.compiled(entry[key], f"{path}.{key}", workloads.parse_path) or ()
            for key in ("podSpecs", "images")
            if key in entry
        }
        table[(group, kind)] = workloads.KindImages(
            pod_specs=compiled.get("podSpecs", ()),
            images=compiled.get("images", ()),
            source=f"settings (workloads.{name})",
        )
    return MappingProxyType(table)


def _tier_catalog(reader: Reader, node: Node) -> tuple[tuple[str, ImagePattern], ...]:
    children = reader.mapping(node, "tiers", allowed=TIERS) or {}
    catalog: list[tuple[str, ImagePattern]] = []
    for tier, child in children.items():
        if tier not in TIERS:
            continue
        path = join("tiers", tier)
        patterns = reader.compiled(child, path, _catalog_pattern) or ()
        catalog.extend((tier, found) for found in patterns)
    return tuple(catalog)


def parse_settings(
    text: str,
    filename: str,
    *,
    base: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from YAML text; raise SettingsErrors listing every located problem."""
    base = base or Path(filename).parent
    root, syntax = load(text, filename)
    reader = Reader(SettingsError, quote=False)
    reader.errors.extend(SettingsError(e.message, location=e.location, path=e.path) for e in syntax)
    if root is None:
        if reader.errors:
            raise SettingsErrors(reader.errors)
        return Settings(source=filename, exclude_namespaces=_default_excludes(env or {}))
    top = reader.mapping(root, "", allowed=_TOP_KEYS) or {}
    kwargs: dict[str, object] = {"source": filename}
    if "registries" in top:
        node = top["registries"]
        if isinstance(node.value, dict):
            registries: dict[str, RegistrySettings] = {}
            for name, child in node.value.items():
                path = f"registries.{name}"
                domain = _registry_name(reader, child, name)
                if domain is None:
                    continue
                if domain in registries:
                    reader.error(child, path, f"{domain} is configured twice", at_key=True)
                registries[domain] = _registry(reader, child, path, base)
            kwargs["registries"] = MappingProxyType(registries)
        else:
            reader.expected(node, "registries", "a mapping of registry hosts to settings")
    if "dockerConfig" in top:
        kwargs["docker_config"] = reader.string(top["dockerConfig"], "dockerConfig")
    if "pullSecrets" in top:
        secrets = reader.string_list(top["pullSecrets"], "pullSecrets")
        kwargs["pull_secrets"] = tuple(str(s) for s in secrets or ())
    if "dockerHub" in top:
        hub = reader.mapping(top["dockerHub"], "dockerHub", allowed=("api", "tierTTL")) or {}
        if "api" in hub:
            api = _url(reader, hub["api"], "dockerHub.api")
            if api is not None:
                kwargs["docker_hub_api"] = api
        if "tierTTL" in hub:
            kwargs["tier_ttl"] = _duration(reader, hub["tierTTL"], "dockerHub.tierTTL")
    if "tiers" in top:
        kwargs["tier_catalog"] = _tier_catalog(reader, top["tiers"])
    if "egress" in top:
        egress = reader.mapping(top["egress"], "egress", allowed=("allow", "deny")) or {}
        for key, attr in (("allow", "egress_allow"), ("deny", "egress_deny")):
            if key in egress:
                kwargs[attr] = reader.compiled(egress[key], f"egress.{key}", _egress_entry) or ()
    if "workloads" in top:
        kwargs["workload_table"] = _workload_table(reader, top["workloads"])
    if "cache" in top:
        cache = reader.mapping(top["cache"], "cache", allowed=_CACHE_KEYS) or {}
        if "shared" in cache:
            kwargs["shared_cache"] = _shared_cache(reader, cache["shared"], base, env or {})
        if "tagTTL" in cache:
            kwargs["tag_ttl"] = _duration(reader, cache["tagTTL"], "cache.tagTTL")
        for key, attr in (("maxBytes", "cache_max_bytes"), ("memoBytes", "memo_bytes")):
            if key in cache:
                try:
                    kwargs[attr] = units.parse_size(cache[key].value)
                except ValueError:
                    found = reader.found(cache[key])
                    message = f"expected a positive size like 256MiB ({_SIZE_UNITS}), got {found}"
                    reader.error(cache[key], f"cache.{key}", message)
    if "bulkheads" in top:
        bulkheads = reader.mapping(top["bulkheads"], "bulkheads", allowed=_BULKHEAD_KEYS) or {}
        for key, attr in (
            ("perRegistry", "per_registry"),
            ("dockerHub", "hub_in_flight"),
            ("breakAfter", "break_after"),
        ):
            if key in bulkheads:
                kwargs[attr] = reader.positive_int(bulkheads[key], f"bulkheads.{key}")
        if "breakFor" in bulkheads:
            kwargs["break_for"] = _duration(reader, bulkheads["breakFor"], "bulkheads.breakFor")
        if "patience" in bulkheads:
            kwargs["patience"] = _duration(reader, bulkheads["patience"], "bulkheads.patience")
    if "review" in top:
        review = reader.mapping(top["review"], "review", allowed=("maxImages",)) or {}
        if "maxImages" in review:
            kwargs["max_images"] = reader.positive_int(review["maxImages"], "review.maxImages")
    if "timeouts" in top:
        timeouts = (
            reader.mapping(top["timeouts"], "timeouts", allowed=("request", "decision")) or {}
        )
        for key, attr in (("request", "request_timeout"), ("decision", "decision_timeout")):
            if key in timeouts:
                kwargs[attr] = _duration(reader, timeouts[key], f"timeouts.{key}")
    if "excludeNamespaces" in top:
        names = reader.string_list(top["excludeNamespaces"], "excludeNamespaces")
        kwargs["exclude_namespaces"] = tuple(str(n) for n in names or ())
    else:
        kwargs["exclude_namespaces"] = _default_excludes(env or {})
    for key, attr in (("recheckUnchanged", "recheck_unchanged"), ("breakGlass", "break_glass")):
        if key in top:
            kwargs[attr] = reader.boolean(top[key], key)
    if "mutate" in top:
        mutate = reader.mapping(top["mutate"], "mutate", allowed=("pin",)) or {}
        if "pin" in mutate:
            kwargs["mutate_pin"] = reader.boolean(mutate["pin"], "mutate.pin")
    if reader.errors:
        raise SettingsErrors(reader.errors)
    return Settings(**{k: v for k, v in kwargs.items() if v is not None})  # type: ignore[arg-type]


def _size(reader: Reader, node: Node, path: str) -> int | None:
    try:
        return units.parse_size(node.value)
    except ValueError:
        message = f"expected a positive size like 4MiB ({_SIZE_UNITS}), got {reader.found(node)}"
        reader.error(node, path, message)
        return None


def _shared_password(
    reader: Reader, node: Node, children: Mapping[str, Node], base: Path, env: Mapping[str, str]
) -> str | None:
    """The Redis password from `passwordFile` or `passwordEnv` (never from the file itself)."""
    path = "cache.shared"
    if "passwordFile" in children and "passwordEnv" in children:
        reader.error(node, path, "give passwordFile or passwordEnv, not both")
        return None
    if "passwordFile" in children:
        child = children["passwordFile"]
        file_path = reader.string(child, join(path, "passwordFile"))
        if file_path is None:
            return None
        try:
            return (base / file_path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            message = f"cannot read password file: {_why_unreadable(exc)}"
            reader.error(child, join(path, "passwordFile"), message)
            return None
    if "passwordEnv" in children:
        child = children["passwordEnv"]
        name = reader.string(child, join(path, "passwordEnv"))
        if name is None:
            return None
        value = env.get(name)
        if not value:
            reader.error(
                child, join(path, "passwordEnv"), f"environment variable {name} is not set"
            )
            return None
        return value
    return None


def _shared_cache(
    reader: Reader, node: Node, base: Path, env: Mapping[str, str]
) -> SharedCacheSettings | None:
    """`cache.shared`. The URL names the server only: a password in it is refused (and not
    repeated), it belongs in `passwordFile` or `passwordEnv`."""
    path = "cache.shared"
    children = reader.mapping(node, path, allowed=_SHARED_KEYS, required=("url",))
    if children is None or "url" not in children:
        return None
    url = reader.string(children["url"], join(path, "url"))
    if url is not None:
        url = _redis_url(reader, children["url"], url)
    kwargs: dict[str, object] = {}
    if "username" in children:
        kwargs["username"] = reader.string(children["username"], join(path, "username"))
    kwargs["password"] = _shared_password(reader, node, children, base, env)
    if "ca" in children:
        ca = reader.string(children["ca"], join(path, "ca"))
        if ca is not None and not (base / ca).is_file():
            message = "no such file (a relative path is read from the settings file's directory)"
            reader.error(children["ca"], join(path, "ca"), message)
        elif ca is not None:
            kwargs["ca"] = str(base / ca)
    if "keyPrefix" in children:
        kwargs["key_prefix"] = reader.string(children["keyPrefix"], join(path, "keyPrefix"))
    if "timeouts" in children:
        timeouts_path = join(path, "timeouts")
        timeouts = (
            reader.mapping(children["timeouts"], timeouts_path, allowed=("connect", "command"))
            or {}
        )
        for key, attr in (("connect", "connect_timeout"), ("command", "command_timeout")):
            if key in timeouts:
                kwargs[attr] = _duration(reader, timeouts[key], join(timeouts_path, key))
    for key, attr in (("lease", "lease"), ("contentTTL", "content_ttl"), ("breakFor", "break_for")):
        if key in children:
            kwargs[attr] = _duration(reader, children[key], join(path, key))
    if "maxEntryBytes" in children:
        kwargs["max_entry_bytes"] = _size(
            reader, children["maxEntryBytes"], join(path, "maxEntryBytes")
        )
    for key, attr in (("maxConnections", "max_connections"), ("breakAfter", "break_after")):
        if key in children:
            kwargs[attr] = reader.positive_int(children[key], join(path, key))
    if url is None:
        return None
    given = {k: v for k, v in kwargs.items() if v is not None}
    return SharedCacheSettings(url=url, **given)  # type: ignore[arg-type]


def _redis_url(reader: Reader, node: Node, url: str) -> str | None:
    """A `redis://` or `rediss://` URL naming a host, without a password."""
    path = "cache.shared.url"
    if not url.startswith(("redis://", "rediss://")):
        reader.error(node, path, "expected a redis:// or rediss:// URL")
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        reader.error(node, path, "expected a redis:// or rediss:// URL with a valid host:port")
        return None
    if parts.password is not None:
        message = "put the password in passwordFile or passwordEnv, not in the URL"
        reader.error(node, path, message)
        return None
    if not parts.hostname:
        reader.error(node, path, "expected a host in the URL, like redis://redis:6379/0")
        return None
    database = parts.path.strip("/")
    if database and not database.isdigit():
        reader.error(node, path, "expected a database number as the URL's path, like /0")
        return None
    return url


def _default_excludes(env: Mapping[str, str]) -> tuple[str, ...]:
    return ("kube-system", env.get("POD_NAMESPACE") or DEFAULT_OWN_NAMESPACE)


def load_settings(
    path: str | Path | None = None, *, env: Mapping[str, str] | None = None
) -> Settings:
    """Settings from `path`, else from $IMAGE_POLICY_CONFIG, else the defaults."""
    env = os.environ if env is None else env
    chosen = path or env.get(ENV_VAR)
    if not chosen:
        return Settings(exclude_namespaces=_default_excludes(env))
    try:
        text = Path(chosen).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsErrors(
            [
                SettingsError(
                    f"cannot read settings file: {_why_unreadable(exc)}",
                    location=Location(str(chosen), 1, 1),
                )
            ]
        ) from exc
    return parse_settings(text, str(chosen), env=env)
