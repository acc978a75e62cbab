"""The checks a rule can `require`: each is one parse function, one judge function, the fact it
reads, its JSON-Schema entry and its docs row (pure).

Adding a check means adding one `CheckSpec` to `CHECKS` below, plus its tests.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from policy import patterns, signing, units
from policy.facts import TIERS, ImageFacts, PlatformFacts, SignatureFacts
from policy.reference import Reference
from policy.yamlsrc import Node, Reader

# What a check reads. `reference`: the reference as written (no lookup); `tier`: the Docker Hub
# trusted-content tier; `platforms`: the list of platforms the image offers; `manifest`: each
# selected platform's manifest (layers, sizes); `config`: each selected platform's config blob;
# `tag`: where the tag of a `name:tag@digest` reference points; `signatures`: the signatures
# of the judged digest, verified against the rules' keys.
Fact = Literal["reference", "tier", "platforms", "manifest", "config", "tag", "signatures"]


@dataclass(frozen=True)
class Subject:
    """What a check judges: the reference, what is known about it, and the platforms it reads."""

    ref: Reference
    facts: ImageFacts
    platforms: tuple[PlatformFacts, ...]
    rule_id: str
    now: datetime
    written_tag: str | None = None
    """The tag written beside the digest when `ref` is judged by digest alone (the registry
    did not confirm that the tag points at the digest)."""

    def label(self, platform: PlatformFacts | None = None) -> str:
        """`docker.io/library/nginx:1.25`, with ` (linux/arm64)` for an index entry."""
        if platform is not None and self.facts.index:
            return f"{self.ref} ({platform.platform})"
        return str(self.ref)


@dataclass(frozen=True)
class CheckSpec:
    name: str
    fact: Fact
    parse: Callable[[Reader, Node, str], object | None]
    judge: Callable[[object, Subject], list[str]]
    schema: Mapping[str, Any]
    doc: str
    # For a check whose answer depends on the clock: the next moment, after `subject.now`, at
    # which `judge` could answer differently for the same facts (None: not before tomorrow).
    changes_at: Callable[[object, Subject], datetime | None] | None = None
    # Whether the judge reads the reference's tag: then, for `name:tag@digest`, the tag counts
    # only once the registry confirms it points at the digest (evaluate.py).
    reads_tag: bool = False


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
    try:
        return units.parse_size(node.value)
    except ValueError as exc:
        reader.error(node, path, f"{exc}, got {node.type_name()}")
        return None


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
    try:
        return units.parse_duration(node.value)
    except ValueError as exc:
        reader.error(node, path, f"{exc}, got {node.type_name()}")
        return None


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


# --- signatures ---------------------------------------------------------------------------------


def _key(reader: Reader, node: Node, path: str) -> signing.KeySpec | None:
    """One `keys` entry: inline PEM text, or a file path (relative to the rules file)."""
    text = reader.string(node, path)
    if text is None:
        return None
    source = "inline key"
    if "-----BEGIN" not in text:
        file = Path(text)
        if not file.is_absolute() and node.location.file not in ("", "<rules>"):
            file = Path(node.location.file).parent / file
        source = text
        try:
            with file.open("rb") as stream:
                raw = stream.read(signing.MAX_PEM_CHARS + 1)
            text = raw.decode("ascii")
        except FileNotFoundError:
            reader.error(node, path, f"key file {file} does not exist")
            return None
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not ASCII PEM"
            reader.error(node, path, f"cannot read key file {file}: {why}")
            return None
    try:
        return signing.parse_public_key(text, source)
    except ValueError as exc:
        reader.error(node, path, str(exc))
        return None


def _parse_signatures(reader: Reader, node: Node, path: str) -> object | None:
    children = reader.mapping(node, path, allowed=("keys", "minimum"), required=("keys",))
    if children is None or "keys" not in children:
        return None
    keys_node = children["keys"]
    keys_path = f"{path}.keys"
    if not isinstance(keys_node.value, list) or not keys_node.value:
        reader.expected(keys_node, keys_path, "a non-empty list of PEM public keys or key files")
        return None
    keys = [_key(reader, child, item) for item, child in reader.items(keys_node, keys_path)]
    minimum = 1
    if "minimum" in children:
        minimum = reader.positive_int(children["minimum"], f"{path}.minimum") or 0
    found = tuple(k for k in keys if k is not None)
    if len(found) != len(keys) or minimum < 1:
        return None
    distinct = len({k.fingerprint for k in found})
    if minimum > distinct:
        reader.error(
            children["minimum"],
            f"{path}.minimum",
            f"minimum is {minimum} but only {distinct} distinct key"
            f"{'' if distinct == 1 else 's'} are configured",
        )
        return None
    return signing.SignaturePolicy(keys=found, minimum=minimum)


def _signature_said(sig: SignatureFacts, wanted: frozenset[str]) -> str:
    """One signature, as a finding tells it."""
    if sig.verified and sig.key is not None:
        configured = "" if sig.key in wanted else " (not a key of this rule)"
        return f"{sig.format} signature by key {signing.short(sig.key)}{configured}"
    return f"{sig.format} signature by {sig.signer or 'unknown signer'}, not verified: {sig.reason}"


def _judge_signatures(setting: object, s: Subject) -> list[str]:
    assert isinstance(setting, signing.SignaturePolicy)
    found = s.facts.signatures or ()
    wanted = setting.fingerprints
    signers = {sig.key for sig in found if sig.verified and sig.key in wanted}
    if len(signers) >= setting.minimum:
        return []
    if len(setting.keys) == 1:
        requires = f"a signature by the configured key {signing.short(setting.keys[0].fingerprint)}"
    else:
        keys = ", ".join(signing.short(k) for k in sorted(wanted))
        requires = f"signatures by {setting.minimum} of the configured keys ({keys})"
    digest = signing.short(s.facts.digest or "?")
    if not found:
        return [
            f"{s.ref}: no signatures found for {digest} (cosign .sig tag, OCI referrers); "
            f"rule {s.rule_id} requires {requires}"
        ]
    count = f"{len(found)} signature{'' if len(found) == 1 else 's'}"
    if signers:
        head = f"{count} for {digest}, {len(signers)} by a configured key"
    else:
        head = f"{count} for {digest}, none by a configured key"
    listed = sorted({_signature_said(sig, wanted) for sig in found})
    shown = "; ".join(listed[:4]) + (f"; {len(listed) - 4} more" if len(listed) > 4 else "")
    return [f"{s.ref}: {head} ({shown}); rule {s.rule_id} requires {requires}"]


_STRINGS = {"type": "array", "items": {"type": "string"}, "minItems": 1}

CHECKS: dict[str, CheckSpec] = {
    spec.name: spec
    for spec in (
        CheckSpec(
            "registries",
            "reference",
            _parse_registries,
            _judge_registries,
            _STRINGS,
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
            _STRINGS,
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
            _STRINGS,
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
                    _STRINGS,
                ]
            },
            "Config labels that must be present, with an optional regex for the value.",
        ),
        CheckSpec(
            "signatures",
            "signatures",
            _parse_signatures,
            _judge_signatures,
            {
                "type": "object",
                "required": ["keys"],
                "additionalProperties": False,
                "properties": {
                    "keys": {
                        **_STRINGS,
                        "description": "PEM public keys (ECDSA P-256/P-384, Ed25519, RSA ≥ "
                        "2048 bits), inline or as file paths (relative to the rules file)",
                    },
                    "minimum": {"type": "integer", "minimum": 1, "default": 1},
                },
            },
            "cosign signatures of the digest judged (for an index, the index digest), found "
            "in cosign's `sha256-<hex>.sig` tag or OCI referrers; `minimum` distinct configured "
            "`keys` must each have verified one.",
        ),
    )
}
