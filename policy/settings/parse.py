"""Reading the settings file: `parse_settings` checks its top-level keys and hands each
section to its reader (in a fixed order, whatever the order in the file);
`load_settings` finds the file (`--config`, else `$IMAGE_POLICY_CONFIG`, else defaults)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from policy.egress import Network, parse_entry
from policy.errors import Location, SettingsError, SettingsErrors
from policy.facts import TIERS
from policy.k8s import workloads
from policy.patterns import Glob, ImagePattern, image_pattern
from policy.settings import fields, registries, shared
from policy.settings.model import DEFAULT_OWN_NAMESPACE, Settings
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
_CACHE_KEYS = ("tagTTL", "maxBytes", "memoBytes", "shared")


def parse_settings(
    text: str,
    filename: str,
    *,
    base: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from YAML text; raise SettingsErrors listing every located problem."""
    base = base or Path(filename).parent
    env = env or {}
    root, syntax = load(text, filename)
    reader = Reader(SettingsError, quote=False)
    reader.errors.extend(SettingsError(e.message, location=e.location, path=e.path) for e in syntax)
    if root is None:
        if reader.errors:
            raise SettingsErrors(reader.errors)
        return Settings(source=filename, exclude_namespaces=_default_excludes(env))
    top = reader.mapping(root, "", allowed=_TOP_KEYS) or {}
    kwargs: dict[str, object] = {"source": filename}
    for key, section in _SECTIONS.items():
        if key in top:
            kwargs.update(section(reader, top[key], base, env))
    if "excludeNamespaces" not in top:
        kwargs["exclude_namespaces"] = _default_excludes(env)
    if reader.errors:
        raise SettingsErrors(reader.errors)
    return Settings(**{k: v for k, v in kwargs.items() if v is not None})  # type: ignore[arg-type]


# A section's reader: (reader, the section's node, the settings file's directory, the
# environment) → `Settings` fields (a None value: not set, its error reported).
_Section = Callable[[Reader, Node, Path, Mapping[str, str]], Mapping[str, object]]


def _registries(
    reader: Reader, node: Node, base: Path, env: Mapping[str, str]
) -> dict[str, object]:
    return {"registries": registries.registries(reader, node, base)}


def _docker_config(
    reader: Reader, node: Node, base: Path, env: Mapping[str, str]
) -> dict[str, object]:
    return {"docker_config": reader.string(node, "dockerConfig")}


def _pull_secrets(
    reader: Reader, node: Node, base: Path, env: Mapping[str, str]
) -> dict[str, object]:
    secrets = reader.string_list(node, "pullSecrets")
    return {"pull_secrets": tuple(str(s) for s in secrets or ())}


def _docker_hub(
    reader: Reader, node: Node, base: Path, env: Mapping[str, str]
) -> dict[str, object]:
    hub = reader.mapping(node, "dockerHub", allowed=("api", "tierTTL")) or {}
    out: dict[str, object] = {}
    if "api" in hub:
        out["docker_hub_api"] = fields.url(reader, hub["api"], "dockerHub.api")
    if "tierTTL" in hub:
        out["tier_ttl"] = fields.duration(reader, hub["tierTTL"], "dockerHub.tierTTL")
    return out


def _tiers(reader: Reader, node: Node, base: Path, env: Mapping[str, str]) -> dict[str, object]:
    return {"tier_catalog": _tier_catalog(reader, node)}


def _egress(reader: Reader, node: Node, base: Path, env: Mapping[str, str]) -> dict[str, object]:
    egress = reader.mapping(node, "egress", allowed=("allow", "deny")) or {}
    return {
        attr: reader.compiled(egress[key], f"egress.{key}", _egress_entry) or ()
        for key, attr in (("allow", "egress_allow"), ("deny", "egress_deny"))
        if key in egress
    }


def _workloads(reader: Reader, node: Node, base: Path, env: Mapping[str, str]) -> dict[str, object]:
    return {"workload_table": _workload_table(reader, node)}


def _cache(reader: Reader, node: Node, base: Path, env: Mapping[str, str]) -> dict[str, object]:
    cache = reader.mapping(node, "cache", allowed=_CACHE_KEYS) or {}
    out: dict[str, object] = {}
    if "shared" in cache:
        out["shared_cache"] = shared.shared_cache(reader, cache["shared"], base, env)
    if "tagTTL" in cache:
        out["tag_ttl"] = fields.duration(reader, cache["tagTTL"], "cache.tagTTL")
    for key, attr in (("maxBytes", "cache_max_bytes"), ("memoBytes", "memo_bytes")):
        if key in cache:
            out[attr] = fields.size(reader, cache[key], f"cache.{key}", "256MiB")
    return out


def _bulkheads(reader: Reader, node: Node, base: Path, env: Mapping[str, str]) -> dict[str, object]:
    bulkheads = reader.mapping(node, "bulkheads", allowed=_BULKHEAD_KEYS) or {}
    out: dict[str, object] = {}
    for key, attr in (
        ("perRegistry", "per_registry"),
        ("dockerHub", "hub_in_flight"),
        ("breakAfter", "break_after"),
    ):
        if key in bulkheads:
            out[attr] = reader.positive_int(bulkheads[key], f"bulkheads.{key}")
    for key, attr in (("breakFor", "break_for"), ("patience", "patience")):
        if key in bulkheads:
            out[attr] = fields.duration(reader, bulkheads[key], f"bulkheads.{key}")
    return out


def _review(reader: Reader, node: Node, base: Path, env: Mapping[str, str]) -> dict[str, object]:
    review = reader.mapping(node, "review", allowed=("maxImages",)) or {}
    if "maxImages" not in review:
        return {}
    return {"max_images": reader.positive_int(review["maxImages"], "review.maxImages")}


def _timeouts(reader: Reader, node: Node, base: Path, env: Mapping[str, str]) -> dict[str, object]:
    timeouts = reader.mapping(node, "timeouts", allowed=("request", "decision")) or {}
    return {
        attr: fields.duration(reader, timeouts[key], f"timeouts.{key}")
        for key, attr in (("request", "request_timeout"), ("decision", "decision_timeout"))
        if key in timeouts
    }


def _exclude_namespaces(
    reader: Reader, node: Node, base: Path, env: Mapping[str, str]
) -> dict[str, object]:
    names = reader.string_list(node, "excludeNamespaces")
    return {"exclude_namespaces": tuple(str(n) for n in names or ())}


def _flag(key: str, attr: str) -> _Section:
    """The reader of a top-level boolean."""
    return lambda reader, node, base, env: {attr: reader.boolean(node, key)}


def _mutate(reader: Reader, node: Node, base: Path, env: Mapping[str, str]) -> dict[str, object]:
    mutate = reader.mapping(node, "mutate", allowed=("pin",)) or {}
    if "pin" not in mutate:
        return {}
    return {"mutate_pin": reader.boolean(mutate["pin"], "mutate.pin")}


_SECTIONS: dict[str, _Section] = {
    "registries": _registries,
    "dockerConfig": _docker_config,
    "pullSecrets": _pull_secrets,
    "dockerHub": _docker_hub,
    "tiers": _tiers,
    "egress": _egress,
    "workloads": _workloads,
    "cache": _cache,
    "bulkheads": _bulkheads,
    "review": _review,
    "timeouts": _timeouts,
    "excludeNamespaces": _exclude_namespaces,
    "recheckUnchanged": _flag("recheckUnchanged", "recheck_unchanged"),
    "breakGlass": _flag("breakGlass", "break_glass"),
    "mutate": _mutate,
}


def _egress_entry(text: str) -> Network | Glob:
    try:
        return parse_entry(text)
    except ValueError:
        # Not repeated, like every settings value.
        raise ValueError(
            "expected a CIDR like 10.0.0.0/8 or a host name like harbor.corp.example"
        ) from None


def _catalog_pattern(text: str) -> ImagePattern:
    """An image pattern; its error keeps the reason only when the reason quotes nothing."""
    try:
        return image_pattern(text)
    except ValueError as exc:
        if "'" in str(exc) or '"' in str(exc):
            raise ValueError("expected an image pattern like docker.io/acme/**") from None
        raise


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
                    f"cannot read settings file: {fields.why_unreadable(exc)}",
                    location=Location(str(chosen), 1, 1),
                )
            ]
        ) from exc
    return parse_settings(text, str(chosen), env=env)
