"""Manifest media types, digests, and strict parsing of manifests and image configs.

Pure: standard library only. Every malformed document becomes an `IntegrityError`
("malformed manifest: ...") and never a KeyError or TypeError; schema1 manifests become
`UnsupportedManifest`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from policy import jsonbound
from policy.errors import IntegrityError, UnsupportedManifest

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+json"
SCHEMA1_SIGNED_MANIFEST = "application/vnd.docker.distribution.manifest.v1+prettyjws"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"

INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
IMAGE_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES
SCHEMA1_TYPES = frozenset({SCHEMA1_MANIFEST, SCHEMA1_SIGNED_MANIFEST})

# The Accept header of every manifest request: the four modern types, never schema1.
ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

# Content types that say nothing about the document: the body's mediaType decides.
GENERIC_TYPES = frozenset({"", "application/json", "application/octet-stream", "text/plain"})

MAX_INDEX_ENTRIES = 1000
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
"""The largest manifest or config body parsed at all (the client caps each kind lower or equal
before reading: `Limits.manifest_bytes`, `Limits.config_bytes`)."""
ATTESTATION_PLATFORM = "unknown/unknown"
REFERENCE_TYPE_ANNOTATION = "vnd.docker.reference.type"
ATTESTATION_REFERENCE_TYPE = "attestation-manifest"

_DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")


# --- digests ---------------------------------------------------------------------------


def parse_digest(digest: str) -> tuple[str, str]:
    """Split `sha256:<hex>` into (algorithm, hex); IntegrityError if it is not one we verify."""
    algorithm, sep, encoded = digest.partition(":")
    length = _DIGEST_LENGTHS.get(algorithm)
    if not sep or length is None:
        raise IntegrityError(f"unsupported digest {_clip(digest)!r}: expected sha256 or sha512")
    if len(encoded) != length or not _HEX.fullmatch(encoded):
        raise IntegrityError(
            f"malformed digest {_clip(digest)!r}: expected {length} lowercase hex digits"
        )
    return algorithm, encoded


def is_digest(text: str) -> bool:
    """Whether `text` is a sha256/sha512 digest (as opposed to a tag)."""
    try:
        parse_digest(text)
    except IntegrityError:
        return False
    return True


def compute_digest(body: bytes, algorithm: str = "sha256") -> str:
    """`algorithm:hex` of `body`, for sha256 or sha512."""
    if algorithm not in _DIGEST_LENGTHS:
        raise IntegrityError(f"unsupported digest algorithm {algorithm!r}")
    return f"{algorithm}:{hashlib.new(algorithm, body).hexdigest()}"


def verify_digest(body: bytes, digest: str) -> None:
    """Raise IntegrityError naming both digests unless `body` hashes to `digest`."""
    algorithm, _ = parse_digest(digest)
    actual = compute_digest(body, algorithm)
    if actual != digest:
        raise IntegrityError(f"digest mismatch: expected {digest}, content has {actual}")


# --- documents -------------------------------------------------------------------------


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: an index entry, a config or a layer.

    `platform` is `os/architecture[/variant]` exactly as the document says (not normalized).
    """

    media_type: str
    digest: str
    size: int
    platform: str | None = None
    annotations: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    artifact_type: str | None = None
    """The `artifactType` of an OCI 1.1 referrers entry (None when not said)."""

    @property
    def is_attestation(self) -> bool:
        """A buildkit attestation entry rather than a runnable image."""
        return (
            self.platform == ATTESTATION_PLATFORM
            or self.annotations.get(REFERENCE_TYPE_ANNOTATION) == ATTESTATION_REFERENCE_TYPE
        )

    @property
    def is_index(self) -> bool:
        """Whether this entry points at another index (nested indexes are never followed)."""
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True)
class Index:
    """An OCI image index or a Docker manifest list."""

    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageManifest:
    """One image manifest (Docker schema2 or OCI)."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]

    @property
    def total_size(self) -> int:
        """Sum of the (compressed) layer sizes, what registries show as the image size."""
        return sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class ImageConfig:
    """The fields of an image config blob that rules look at; missing fields are None/empty."""

    os: str | None
    architecture: str | None
    variant: str | None
    user: str | None
    created: datetime | None
    labels: Mapping[str, str]


def content_type_of(header: str | None) -> str:
    """The bare media type of a Content-Type header value (parameters dropped, lowercased)."""
    if header is None:
        return ""
    return header.split(";", 1)[0].strip().lower()


def resolve_media_type(document: Mapping[str, Any], content_type: str | None) -> str:
    """The media type of a manifest, from its `mediaType` field and the Content-Type header.

    Both must agree when both are specific; OCI documents may omit `mediaType`, then the
    header or the document's shape decides. Schema1 raises UnsupportedManifest.
    """
    header = content_type_of(content_type)
    declared = document.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _malformed("mediaType is not a string")
    if (
        (type(document.get("schemaVersion")) is int and document.get("schemaVersion") == 1)
        or declared in SCHEMA1_TYPES
        or header in SCHEMA1_TYPES
        or "fsLayers" in document
    ):
        raise UnsupportedManifest("unsupported (deprecated schema1) manifest")
    if declared is not None and header not in GENERIC_TYPES and declared != header:
        raise IntegrityError(
            f"media type mismatch: Content-Type is {_clip(header)!r}, "
            f"document says {_clip(declared)!r}"
        )
    media_type = declared if declared is not None else header
    if media_type in GENERIC_TYPES:
        if "manifests" in document:
            media_type = OCI_INDEX
        elif "config" in document and "layers" in document:
            media_type = OCI_MANIFEST
        else:
            raise _malformed("no mediaType and neither manifests nor config/layers")
    if media_type not in MANIFEST_TYPES:
        raise UnsupportedManifest(f"unsupported manifest media type {_clip(media_type)!r}")
    return media_type


def parse_manifest(
    body: bytes,
    content_type: str | None,
    *,
    max_index_entries: int = MAX_INDEX_ENTRIES,
) -> Index | ImageManifest:
    """Parse a manifest body into an Index or ImageManifest, checking every field's type."""
    document = _load_object(body, "manifest")
    media_type = resolve_media_type(document, content_type)
    schema_version = document.get("schemaVersion")
    if schema_version != 2 or isinstance(schema_version, bool):
        raise _malformed(f"schemaVersion is {_clip(repr(schema_version))}, expected 2")
    if media_type in INDEX_TYPES:
        entries = _field(document, "manifests", list, "index")
        if len(entries) > max_index_entries:
            raise IntegrityError(
                f"index has {len(entries)} entries, more than the limit of {max_index_entries}"
            )
        manifests = tuple(
            _descriptor(entry, f"manifests[{i}]", with_platform=True)
            for i, entry in enumerate(entries)
        )
        return Index(media_type=media_type, manifests=manifests)
    config = _descriptor(_field(document, "config", dict, "manifest"), "config")
    layers = _field(document, "layers", list, "manifest")
    return ImageManifest(
        media_type=media_type,
        config=config,
        layers=tuple(_descriptor(layer, f"layers[{i}]") for i, layer in enumerate(layers)),
    )


def parse_config(body: bytes) -> ImageConfig:
    """Parse an image config blob; tolerant of missing fields, strict on wrong types."""
    document = _load_object(body, "image config")
    inner = document.get("config")
    if inner is None:
        inner = {}
    if not isinstance(inner, dict):
        raise _malformed("config is not an object", what="image config")
    labels = inner.get("Labels")
    if labels is None:
        labels = {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise _malformed("config.Labels is not a map of strings", what="image config")
    return ImageConfig(
        os=_optional_str(document, "os"),
        architecture=_optional_str(document, "architecture"),
        variant=_optional_str(document, "variant"),
        user=_optional_str(inner, "User", path="config.User"),
        created=_parse_created(_optional_str(document, "created")),
        labels=MappingProxyType(dict(labels)),
    )


# --- platforms -------------------------------------------------------------------------


def normalize_platform(platform: str) -> str:
    """`os/arch[/variant]` normalized as containerd does.

    Aliases map to Go names (x86_64 → amd64, aarch64 → arm64); arm64 defaults to variant
    v8, arm to v7, amd64 carries no variant for v1.
    """
    parts = platform.strip().lower().split("/")
    os_name = parts[0]
    arch = parts[1] if len(parts) > 1 else ""
    variant = parts[2] if len(parts) > 2 else ""
    if arch in ("i386",):
        arch = "386"
    elif arch in ("x86_64", "x86-64", "amd64"):
        arch = "amd64"
        if variant == "v1":
            variant = ""
    elif arch in ("aarch64", "arm64"):
        arch = "arm64"
        if variant in ("", "8"):
            variant = "v8"
    elif arch == "armhf":
        arch, variant = "arm", "v7"
    elif arch == "armel":
        arch, variant = "arm", "v6"
    elif arch == "arm":
        if variant == "":
            variant = "v7"
        elif variant in ("5", "6", "7", "8"):
            variant = "v" + variant
    return "/".join(p for p in (os_name, arch, variant) if p)


def platform_matches(platform: str | None, pattern: str) -> bool:
    """Whether an entry's platform matches a pattern: "*" matches all, globs match the
    normalized platform, anything else compares normalized platforms."""
    if pattern == "*":
        return True
    if platform is None:
        return False
    normalized = normalize_platform(platform)
    if "*" in pattern or "?" in pattern:
        return fnmatch.fnmatchcase(normalized, pattern.lower())
    return normalized == normalize_platform(pattern)


def select_platforms(index: Index, patterns: Iterable[str]) -> list[Descriptor]:
    """Entries of `index` matching any pattern, in index order.

    Attestation entries and nested indexes are never selected.
    """
    wanted = tuple(patterns)
    return [
        entry
        for entry in index.manifests
        if not entry.is_attestation
        and not entry.is_index
        and any(platform_matches(entry.platform, p) for p in wanted)
    ]


# --- helpers ---------------------------------------------------------------------------


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _malformed(problem: str, *, what: str = "manifest") -> IntegrityError:
    return IntegrityError(f"malformed {what}: {problem}")


def _load_object(body: bytes, what: str) -> dict[str, Any]:
    try:
        document = jsonbound.loads(body, max_bytes=MAX_DOCUMENT_BYTES)
    except jsonbound.JSONRefused as exc:
        raise _malformed(str(exc), what=what) from None
    if not isinstance(document, dict):
        raise _malformed(f"expected a JSON object, got {type(document).__name__}", what=what)
    return document


def _field(document: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = document.get(key)
    if not isinstance(value, kind):
        raise _malformed(f"{where} field {key!r} is missing or not a {kind.__name__}")
    return value


def _descriptor(value: Any, path: str, *, with_platform: bool = False) -> Descriptor:
    if not isinstance(value, dict):
        raise _malformed(f"{path} is not an object")
    media_type = value.get("mediaType")
    digest = value.get("digest")
    size = value.get("size")
    if not isinstance(media_type, str):
        raise _malformed(f"{path}.mediaType is missing or not a string")
    if not isinstance(digest, str):
        raise _malformed(f"{path}.digest is missing or not a string")
    try:
        parse_digest(digest)
    except IntegrityError as exc:
        raise _malformed(f"{path}.digest: {exc}") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _malformed(f"{path}.size is missing or not a non-negative integer")
    annotations = value.get("annotations")
    if annotations is None:
        annotations = {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise _malformed(f"{path}.annotations is not a map of strings")
    platform = _platform(value.get("platform"), path) if with_platform else None
    artifact_type = value.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise _malformed(f"{path}.artifactType is not a string")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        platform=platform,
        annotations=MappingProxyType(dict(annotations)),
        artifact_type=artifact_type,
    )


def _platform(value: Any, path: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _malformed(f"{path}.platform is not an object")
    os_name = value.get("os")
    arch = value.get("architecture")
    variant = value.get("variant")
    if not isinstance(os_name, str) or not isinstance(arch, str) or not os_name or not arch:
        raise _malformed(f"{path}.platform needs string os and architecture")
    if variant is not None and not isinstance(variant, str):
        raise _malformed(f"{path}.platform.variant is not a string")
    if "/" in os_name + arch + (variant or ""):
        raise _malformed(f"{path}.platform fields must not contain '/'")
    return f"{os_name}/{arch}/{variant}" if variant else f"{os_name}/{arch}"


def _optional_str(document: Mapping[str, Any], key: str, *, path: str | None = None) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise _malformed(f"{path or key} is not a string", what="image config")
    return value


_FRACTION = re.compile(r"(\.\d{6})\d+")


def _parse_created(text: str | None) -> datetime | None:
    if text is None or text == "":
        return None
    # Go writes nanoseconds; Python reads at most microseconds.
    trimmed = _FRACTION.sub(r"\1", text)
    try:
        created = datetime.fromisoformat(trimmed)
    except ValueError:
        raise _malformed(
            f"created {_clip(text)!r} is not an RFC 3339 time", what="image config"
        ) from None
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return created
