"""Facts files: what is known about images, recorded in YAML so rules can be checked offline.

```yaml
images:
  nginx:1.25:                          # any reference; normalized like every reference
                                       # (its digest also says where the tag points, which
                                       # `nginx:1.25@sha256:...` is checked against)
    digest: sha256:...                 # the manifest (or index) digest
    tier: official                     # official | verified_publisher | sponsored_oss | none
    platforms:                         # an index: one entry per platform
      linux/amd64: {digest: sha256:..., layers: 7, size: 70MiB, user: "",
                    created: 2026-01-01T00:00:00Z, labels: {org.example.team: web}}
  localhost:5000/app:1:                # a single-platform image: the manifest facts inline
    platform: linux/amd64
    layers: 3
    size: 12MiB
    user: "1000"
    attestations:                      # in-toto statements about this image ([]: none)
      - {predicateType: https://slsa.dev/provenance/v0.2, builder: https://github.com/acme/*,
         source: https://github.com/acme/app.git, buildType: https://mobyproject.org/buildkit@v1}
      - {predicateType: https://spdx.dev/Document, format: cosign,     # keyless-signed (.att)
         issuer: https://token.actions.githubusercontent.com, subject: https://github.com/acme/…}
    signatures:                        # of the digest; [] records "none found"
      - {format: cosign, key: sha256:<fingerprint of the key that verified it>}
      - {format: bundle, verified: false, reason: does not verify with a configured key}
```
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, TypeAlias, TypeVar

from policy import attestations, reference, signing, units
from policy.errors import InputError, InvalidReference, Location, RuleError
from policy.facts import (
    SIGNATURE_FORMATS,
    TIERS,
    AttestationFacts,
    ImageFacts,
    Needs,
    PlatformFacts,
    SignatureFacts,
    offline_tier,
)
from policy.failures import Cause
from policy.yamlsrc import Node, Reader, join, load

if TYPE_CHECKING:
    from policy.deadline import Deadline

_IMAGE_KEYS = (
    "digest",
    "tier",
    "platforms",
    "platform",
    "layers",
    "size",
    "user",
    "created",
    "labels",
    "signatures",
    "attestations",
)
_ATTESTATION_KEYS = (
    "predicateType",
    "builder",
    "source",
    "buildType",
    "signedBy",
    "issuer",
    "subject",
    "format",
    "signature",
    "reason",
)
_ATTESTATION_FORMATS = ("buildkit", "cosign", "bundle")
_SIGNATURE_KEYS = ("format", "key", "verified", "reason", "signer")
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{64}")
_PLATFORM_KEYS = ("digest", "layers", "size", "user", "created", "labels", "attestations")
_CONFIG_KEYS = ("user", "created", "labels")
_T = TypeVar("_T")
# Reads one located YAML node at a path; None when it is not valid (the problem goes to the
# reader).
_Read: TypeAlias = Callable[[Reader, Node, str], _T | None]


class FactsFileError(InputError):
    """A facts file that is not valid; the message lists every located problem."""


def _created(reader: Reader, node: Node, path: str) -> datetime | None:
    value = node.value
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    reader.expected(node, path, "a timestamp like 2026-01-01T00:00:00Z")
    return None


def _digest(reader: Reader, node: Node, path: str) -> str | None:
    text = reader.string(node, path)
    if text is None:
        return None
    try:
        reference.parse(f"x@{text}")
    except InvalidReference as exc:
        reader.error(node, path, f"invalid digest: {exc.problem}")
        return None
    return text


def _attestation(reader: Reader, node: Node, path: str) -> AttestationFacts | None:
    """One recorded in-toto statement about the platform image."""
    fields = reader.mapping(node, path, allowed=_ATTESTATION_KEYS, required=("predicateType",))
    if fields is None or "predicateType" not in fields:
        return None
    texts: dict[str, str | None] = {}
    for key in _ATTESTATION_KEYS:
        texts[key] = reader.string(fields[key], join(path, key)) if key in fields else None
    signed_by = texts["signedBy"]
    if signed_by is not None and not _FINGERPRINT.fullmatch(signed_by):
        reader.expected(
            fields["signedBy"], join(path, "signedBy"), "a key fingerprint sha256:<64 hex>"
        )
        return None
    predicate_type = texts["predicateType"]
    if predicate_type is None:
        return None
    fmt = texts["format"] or "buildkit"
    if fmt not in _ATTESTATION_FORMATS:
        reader.expected(fields["format"], join(path, "format"), "one of buildkit, cosign, bundle")
        return None
    if (texts["issuer"] is None) != (texts["subject"] is None):
        reader.error(node, path, "a keyless signer is an issuer and a subject: give both")
        return None
    return AttestationFacts(
        predicate_type,
        attestations.kind_of(predicate_type),
        builder=texts["builder"],
        source=texts["source"],
        build_type=texts["buildType"],
        signed_by=signed_by,
        reason=texts["reason"] or "",
        issuer=texts["issuer"],
        subject=texts["subject"],
        format=fmt,
        signature=texts["signature"] or "",
    )


def _field(
    reader: Reader, children: Mapping[str, Node], key: str, path: str, read: _Read[_T]
) -> _T | None:
    """Field `key` of `children` as `read` reads it; None when absent (or not valid: then the
    problem went to `reader`)."""
    return read(reader, children[key], join(path, key)) if key in children else None


def _list_of(read: _Read[_T], what: str) -> _Read[tuple[_T, ...]]:
    """A reader of a list whose entries `read` reads, keeping the valid ones (`[]` records
    none); anything but a list is an error saying `what` was expected."""

    def read_list(reader: Reader, node: Node, path: str) -> tuple[_T, ...] | None:
        if not isinstance(node.value, list):
            reader.expected(node, path, what)
            return None
        entries = [
            read(reader, child, item) for item, child in reader.items(node, path, nonempty=False)
        ]
        return tuple(entry for entry in entries if entry is not None)

    return read_list


def _size(reader: Reader, node: Node, path: str) -> int | None:
    """A size in bytes, or with a unit (`70MiB`)."""
    try:
        size = units.parse_size(node.value)
    except ValueError as exc:
        reader.error(node, path, f"{exc}, got {node.type_name()}")
        return None
    return size


def _user(reader: Reader, node: Node, path: str) -> str | None:
    """The config's user: a name or uid; empty (root) when null."""
    raw = node.value
    if raw is None or isinstance(raw, str | int):
        return "" if raw is None else str(raw)
    reader.expected(node, path, "a user name or uid")
    return None


def _labels(reader: Reader, node: Node, path: str) -> dict[str, str] | None:
    """The config's labels: a mapping of names to strings."""
    plain = node.plain()
    if isinstance(plain, dict) and all(isinstance(v, str) for v in plain.values()):
        return {str(k): str(v) for k, v in plain.items()}
    reader.expected(node, path, "a mapping of label names to strings")
    return None


_ATTESTATIONS = _list_of(_attestation, "a list of statements ([] for none)")


def _platform(reader: Reader, name: str, children: dict[str, Node], path: str) -> PlatformFacts:
    """One manifest's facts: an index entry `name`, or ("") the inline single-platform facts."""
    digest = _field(reader, children, "digest", path, _digest)
    layers = _field(reader, children, "layers", path, Reader.positive_int)
    size = _field(reader, children, "size", path, _size)
    user = _field(reader, children, "user", path, _user)
    created = _field(reader, children, "created", path, _created)
    labels = _field(reader, children, "labels", path, _labels)
    config_known = any(k in children for k in _CONFIG_KEYS)
    recorded = _field(reader, children, "attestations", path, _ATTESTATIONS)
    platform = name
    if not name:
        platform = "linux/amd64"
        if "platform" in children:
            platform = reader.string(children["platform"], join(path, "platform")) or platform
    return PlatformFacts(
        platform=platform,
        digest=digest,
        layers=layers if layers is not None else (0 if size is not None else None),
        size=size,
        user=user,
        created=created,
        labels=MappingProxyType(labels)
        if labels is not None
        else (MappingProxyType({}) if config_known else None),
        config_known=config_known,
        attestations=recorded,
    )


def _signature(reader: Reader, node: Node, path: str) -> SignatureFacts | None:
    """One recorded signature: verified by the key named (its fingerprint), or not, with why."""
    fields = reader.mapping(node, path, allowed=_SIGNATURE_KEYS, required=("format",))
    if fields is None or "format" not in fields:
        return None
    fmt = reader.choice(fields["format"], join(path, "format"), SIGNATURE_FORMATS)
    key = None
    if "key" in fields:
        key = reader.string(fields["key"], join(path, "key"))
        if key is not None and not _FINGERPRINT.fullmatch(key):
            reader.expected(fields["key"], join(path, "key"), "a key fingerprint sha256:<64 hex>")
            key = None
    verified = key is not None
    if "verified" in fields:
        verified = bool(reader.boolean(fields["verified"], join(path, "verified")))
        if verified and key is None:
            reader.error(
                fields["verified"], join(path, "verified"), "a verified signature names its key"
            )
    reason = reader.string(fields["reason"], join(path, "reason")) if "reason" in fields else None
    signer = reader.string(fields["signer"], join(path, "signer")) if "signer" in fields else None
    if fmt is None:
        return None
    return SignatureFacts(
        fmt,
        verified,
        key=key if verified else None,
        reason="" if verified else (reason or "recorded as not verified"),
        signer=signer or (f"key {signing.short(key)}" if key else "unknown key"),
    )


_SIGNATURES = _list_of(_signature, "a list of signatures ([] for none)")


def image_facts(reader: Reader, node: Node, path: str) -> ImageFacts:
    """One image's facts from its located YAML node; problems go to `reader`."""
    children = reader.mapping(node, path, allowed=_IMAGE_KEYS) or {}
    digest = _field(reader, children, "digest", path, _digest)
    tier = None
    if "tier" in children:
        tier = reader.choice(children["tier"], join(path, "tier"), TIERS)
    index: bool | None = None
    platforms: tuple[PlatformFacts, ...] = ()
    if "platforms" in children:
        node_platforms = children["platforms"]
        platforms_path = join(path, "platforms")
        if isinstance(node_platforms.value, dict) and node_platforms.value:
            platforms = tuple(
                _platform(
                    reader,
                    name,
                    reader.mapping(child, join(platforms_path, name), allowed=_PLATFORM_KEYS) or {},
                    join(platforms_path, name),
                )
                for name, child in node_platforms.value.items()
            )
            index = True
        else:
            reader.expected(node_platforms, platforms_path, "a mapping of platforms to facts")
    elif any(k in children for k in ("layers", "size", "attestations", *_CONFIG_KEYS)):
        platforms = (_platform(reader, "", children, path),)
        index = False
    signatures = _field(reader, children, "signatures", path, _SIGNATURES)
    return ImageFacts(
        digest=digest,
        index=index,
        tier=tier,
        tier_source="facts file" if tier else None,
        platforms=platforms,
        signatures=signatures,
    )


def facts_by_reference(reader: Reader, node: Node, path: str) -> dict[str, ImageFacts]:
    """`{images: {reference: facts}}` at `path` (a facts file's root, or a rule test case's
    `facts`), by normalized reference string; problems go to `reader`."""
    fields = reader.mapping(node, path, allowed=("images",), required=("images",)) or {}
    images = fields.get("images")
    out: dict[str, ImageFacts] = {}
    if images is None:
        return out
    images_path = join(path, "images")
    if not isinstance(images.value, dict):
        reader.expected(images, images_path, "a mapping of image references to facts")
        return out
    for key, child in images.value.items():
        item_path = join(images_path, key)
        try:
            ref = reference.parse(key)
        except InvalidReference as exc:
            reader.error(child, item_path, exc.problem, at_key=True)
            continue
        out[str(ref)] = image_facts(reader, child, item_path)
    return out


def parse_facts(text: str, filename: str) -> dict[str, ImageFacts]:
    """Facts by normalized reference string; raise FactsFileError listing every problem."""
    root, syntax = load(text, filename)
    reader = Reader(RuleError)
    reader.errors.extend(syntax)
    out: dict[str, ImageFacts] = {}
    if root is not None:
        out = facts_by_reference(reader, root, "")
    elif not syntax:
        reader.errors.append(RuleError("empty facts file", location=Location(filename, 1, 1)))
    if reader.errors:
        raise FactsFileError("\n".join(str(e) for e in reader.errors))
    return out


def load_facts(path: str | Path) -> dict[str, ImageFacts]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FactsFileError(f"{path}: cannot read facts file: {exc}") from exc
    return parse_facts(text, str(path))


class FactsResolver:
    """Answers from a facts file: what it records, plus the tiers known offline."""

    def __init__(self, facts: Mapping[str, ImageFacts], *, source: str = "facts file") -> None:
        self._facts = dict(facts)
        self._source = source
        # (name, digest) → the facts of an entry recording that digest (`nginx:1.25` with
        # `digest:`), so `nginx:1.25@<that digest>` and `nginx@<that digest>` find them.
        self._by_digest: dict[tuple[str, str], ImageFacts] = {}
        for key, entry in self._facts.items():
            if entry.digest is not None:
                name = reference.parse(key).name
                self._by_digest.setdefault((name, entry.digest), entry)

    def resolve(
        self, items: Sequence[tuple[reference.Reference, Needs]], *, deadline: Deadline
    ) -> list[ImageFacts]:
        """The recorded facts for each reference (the deadline is moot: nothing is fetched)."""
        return [
            self._signed(
                ref, needs, self._tag(ref, self.lookup(ref)) if needs.tag else self.lookup(ref)
            )
            for ref, needs in items
        ]

    def _signed(self, ref: reference.Reference, needs: Needs, found: ImageFacts) -> ImageFacts:
        """Signatures are judged only as recorded: an entry without `signatures:` says so."""
        if not needs.signatures or found.signatures is not None or found.errors.get("digest"):
            return found
        return _not_recorded(
            found,
            {
                "signatures": f"{ref} has no signatures in the {self._source} (`signatures: []` "
                "records none)"
            },
        )

    def _tag(self, ref: reference.Reference, found: ImageFacts) -> ImageFacts:
        """For `name:tag@digest`: where the file says the tag points (its entry for
        `name:tag`), and whether that is the digest or an index listing it."""
        if ref.tag is None or ref.digest is None:
            return found
        tagged = self._facts.get(f"{ref.name}:{ref.tag}")
        if tagged is None or tagged.digest is None:
            return _not_recorded(
                found,
                {
                    "tag": f"{ref.name}:{ref.tag} has no digest in the {self._source} "
                    "(record it to confirm the tag)"
                },
            )
        match = tagged.digest == ref.digest or bool(
            tagged.index and any(p.digest == ref.digest for p in tagged.platforms)
        )
        return dataclasses.replace(found, tag_digest=tagged.digest, tag_match=match)

    def lookup(self, ref: reference.Reference) -> ImageFacts:
        found = self._facts.get(str(ref))
        if found is None and ref.digest is not None:
            found = self._facts.get(f"{ref.name}@{ref.digest}")
            if found is None:
                found = self._by_digest.get((ref.name, ref.digest))
        if found is None:
            missing = f"{ref} is not in the {self._source}"
            found = _not_recorded(
                ImageFacts(), dict.fromkeys(("digest", "platforms", "manifest", "config"), missing)
            )
        if found.digest is None and ref.digest is not None:
            found = dataclasses.replace(found, digest=ref.digest)
        if found.tier is None:
            tier = offline_tier(ref.registry, ref.repository)
            found = dataclasses.replace(
                found, tier=tier, tier_source="offline rule" if tier else None
            )
            if tier is None:
                found = _not_recorded(found, {"tier": f"{ref} has no tier in the {self._source}"})
        return found


NOT_RECORDED = Cause.NOT_RECORDED.text()


def _not_recorded(found: ImageFacts, details: Mapping[str, str]) -> ImageFacts:
    """`found` with facts the file does not record: classified as such in `errors` (the same
    words for any file, as the registry resolver's are), `details` saying which and where."""
    return dataclasses.replace(
        found,
        errors=MappingProxyType({**found.errors, **dict.fromkeys(details, NOT_RECORDED)}),
        details=MappingProxyType({**found.details, **details}),
    )
