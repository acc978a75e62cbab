"""The checks of the reference as written and of the image's facts: registries, digest, tags,
the Docker Hub tier, platforms, manifests (layers, size) and configs (user, age, labels)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from policy import patterns, units
from policy.checks.spec import STRINGS, CheckSpec, Subject
from policy.facts import TIERS
from policy.yamlsrc import Node, Reader

# --- reference checks ---------------------------------------------------------------------------


def _parse_registries(reader: Reader, node: Node, path: str) -> object | None:
    return reader.compiled(node, path, patterns.registry_glob)


def _judge_registries(setting: object, s: Subject) -> list[str]:
    assert isinstance(setting, tuple)
    if any(g.matches(s.ref.registry.lower()) for g in setting):  # hosts are case-insensitive
        return []
    allowed = ", ".join(str(g) for g in setting)
    return [f"{s.ref} is from registry {s.ref.registry}; rule {s.rule_id} allows only {allowed}"]


def _parse_true(reader: Reader, node: Node, path: str) -> object | None:
    value = reader.boolean(node, path)
    return value


def _judge_digest(setting: object, s: Subject) -> list[str]:
    if not setting or s.ref.digest is not None:
        return []
    return [
        f"{s.ref} is not pinned by digest; rule {s.rule_id} requires name@sha256:... "
        "(run `image-policy pin` or use the digest the registry reports)"
    ]


def _parse_tag_globs(reader: Reader, node: Node, path: str) -> object | None:
    return reader.compiled(node, path, patterns.tag_glob)


def _judge_deny_tags(setting: object, s: Subject) -> list[str]:
    assert isinstance(setting, tuple)
    tag = s.ref.tag
    if tag is None:
        if s.ref.digest is not None:
            return []
        tag = "latest"
    for glob in setting:
        if glob.matches(tag):
            implicit = "" if s.ref.tag is not None else " (no tag means latest)"
            return [f"{s.ref} uses tag {tag!r}{implicit}; rule {s.rule_id} denies tags {glob}"]
    return []


def _judge_tag_matches(setting: object, s: Subject) -> list[str]:
    if not setting or s.facts.tag_match is not False:
        return []  # confirmed, or no tag beside a digest to confirm
    tag = f"tag {s.written_tag}" if s.written_tag is not None else "its tag"
    return [
        f"{s.ref}: {tag} points to {s.facts.tag_digest}, not to this digest; rule {s.rule_id} "
        "requires the tag written beside a digest to name it"
    ]


# --- tier ---------------------------------------------------------------------------------------


def _tier_name(text: str) -> str:
    if text not in TIERS:
        raise ValueError(f"expected one of {' | '.join(TIERS)}, got {text!r}")
    return text


def _parse_tiers(reader: Reader, node: Node, path: str) -> object | None:
    tiers = reader.compiled(node, path, _tier_name)
    return frozenset(tiers) if tiers else None


def _judge_tier(setting: object, s: Subject) -> list[str]:
    assert isinstance(setting, frozenset)
    tier = s.facts.tier
    if tier in setting:
        return []
    allowed = ", ".join(t for t in TIERS if t in setting)
    source = f" (from {s.facts.tier_source})" if s.facts.tier_source else ""
    return [
        f"{s.ref} is in trusted-content tier {tier!r}{source}; rule {s.rule_id} allows {allowed}"
    ]


# --- platforms ----------------------------------------------------------------------------------


def _parse_platforms(reader: Reader, node: Node, path: str) -> object | None:
    return reader.compiled(node, path, patterns.platform_glob)


def _judge_platforms(setting: object, s: Subject) -> list[str]:
    assert isinstance(setting, tuple)
    offered = [patterns.normalize_platform(p.platform) for p in s.facts.image_platforms()]
    missing = [str(g) for g in setting if not any(g.matches(p) for p in offered)]
    if not missing:
        return []
    have = ", ".join(offered) or "no platforms"
    return [
        f"{s.ref} offers {have}; rule {s.rule_id} requires {', '.join(missing)} too"
        if offered
        else f"{s.ref} offers no platforms; rule {s.rule_id} requires {', '.join(missing)}"
    ]


# --- manifest checks ----------------------------------------------------------------------------


def _judge_max_layers(setting: object, s: Subject) -> list[str]:
    assert isinstance(setting, int)
    return [
        f"{s.label(p)} has {p.layers} layers; rule {s.rule_id} allows at most {setting}"
        for p in s.platforms
        if p.layers is not None and p.layers > setting
    ]


def _parse_size(reader: Reader, node: Node, path: str) -> object | None:
    return reader.parsed(node, path, units.parse_size)


def _judge_max_size(setting: object, s: Subject) -> list[str]:
    assert isinstance(setting, int)
    out = []
    for p in s.platforms:
        if p.size is None or p.size <= setting:
            continue
        size, limit = units.format_size(p.size), units.format_size(setting)
        if size == limit:  # just over the limit: rounded, both would read the same
            size, limit = f"{p.size} bytes", f"{setting} bytes"
        out.append(f"{s.label(p)} is {size} compressed; rule {s.rule_id} allows at most {limit}")
    return out


# --- config checks ------------------------------------------------------------------------------

_ROOT_USERS = {"", "0", "root"}


def _judge_non_root(setting: object, s: Subject) -> list[str]:
    if not setting:
        return []
    out = []
    for p in s.platforms:
        user = (p.user or "").strip()
        name = user.split(":", 1)[0]
        if name in _ROOT_USERS or (name.isdigit() and int(name) == 0):  # `00` is uid 0 too
            shown = f"user {user!r}" if user else "no USER (root)"
            out.append(f"{s.label(p)} runs as {shown}; rule {s.rule_id} requires a non-root USER")
    return out


def _parse_duration(reader: Reader, node: Node, path: str) -> object | None:
    return reader.parsed(node, path, units.parse_duration)


def _judge_max_age(setting: object, s: Subject) -> list[str]:
    assert isinstance(setting, float)
    out = []
    limit = timedelta(seconds=setting)
    now = s.now if s.now.tzinfo else s.now.replace(tzinfo=UTC)  # a naive clock reads UTC
    for p in s.platforms:
        if p.created is None:
            out.append(
                f"{s.label(p)} has no creation time in its config; "
                f"rule {s.rule_id} requires images newer than {units.format_duration(setting)}"
            )
            continue
        created = p.created if p.created.tzinfo else p.created.replace(tzinfo=UTC)
        age = now - created
        if age > limit:
            out.append(
                f"{s.label(p)} was built {age.days} days ago ({created.date()}); "
                f"rule {s.rule_id} allows at most {units.format_duration(setting)}"
            )
    return out


def _max_age_changes_at(setting: object, s: Subject) -> datetime | None:
    """When an image turns too old, or (already too old) its age in days, shown in the
    message, next grows."""
    assert isinstance(setting, float)
    now = s.now if s.now.tzinfo else s.now.replace(tzinfo=UTC)
    limit = timedelta(seconds=setting)
    moments = []
    for p in s.platforms:
        if p.created is None:
            continue
        created = p.created if p.created.tzinfo else p.created.replace(tzinfo=UTC)
        age = now - created
        moments.append(created + limit if age <= limit else created + timedelta(age.days + 1))
    return min((m for m in moments if m > now), default=None)


def _parse_labels(reader: Reader, node: Node, path: str) -> object | None:
    """`{label: regex}`; a null value means "present, any value"; a list of names also works."""
    out: dict[str, re.Pattern[str] | None] = {}
    if isinstance(node.value, list):
        names = reader.string_list(node, path)
        return {n: None for n in names} if names else None
    if not isinstance(node.value, dict) or not node.value:
        reader.expected(node, path, "a mapping of label names to value regexes (or null)")
        return None
    ok = True
    for key, child in node.value.items():
        child_path = f"{path}.{key}"
        if child.value is None:
            out[key] = None
            continue
        if not isinstance(child.value, str):
            reader.expected(child, child_path, "a regular expression string or null")
            ok = False
            continue
        try:
            out[key] = re.compile(child.value)
        except re.error as exc:
            reader.error(child, child_path, f"invalid regular expression: {exc}")
            ok = False
    return out if ok else None


def _judge_labels(setting: object, s: Subject) -> list[str]:
    assert isinstance(setting, dict)
    out = []
    for p in s.platforms:
        labels = p.labels or {}
        for name, regex in setting.items():
            if name not in labels:
                out.append(f"{s.label(p)} lacks label {name}; rule {s.rule_id} requires it")
            elif regex is not None and not regex.fullmatch(labels[name]):
                out.append(
                    f"{s.label(p)} has label {name}={labels[name]!r}; "
                    f"rule {s.rule_id} requires it to match {regex.pattern!r}"
                )
    return out


def _parse_positive_int(reader: Reader, node: Node, path: str) -> object | None:
    return reader.positive_int(node, path)


SPECS: tuple[CheckSpec, ...] = (
    CheckSpec(
        "registries",
        "reference",
        _parse_registries,
        _judge_registries,
        STRINGS,
        "Registry host globs the image may come from (`*.gcr.io`, `ghcr.io`). "
        "A registry this rejects is never contacted.",
    ),
    CheckSpec(
        "tier",
        "tier",
        _parse_tiers,
        _judge_tier,
        {"type": "array", "items": {"enum": list(TIERS)}, "minItems": 1},
        "Allowed Docker Hub trusted-content tiers: official, verified_publisher, "
        "sponsored_oss, none.",
    ),
    CheckSpec(
        "digest",
        "reference",
        _parse_true,
        _judge_digest,
        {"type": "boolean"},
        "`true`: the reference as written must carry a digest (`name@sha256:...`).",
    ),
    CheckSpec(
        "denyTags",
        "reference",
        _parse_tag_globs,
        _judge_deny_tags,
        STRINGS,
        "Tag globs that are refused (`latest`, `*-dev`); no tag and no digest is latest.",
        reads_tag=True,
    ),
    CheckSpec(
        "tagMatchesDigest",
        "tag",
        _parse_true,
        _judge_tag_matches,
        {"type": "boolean"},
        "`true`: in `name:tag@digest` the tag must point to the digest (or to an index "
        "listing it), as the registry answers now; one HEAD by tag, cached like any tag.",
        reads_tag=True,
    ),
    CheckSpec(
        "maxLayers",
        "manifest",
        _parse_positive_int,
        _judge_max_layers,
        {"type": "integer", "minimum": 1},
        "Most layers each selected platform's image may have.",
    ),
    CheckSpec(
        "maxSize",
        "manifest",
        _parse_size,
        _judge_max_size,
        {"type": ["string", "integer"], "pattern": r"^\d+(\.\d+)?\s*[A-Za-z]*$"},
        "Largest sum of compressed layer sizes (`500MiB`, `1GB`; a number is bytes).",
    ),
    CheckSpec(
        "platforms",
        "platforms",
        _parse_platforms,
        _judge_platforms,
        STRINGS,
        "Platforms the image must offer (`linux/amd64`, `linux/arm64`).",
    ),
    CheckSpec(
        "nonRootUser",
        "config",
        _parse_true,
        _judge_non_root,
        {"type": "boolean"},
        "`true`: the config's User must be set and not `0` or `root`.",
    ),
    CheckSpec(
        "maxAge",
        "config",
        _parse_duration,
        _judge_max_age,
        {"type": ["string", "number"], "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d|w))+$"},
        "Oldest allowed build time, from the config's `created` (`90d`, `12h`).",
        changes_at=_max_age_changes_at,
    ),
    CheckSpec(
        "labels",
        "config",
        _parse_labels,
        _judge_labels,
        {
            "oneOf": [
                {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
                STRINGS,
            ]
        },
        "Config labels that must be present, with an optional regex for the value.",
    ),
)
