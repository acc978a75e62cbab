"""Media types, digests, manifest/config parsing and platform selection."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from policy import jsonbound
from policy.errors import IntegrityError, UnsupportedManifest
from policy.registry import media

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def descriptor(
    digest: str = D1, media_type: str = media.DOCKER_MANIFEST, **extra: Any
) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": 10, **extra}


def image(media_type: str | None = media.DOCKER_MANIFEST, **override: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "config": descriptor(D1, media.DOCKER_CONFIG),
        "layers": [descriptor(D2, "layer", size=5), descriptor(D3, "layer", size=7)],
    }
    if media_type is not None:
        document["mediaType"] = media_type
    document.update(override)
    return document


def platform(os: str, arch: str, variant: str | None = None) -> dict[str, str]:
    out = {"os": os, "architecture": arch}
    if variant:
        out["variant"] = variant
    return out


def index(*entries: dict[str, Any], media_type: str | None = media.OCI_INDEX) -> dict[str, Any]:
    document: dict[str, Any] = {"schemaVersion": 2, "manifests": list(entries)}
    if media_type is not None:
        document["mediaType"] = media_type
    return document


# --- digests ------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_compute_and_verify_digest(algorithm: str) -> None:
    digest = media.compute_digest(b"hello", algorithm)
    assert digest == f"{algorithm}:{hashlib.new(algorithm, b'hello').hexdigest()}"
    media.verify_digest(b"hello", digest)
    with pytest.raises(IntegrityError, match=f"digest mismatch: expected {digest}, content has"):
        media.verify_digest(b"hellO", digest)


@pytest.mark.parametrize(
    ("digest", "message"),
    [
        ("md5:" + "a" * 32, "unsupported digest"),
        ("sha256", "unsupported digest"),
        ("sha256:" + "A" * 64, "malformed digest"),
        ("sha256:" + "a" * 63, "malformed digest"),
        ("sha512:" + "a" * 64, "malformed digest"),
        ("sha256:" + "g" * 64, "malformed digest"),
    ],
)
def test_parse_digest_rejects(digest: str, message: str) -> None:
    with pytest.raises(IntegrityError, match=message):
        media.parse_digest(digest)
    assert not media.is_digest(digest)


def test_parse_digest_splits() -> None:
    assert media.parse_digest(D1) == ("sha256", "1" * 64)
    assert media.is_digest(D1)


def test_accept_lists_the_four_modern_types() -> None:
    assert sorted(media.ACCEPT.split(", ")) == sorted(media.MANIFEST_TYPES)


# --- manifests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "content_type", "media_type"),
    [
        (image(), media.DOCKER_MANIFEST, media.DOCKER_MANIFEST),
        (image(), f"{media.DOCKER_MANIFEST}; charset=utf-8", media.DOCKER_MANIFEST),
        (image(), None, media.DOCKER_MANIFEST),
        (image(), "application/json", media.DOCKER_MANIFEST),
        (image(media.OCI_MANIFEST), media.OCI_MANIFEST, media.OCI_MANIFEST),
        (image(None), media.OCI_MANIFEST, media.OCI_MANIFEST),
        (image(None), None, media.OCI_MANIFEST),
        (image(None), media.DOCKER_MANIFEST, media.DOCKER_MANIFEST),
    ],
)
def test_image_manifest_media_type_resolution(
    document: dict[str, Any], content_type: str | None, media_type: str
) -> None:
    parsed = media.parse_manifest(body(document), content_type)
    assert isinstance(parsed, media.ImageManifest)
    assert parsed.media_type == media_type
    assert parsed.config == media.Descriptor(media.DOCKER_CONFIG, D1, 10)
    assert [layer.digest for layer in parsed.layers] == [D2, D3]
    assert parsed.total_size == 12


@pytest.mark.parametrize(
    ("document", "content_type", "media_type"),
    [
        (index(media_type=media.OCI_INDEX), media.OCI_INDEX, media.OCI_INDEX),
        (index(media_type=None), None, media.OCI_INDEX),
        (index(media_type=None), media.OCI_INDEX, media.OCI_INDEX),
        (
            index(media_type=media.DOCKER_MANIFEST_LIST),
            media.DOCKER_MANIFEST_LIST,
            media.DOCKER_MANIFEST_LIST,
        ),
    ],
)
def test_index_media_type_resolution(
    document: dict[str, Any], content_type: str | None, media_type: str
) -> None:
    parsed = media.parse_manifest(body(document), content_type)
    assert parsed == media.Index(media_type, ())


def test_index_entries_carry_platform_and_annotations() -> None:
    document = index(
        descriptor(D1, platform=platform("linux", "arm64", "v8")),
        descriptor(
            D2,
            media.OCI_MANIFEST,
            platform=platform("unknown", "unknown"),
            annotations={"vnd.docker.reference.type": "attestation-manifest"},
        ),
        descriptor(D3),
    )
    parsed = media.parse_manifest(body(document), media.OCI_INDEX)
    assert isinstance(parsed, media.Index)
    assert [(d.platform, d.is_attestation) for d in parsed.manifests] == [
        ("linux/arm64/v8", False),
        ("unknown/unknown", True),
        (None, False),
    ]
    assert dict(parsed.manifests[1].annotations) == {
        "vnd.docker.reference.type": "attestation-manifest"
    }


@pytest.mark.parametrize(
    ("raw", "content_type", "message"),
    [
        (b"{", None, "malformed manifest: not JSON"),
        (b"[]", None, "malformed manifest: expected a JSON object, got list"),
        (b'"x"', None, "malformed manifest: expected a JSON object, got str"),
        (b"[" * 100_000, None, "malformed manifest: JSON nested 100000 levels deep"),
        (b"[" * 100_000 + b"]" * 100_000, None, "manifest: JSON nested 100000 levels deep, more"),
        (body(image(schemaVersion=3)), None, "schemaVersion is 3, expected 2"),
        (body(image(schemaVersion=True)), None, "schemaVersion is True"),
        (body(image(mediaType=5)), None, "mediaType is not a string"),
        (body(image(layers="none")), None, "field 'layers' is missing or not a list"),
        (body(image(config=None)), None, "field 'config' is missing or not a dict"),
        (body(image(config=descriptor(digest="sha256:x"))), None, "config.digest: malformed"),
        (body(image(config=descriptor(size=-1))), None, "config.size is missing"),
        (body(image(config=descriptor(size=True))), None, "config.size is missing"),
        (body(image(config=descriptor(size="10"))), None, "config.size is missing"),
        (body(image(config={"digest": D1, "size": 1})), None, "config.mediaType is missing"),
        (body(image(config=descriptor(annotations={"a": 1}))), None, "annotations is not a map"),
        (body(image(layers=[7])), None, r"layers\[0\] is not an object"),
        (body({"schemaVersion": 2}), None, "neither manifests nor config/layers"),
        (body(index({"mediaType": "x"})), None, r"manifests\[0\].digest is missing"),
        (body(index(descriptor(platform="linux/amd64"))), None, "platform is not an object"),
        (body(index(descriptor(platform={"os": "linux"}))), None, "needs string os and arch"),
        (
            body(index(descriptor(platform={"os": "linux", "architecture": "a/b"}))),
            None,
            "must not contain '/'",
        ),
        (
            body(index(descriptor(platform={"os": "l", "architecture": "a", "variant": 8}))),
            None,
            "variant is not a string",
        ),
        (body(index(media_type=None) | {"manifests": {}}), None, "'manifests' is missing or not"),
    ],
)
def test_malformed_manifests_are_integrity_errors(
    raw: bytes, content_type: str | None, message: str
) -> None:
    with pytest.raises(IntegrityError, match=message):
        media.parse_manifest(raw, content_type)


@pytest.mark.parametrize(
    ("document", "content_type", "message"),
    [
        (image(), media.OCI_INDEX, "Content-Type is 'application/vnd.oci.image.index.v1\\+json'"),
        (image(media.OCI_MANIFEST), media.DOCKER_MANIFEST, "document says 'application/vnd.oci"),
        (index(), media.DOCKER_MANIFEST_LIST, "media type mismatch"),
    ],
)
def test_media_type_mismatch_names_both(
    document: dict[str, Any], content_type: str, message: str
) -> None:
    with pytest.raises(IntegrityError, match=message):
        media.parse_manifest(body(document), content_type)


@pytest.mark.parametrize(
    ("document", "content_type", "message"),
    [
        ({"schemaVersion": 1, "fsLayers": []}, None, "deprecated schema1"),
        ({"schemaVersion": 1}, media.SCHEMA1_SIGNED_MANIFEST, "deprecated schema1"),
        (image(media.SCHEMA1_MANIFEST), None, "deprecated schema1"),
        (image("application/vnd.foo+json"), None, "unsupported manifest media type"),
        (image(None), "application/vnd.foo+json", "unsupported manifest media type"),
    ],
)
def test_unsupported_manifests(
    document: dict[str, Any], content_type: str | None, message: str
) -> None:
    with pytest.raises(UnsupportedManifest, match=message):
        media.parse_manifest(body(document), content_type)


@pytest.mark.parametrize(("entries", "ok"), [(1000, True), (1001, False)])
def test_index_entry_bound(entries: int, ok: bool) -> None:
    raw = body(index(*[descriptor(D1, platform=platform("linux", "amd64"))] * entries))
    if ok:
        parsed = media.parse_manifest(raw, None)
        assert isinstance(parsed, media.Index) and len(parsed.manifests) == entries
    else:
        with pytest.raises(IntegrityError, match="1001 entries, more than the limit of 1000"):
            media.parse_manifest(raw, None)


def test_index_entry_bound_is_configurable() -> None:
    raw = body(index(descriptor(D1), descriptor(D2)))
    with pytest.raises(IntegrityError, match="2 entries, more than the limit of 1"):
        media.parse_manifest(raw, None, max_index_entries=1)


# --- platforms ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("linux/amd64", "linux/amd64"),
        ("linux/x86_64", "linux/amd64"),
        ("linux/amd64/v1", "linux/amd64"),
        ("linux/amd64/v3", "linux/amd64/v3"),
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/aarch64", "linux/arm64/v8"),
        ("linux/arm64/8", "linux/arm64/v8"),
        ("linux/arm", "linux/arm/v7"),
        ("linux/arm/6", "linux/arm/v6"),
        ("linux/armhf", "linux/arm/v7"),
        ("linux/armel", "linux/arm/v6"),
        ("linux/i386", "linux/386"),
        ("Linux/AMD64", "linux/amd64"),
        ("windows/amd64", "windows/amd64"),
        ("linux/s390x", "linux/s390x"),
    ],
)
def test_normalize_platform(given: str, normalized: str) -> None:
    assert media.normalize_platform(given) == normalized


ENTRIES = media.Index(
    media.OCI_INDEX,
    (
        media.Descriptor(media.OCI_MANIFEST, D1, 1, "linux/amd64"),
        media.Descriptor(media.OCI_MANIFEST, D2, 1, "linux/arm64/v8"),
        media.Descriptor(media.OCI_MANIFEST, D3, 1, "linux/arm/v7"),
        media.Descriptor(media.OCI_MANIFEST, D1, 1, "unknown/unknown"),
        media.Descriptor(
            media.OCI_MANIFEST,
            D2,
            1,
            "linux/amd64",
            {"vnd.docker.reference.type": "attestation-manifest"},
        ),
        media.Descriptor(media.OCI_INDEX, D3, 1, "linux/amd64"),
        media.Descriptor(media.OCI_MANIFEST, D3, 1, None),
    ),
)


@pytest.mark.parametrize(
    ("patterns", "platforms"),
    [
        (["*"], ["linux/amd64", "linux/arm64/v8", "linux/arm/v7", None]),
        (["linux/amd64"], ["linux/amd64"]),
        (["linux/arm64"], ["linux/arm64/v8"]),
        (["linux/aarch64/v8"], ["linux/arm64/v8"]),
        (["linux/arm"], ["linux/arm/v7"]),
        (["linux/arm/v6"], []),
        (["linux/arm*"], ["linux/arm64/v8", "linux/arm/v7"]),
        (["linux/arm64", "linux/amd64"], ["linux/amd64", "linux/arm64/v8"]),
        (["unknown/unknown"], []),
        (["windows/amd64"], []),
        ([], []),
    ],
)
def test_select_platforms(patterns: list[str], platforms: list[str | None]) -> None:
    assert [d.platform for d in media.select_platforms(ENTRIES, patterns)] == platforms


# --- image config -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({}, media.ImageConfig(None, None, None, None, None, {})),
        (
            {
                "os": "linux",
                "architecture": "arm64",
                "variant": "v8",
                "created": "2024-05-01T12:00:00.123456789Z",
                "config": {"User": "nobody", "Labels": {"a": "b"}},
            },
            media.ImageConfig(
                "linux",
                "arm64",
                "v8",
                "nobody",
                datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC),
                {"a": "b"},
            ),
        ),
        (
            {"created": "2024-05-01T12:00:00+02:00", "config": {"Labels": None}},
            media.ImageConfig(
                None, None, None, None, datetime.fromisoformat("2024-05-01T10:00:00+00:00"), {}
            ),
        ),
        (
            {"created": "2024-05-01T12:00:00", "config": None},
            media.ImageConfig(None, None, None, None, datetime(2024, 5, 1, 12, tzinfo=UTC), {}),
        ),
    ],
)
def test_parse_config(document: dict[str, Any], expected: media.ImageConfig) -> None:
    parsed = media.parse_config(body(document))
    assert parsed == expected


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "expected a JSON object"),
        ({"os": 1}, "os is not a string"),
        ({"config": []}, "config is not an object"),
        ({"config": {"User": 0}}, "config.User is not a string"),
        ({"config": {"Labels": ["a"]}}, "config.Labels is not a map of strings"),
        ({"config": {"Labels": {"a": 1}}}, "config.Labels is not a map of strings"),
        ({"created": "yesterday"}, "created 'yesterday' is not an RFC 3339 time"),
        ({"created": 1714564800}, "created is not a string"),
    ],
)
def test_parse_config_is_strict_on_types(document: Any, message: str) -> None:
    with pytest.raises(IntegrityError, match=f"malformed image config: {message}"):
        media.parse_config(body(document))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{" * 100_000, "JSON nested 100000 levels deep, more than the limit of 64"),
        (b'{"config": ' * 65 + b"{}" + b"}" * 65, "JSON nested 66 levels deep"),
        (b'{"config": {"User": "' + b"9" * 5000 + b'"}, "n": ' + b"9" * 5000 + b"}", "not usable"),
        (b"\xff\xff\xff", "not UTF-8 text"),
    ],
)
def test_parse_config_refuses_hostile_json(raw: bytes, message: str) -> None:
    with pytest.raises(IntegrityError, match=f"malformed image config: {message}"):
        media.parse_config(raw)


def test_parse_config_reads_a_document_nested_exactly_to_the_limit() -> None:
    """64 levels (the object, then 63 nested lists) are read; brackets in strings do not count."""
    labels = {"a": "[[[[{{{{", "b": '\\"[['}
    history: Any = []
    for _ in range(62):
        history = [history]
    document = {"config": {"Labels": labels}, "history": history}
    assert jsonbound.depth(body(document)) == 64
    assert media.parse_config(body(document)).labels == labels
    with pytest.raises(IntegrityError, match="nested 65 levels deep"):
        media.parse_config(body({**document, "history": [history]}))
