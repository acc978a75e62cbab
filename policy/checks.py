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
from typing import Any, Literal, TypeVar

from policy import attestations, jsonbound, patterns, signing, units
from policy.facts import TIERS, AttestationFacts, ImageFacts, PlatformFacts, SignatureFacts
from policy.reference import Reference
from policy.yamlsrc import Node, Reader

T = TypeVar("T")

# What a check reads. `reference`: the reference as written (no lookup); `tier`: the Docker Hub
# trusted-content tier; `platforms`: the list of platforms the image offers; `manifest`: each
# selected platform's manifest (layers, sizes); `config`: each selected platform's config blob;
# `tag`: where the tag of a `name:tag@digest` reference points; `signatures`: the signatures
# of the judged digest, verified against the rules' keys; `attestations`: the in-toto
# statements attached to each selected platform's image.
Fact = Literal[
    "reference", "tier", "platforms", "manifest", "config", "tag", "signatures", "attestations"
]


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


# --- signatures ---------------------------------------------------------------------------------


def _key(reader: Reader, node: Node, path: str) -> signing.KeySpec | None:
    """One `keys` entry: inline PEM text, or a file path (relative to the rules file)."""
    text = reader.string(node, path)
    if text is None:
        return None
    source = "inline key"
    if "-----BEGIN" not in text:
        file = _file_near(node, text)
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


def _file_near(node: Node, text: str) -> Path:
    """A path from a rule file: relative to that file's directory."""
    file = Path(text)
    if not file.is_absolute() and node.location.file not in ("", "<rules>"):
        file = Path(node.location.file).parent / file
    return file


def _trusted_root(reader: Reader, node: Node, path: str) -> bytes | None:
    """A Sigstore trusted root file (JSON), read whole (at most 1 MiB); its certificates and
    keys are checked when verifying."""
    text = reader.string(node, path)
    if text is None:
        return None
    file = _file_near(node, text)
    try:
        with file.open("rb") as stream:
            data = stream.read(signing.MAX_TRUSTED_ROOT_BYTES + 1)
    except OSError as exc:
        reader.error(node, path, f"cannot read trusted root {file}: {exc.strerror or exc}")
        return None
    if len(data) > signing.MAX_TRUSTED_ROOT_BYTES:
        reader.error(node, path, f"trusted root {file} is larger than 1 MiB")
        return None
    try:
        document = jsonbound.loads(data, max_bytes=signing.MAX_TRUSTED_ROOT_BYTES)
    except jsonbound.JSONRefused as exc:
        reader.error(node, path, f"trusted root {file} is not JSON: {exc}")
        return None
    if not isinstance(document, dict) or not isinstance(
        document.get("certificateAuthorities"), list
    ):
        reader.error(
            node,
            path,
            f"trusted root {file} has no certificateAuthorities (a Sigstore trusted_root.json)",
        )
        return None
    return data


_IDENTITY_KEYS = ("issuer", "issuerRegExp", "subject", "subjectRegExp")


def _identity(reader: Reader, node: Node, path: str) -> signing.Identity | None:
    """`{issuer, subject}`: exact text or a `*` glob each; `issuerRegExp`/`subjectRegExp`
    for regular expressions."""
    fields = reader.mapping(node, path, allowed=_IDENTITY_KEYS)
    if fields is None:
        return None
    found: dict[str, signing.Matcher] = {}
    for field in ("issuer", "subject"):
        plain, regex = fields.get(field), fields.get(f"{field}RegExp")
        if (plain is None) == (regex is None):
            reader.error(node, path, f"give one of {field} or {field}RegExp")
            continue
        child = plain if plain is not None else regex
        assert child is not None
        child_path = f"{path}.{field if plain is not None else field + 'RegExp'}"
        text = reader.string(child, child_path)
        if text is None:
            continue
        try:
            found[field] = signing.matcher(text, "glob" if plain is not None else "regex")
        except ValueError as exc:
            reader.error(child, child_path, str(exc))
    if len(found) != 2:
        return None
    return signing.Identity(issuer=found["issuer"], subject=found["subject"])


_SIGNATURE_KEYS = ("keys", "keyless", "minimum", "requireTlog", "trustedRoot")


def _keys_and_identities(
    reader: Reader, children: dict[str, Node], path: str
) -> tuple[list[signing.KeySpec], list[signing.Identity], bool]:
    """The `keys` and `keyless` entries of a signer list (`require.signatures`, an
    attestation's `signed`), and whether both read without error (errors reported)."""
    keys, keys_ok = _entries(
        reader, children, "keys", path, _key, "a non-empty list of PEM public keys or key files"
    )
    identities, ids_ok = _entries(
        reader, children, "keyless", path, _identity, "a non-empty list of {issuer, subject}"
    )
    return keys, identities, keys_ok and ids_ok


def _entries(
    reader: Reader,
    children: dict[str, Node],
    name: str,
    path: str,
    read: Callable[[Reader, Node, str], T | None],
    expected: str,
) -> tuple[list[T], bool]:
    """The items of the optional non-empty list `name`, each read by `read`, and whether all
    read without error (errors reported)."""
    if name not in children:
        return [], True
    listed, listed_path = children[name], f"{path}.{name}"
    if not isinstance(listed.value, list) or not listed.value:
        reader.expected(listed, listed_path, expected)
        return [], False
    parsed = [read(reader, c, item) for item, c in reader.items(listed, listed_path)]
    found = [p for p in parsed if p is not None]
    return found, len(found) == len(parsed)


def _parse_signatures(reader: Reader, node: Node, path: str) -> object | None:
    children = reader.mapping(node, path, allowed=_SIGNATURE_KEYS)
    if children is None:
        return None
    if "keys" not in children and "keyless" not in children:
        reader.error(node, path, "give keys, keyless identities, or both")
        return None
    keys, identities, ok = _keys_and_identities(reader, children, path)
    minimum = 1
    if "minimum" in children:
        minimum = reader.positive_int(children["minimum"], f"{path}.minimum") or 0
        ok = ok and minimum > 0
    require_tlog = False
    if "requireTlog" in children:
        value = reader.boolean(children["requireTlog"], f"{path}.requireTlog")
        ok = ok and value is not None
        require_tlog = bool(value)
    root: bytes | None = None
    if "trustedRoot" in children:
        root = _trusted_root(reader, children["trustedRoot"], f"{path}.trustedRoot")
        ok = ok and root is not None
    if not ok:
        return None
    signers = len({k.fingerprint for k in keys}) + len(set(identities))
    if minimum > signers:
        reader.error(
            children["minimum"],
            f"{path}.minimum",
            f"minimum is {minimum} but only {signers} distinct signer"
            f"{' is' if signers == 1 else 's are'} configured",
        )
        return None
    roots: tuple[signing.RootFile, ...] = ()
    if identities or require_tlog:
        roots = (signing.RootFile.of(root if root is not None else signing.public_good_root()),)
    return signing.SignaturePolicy(
        keys=tuple(keys),
        minimum=minimum,
        keyless=tuple(identities),
        require_tlog=require_tlog,
        roots=roots,
    )


def _counts_for(sig: SignatureFacts, policy: signing.SignaturePolicy) -> str | None:
    """The signer a verified signature counts as under `policy` (`key:<fp>` or
    `keyless:<issuer> <subject>`), or None."""
    if not sig.verified or (policy.require_tlog and not sig.tlog):
        return None
    if sig.key is not None and sig.key in policy.fingerprints:
        return f"key:{sig.key}"
    if sig.subject is not None and any(i.matches(sig.issuer, sig.subject) for i in policy.keyless):
        return f"keyless:{sig.issuer} {sig.subject}"
    return None


def _signature_said(sig: SignatureFacts, policy: signing.SignaturePolicy) -> str:
    """One signature, as a finding tells it."""
    if not sig.verified:
        return (
            f"{sig.format} signature by {sig.signer or 'unknown signer'}, not verified: "
            f"{sig.reason}"
        )
    if sig.key is not None:
        who = f"key {signing.short(sig.key)}"
        if sig.key not in policy.fingerprints:
            return f"{sig.format} signature by {who} (not a key of this rule)"
    else:
        who = f"keyless {sig.subject} (issuer {sig.issuer})"
        if not any(i.matches(sig.issuer, sig.subject) for i in policy.keyless):
            return f"{sig.format} signature by {who} (not an identity of this rule)"
    if policy.require_tlog and not sig.tlog:
        return f"{sig.format} signature by {who}, without a verified transparency-log entry"
    return f"{sig.format} signature by {who}"


def _wanted(policy: signing.SignaturePolicy) -> str:
    signers = [f"key {signing.short(k)}" for k in sorted(policy.fingerprints)]
    signers += [f"keyless {i}" for i in dict.fromkeys(policy.keyless)]
    tlog = " with a transparency-log entry" if policy.require_tlog else ""
    if len(signers) == 1:
        only = signers[0].replace("key ", "the configured key ", 1) if policy.keys else signers[0]
        return f"a signature{tlog} by {only}"
    return f"signatures{tlog} by {policy.minimum} of: {', '.join(signers)}"


def _judge_signatures(setting: object, s: Subject) -> list[str]:
    assert isinstance(setting, signing.SignaturePolicy)
    found = s.facts.signatures or ()
    signers = {who for sig in found if (who := _counts_for(sig, setting)) is not None}
    if len(signers) >= setting.minimum:
        return []
    requires = _wanted(setting)
    digest = signing.short(s.facts.digest or "?")
    if not found:
        return [
            f"{s.ref}: no signatures found for {digest} (cosign .sig tag, OCI referrers); "
            f"rule {s.rule_id} requires {requires}"
        ]
    count = f"{len(found)} signature{'' if len(found) == 1 else 's'}"
    if signers:
        head = f"{count} for {digest}, {len(signers)} by a configured signer"
    else:
        head = f"{count} for {digest}, none by a configured signer"
    listed = sorted({_signature_said(sig, setting) for sig in found})
    shown = "; ".join(listed[:4]) + (f"; {len(listed) - 4} more" if len(listed) > 4 else "")
    return [f"{s.ref}: {head} ({shown}); rule {s.rule_id} requires {requires}"]


# --- attestations -------------------------------------------------------------------------------


def _globs(reader: Reader, node: Node, path: str) -> tuple[signing.Matcher, ...] | None:
    return reader.compiled(node, path, lambda text: signing.matcher(text, "glob"))


def _parse_attestations(reader: Reader, node: Node, path: str) -> object | None:
    children = reader.mapping(node, path, allowed=("provenance", "sbom", "signed"))
    if children is None:
        return None
    ok = True
    provenance = False
    found: dict[str, tuple[signing.Matcher, ...]] = {}
    if "provenance" in children:
        child, child_path = children["provenance"], f"{path}.provenance"
        if isinstance(child.value, bool):
            provenance = child.value
        else:
            fields = reader.mapping(child, child_path, allowed=("builder", "source", "buildType"))
            provenance = fields is not None
            for name, value in (fields or {}).items():
                globs = _globs(reader, value, f"{child_path}.{name}")
                ok = ok and globs is not None
                found[name] = globs or ()
    sbom = False
    if "sbom" in children:
        wants_sbom = reader.boolean(children["sbom"], f"{path}.sbom")
        ok = ok and wants_sbom is not None
        sbom = bool(wants_sbom)
    keys: tuple[signing.KeySpec, ...] = ()
    keyless: tuple[signing.Identity, ...] = ()
    roots: tuple[signing.RootFile, ...] = ()
    if "signed" in children:
        signed = _parse_signers(reader, children["signed"], f"{path}.signed")
        if signed is None:
            ok = False
        else:
            keys, keyless, roots = signed
    if ok and not (provenance or sbom):
        reader.error(node, path, "require provenance, sbom, or both")
        return None
    if not ok:
        return None
    return attestations.AttestationPolicy(
        provenance=provenance,
        builder=found.get("builder", ()),
        source=found.get("source", ()),
        build_type=found.get("buildType", ()),
        sbom=sbom,
        keys=keys,
        keyless=keyless,
        roots=roots,
    )


_SIGNED_KEYS = ("keys", "keyless", "trustedRoot")
_Signers = tuple[
    tuple[signing.KeySpec, ...], tuple[signing.Identity, ...], tuple[signing.RootFile, ...]
]


def _parse_signers(reader: Reader, node: Node, path: str) -> _Signers | None:
    """`signed: {keys, keyless, trustedRoot}`: who must have signed an attestation, as in
    `require.signatures` (None when it is wrong, the errors reported)."""
    children = reader.mapping(node, path, allowed=_SIGNED_KEYS)
    if children is None:
        return None
    if "keys" not in children and "keyless" not in children:
        reader.error(node, path, "give keys, keyless identities, or both")
        return None
    keys, identities, ok = _keys_and_identities(reader, children, path)
    root: bytes | None = None
    if "trustedRoot" in children:
        root = _trusted_root(reader, children["trustedRoot"], f"{path}.trustedRoot")
        ok = ok and root is not None
    if not ok:
        return None
    roots: tuple[signing.RootFile, ...] = ()
    if identities:
        roots = (signing.RootFile.of(root if root is not None else signing.public_good_root()),)
    return tuple(keys), tuple(identities), roots


_NO_CERTIFICATE = (
    "signed in the index (BuildKit's DSSE carries no certificate), not by a configured key; "
    "a keyless identity cannot apply"
)


def _attestation_why(a: AttestationFacts, policy: attestations.AttestationPolicy) -> str:
    """Why a statement does not count under `policy` ("" when it does)."""
    if a.reason or not policy.signed or policy.signer_of(a):
        return a.reason
    if a.signature:
        return f"its signature did not verify: {a.signature}"
    if a.subject is not None:
        return f"signed by keyless {a.subject} (issuer {a.issuer}), not an identity of this rule"
    if a.signed_by is not None:
        return f"signed by key {signing.short(a.signed_by)}, not a key of this rule"
    if policy.keyless and a.format == "buildkit":
        return (
            _NO_CERTIFICATE
            if not policy.keys
            else _NO_CERTIFICATE.replace("not by a configured key", "and by no configured key")
        )
    return (
        "not signed by a configured signer"
        if policy.keyless
        else ("not signed by a configured key")
    )


def _attestations_said(
    found: tuple[AttestationFacts, ...], policy: attestations.AttestationPolicy
) -> str:
    if not found:
        return "no attestations"
    parts = []
    for a in found:
        why = _attestation_why(a, policy)
        where = "" if a.format == "buildkit" else f" ({a.format})"
        parts.append(f"{a.kind}{where}{f' ({why})' if why else ''}")
    counted = {p: parts.count(p) for p in dict.fromkeys(parts)}
    return ", ".join(f"{n} {p}" if n > 1 else p for p, n in counted.items())


def _first_mismatch(
    statements: list[AttestationFacts], policy: attestations.AttestationPolicy
) -> str | None:
    """Why none of the provenance statements has matching builder, source and build type
    (None when one has)."""
    fields = (
        ("builder id", policy.builder, "builder"),
        ("source", policy.source, "source"),
        ("build type", policy.build_type, "build_type"),
    )
    why = None
    for a in statements:
        for name, globs, attribute in fields:
            value: str | None = getattr(a, attribute)
            if globs and (value is None or not any(g.matches(value) for g in globs)):
                shown = repr(value) if value is not None else "none"
                why = f"provenance {name} {shown} matches none of {', '.join(map(str, globs))}"
                break
        else:
            return None
    return why


def _judge_attestations(setting: object, s: Subject) -> list[str]:
    assert isinstance(setting, attestations.AttestationPolicy)
    out = []
    signed = ""
    if setting.signed:
        signed = " signed by a configured " + ("key" if not setting.keyless else "signer")
    for p in s.platforms:
        found = p.attestations or ()
        usable = [a for a in found if not _attestation_why(a, setting)]
        said = _attestations_said(found, setting)
        if setting.provenance:
            provenance = [a for a in usable if a.kind == "provenance"]
            if not provenance:
                out.append(
                    f"{s.label(p)} has no SLSA provenance attestation{signed} ({said}); "
                    f"rule {s.rule_id} requires one"
                )
            elif (why := _first_mismatch(provenance, setting)) is not None:
                out.append(f"{s.label(p)}: {why}; rule {s.rule_id} requires a match")
        if setting.sbom and not any(a.kind == "sbom" for a in usable):
            out.append(
                f"{s.label(p)} has no SBOM attestation{signed} ({said}); "
                f"rule {s.rule_id} requires one"
            )
    return out


_STRINGS = {"type": "array", "items": {"type": "string"}, "minItems": 1}
_KEYLESS = {
    "type": "array",
    "minItems": 1,
    "items": {
        "type": "object",
        "additionalProperties": False,
        "properties": {k: {"type": "string"} for k in _IDENTITY_KEYS},
        "allOf": [
            {"oneOf": [{"required": [f]}, {"required": [f"{f}RegExp"]}]}
            for f in ("issuer", "subject")
        ],
    },
    "description": "Fulcio certificate identities: OIDC issuer and subject (SAN), exact or "
    "`*` glob, or issuerRegExp/subjectRegExp",
}

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
                "anyOf": [{"required": ["keys"]}, {"required": ["keyless"]}],
                "additionalProperties": False,
                "properties": {
                    "keys": {
                        **_STRINGS,
                        "description": "PEM public keys (ECDSA P-256/P-384, Ed25519, RSA ≥ "
                        "2048 bits), inline or as file paths (relative to the rules file)",
                    },
                    "keyless": _KEYLESS,
                    "minimum": {"type": "integer", "minimum": 1, "default": 1},
                    "requireTlog": {"type": "boolean", "default": False},
                    "trustedRoot": {
                        "type": "string",
                        "description": "Sigstore trusted_root.json (default: the public-good "
                        "root shipped with image-policy)",
                    },
                },
            },
            "cosign signatures of the digest judged (for an index, the index digest), found "
            "in cosign's `sha256-<hex>.sig` tag or OCI referrers; `minimum` distinct signers "
            "among the configured `keys` and `keyless` identities must each have verified one.",
        ),
        CheckSpec(
            "attestations",
            "attestations",
            _parse_attestations,
            _judge_attestations,
            {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "provenance": {
                        "oneOf": [
                            {"type": "boolean"},
                            {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "builder": _STRINGS,
                                    "source": _STRINGS,
                                    "buildType": _STRINGS,
                                },
                            },
                        ]
                    },
                    "sbom": {"type": "boolean"},
                    "signed": {
                        "type": "object",
                        "anyOf": [{"required": ["keys"]}, {"required": ["keyless"]}],
                        "additionalProperties": False,
                        "properties": {
                            "keys": _STRINGS,
                            "keyless": _KEYLESS,
                            "trustedRoot": {"type": "string"},
                        },
                    },
                },
            },
            "In-toto attestations each selected platform's image must carry (BuildKit "
            "attestation manifests of its index, subject = the platform image): SLSA "
            "`provenance` (`true`, or globs for `builder`, `source`, `buildType`) and/or an "
            "`sbom`; also cosign `.att` attestations and Sigstore bundles among the OCI referrers "
            "of the digest judged; `signed`: only statements in DSSE envelopes signed by these "
            "`keys` or `keyless` identities (those with a certificate: cosign, bundles) count.",
        ),
    )
}
