"""Push deterministic test images to a registry through the distribution HTTP API."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import requests

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
IN_TOTO = "application/vnd.in-toto+json"

Media = Literal["docker", "oci"]
Auth = tuple[str, str] | None


def blob_bytes(seed: str, size: int = 512) -> bytes:
    """`size` random-looking bytes, always the same for the same seed."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}/{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(document: dict[str, Any]) -> bytes:
    """The exact bytes pushed for a JSON document (sorted keys, compact)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def push_blob(base_url: str, repo: str, data: bytes, *, auth: Auth = None) -> str:
    """Monolithic upload: POST to open an upload, PUT the bytes with `?digest=`."""
    digest = sha256(data)
    with requests.Session() as session:
        session.auth = auth
        with session.post(f"{base_url}/v2/{repo}/blobs/uploads/", timeout=10) as opened:
            if opened.status_code != 202:
                raise RuntimeError(f"upload not opened: HTTP {opened.status_code} {opened.text}")
            location = requests.compat.urljoin(base_url + "/", opened.headers["Location"])
        sep = "&" if "?" in location else "?"
        with session.put(
            f"{location}{sep}digest={digest}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=10,
        ) as put:
            if put.status_code != 201:
                raise RuntimeError(f"blob not stored: HTTP {put.status_code} {put.text}")
    return digest


def put_manifest(
    base_url: str, repo: str, reference: str, body: bytes, media_type: str, *, auth: Auth = None
) -> str:
    """PUT a manifest under a tag or digest; returns its digest."""
    with requests.put(
        f"{base_url}/v2/{repo}/manifests/{reference}",
        data=body,
        headers={"Content-Type": media_type},
        auth=auth,
        timeout=10,
    ) as response:
        if response.status_code != 201:
            raise RuntimeError(f"manifest refused: HTTP {response.status_code} {response.text}")
    return sha256(body)


@dataclass(frozen=True)
class PushedImage:
    """What was pushed for one image: digests and sizes, for assertions."""

    digest: str
    size: int
    media_type: str
    config_digest: str
    layer_digests: tuple[str, ...]
    layer_sizes: tuple[int, ...]


def build_image(
    base_url: str,
    repo: str,
    tag: str,
    *,
    layers: Sequence[bytes],
    config: dict[str, Any],
    media: Media = "docker",
    auth: Auth = None,
    layer_type: str | None = None,
    config_type: str | None = None,
    annotations: dict[str, str] | None = None,
) -> PushedImage:
    """Push layers, the config and the manifest; return everything about it."""
    oci = media == "oci"
    config_body = canonical(config)
    config_digest = push_blob(base_url, repo, config_body, auth=auth)
    layer_digests = tuple(push_blob(base_url, repo, layer, auth=auth) for layer in layers)
    manifest_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    document: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": {
            "mediaType": config_type or (OCI_CONFIG if oci else DOCKER_CONFIG),
            "digest": config_digest,
            "size": len(config_body),
        },
        "layers": [
            {
                "mediaType": layer_type or (OCI_LAYER if oci else DOCKER_LAYER),
                "digest": digest,
                "size": len(layer),
            }
            for digest, layer in zip(layer_digests, layers, strict=True)
        ],
    }
    if annotations:
        document["annotations"] = annotations
    body = canonical(document)
    digest = put_manifest(base_url, repo, tag, body, manifest_type, auth=auth)
    return PushedImage(
        digest=digest,
        size=len(body),
        media_type=manifest_type,
        config_digest=config_digest,
        layer_digests=layer_digests,
        layer_sizes=tuple(len(layer) for layer in layers),
    )


Layer = tuple[str, bytes, dict[str, str]]  # (media type, body, annotations)


def push_artifact(
    base_url: str, repo: str, tag: str | None, config: dict[str, Any], layers: Sequence[Layer]
) -> tuple[str, bytes]:
    """Push an OCI manifest over the `config` document and the annotated `layers` (blobs
    first) under `tag`, or under its own digest when None; return its digest and body."""
    config_body = canonical(config)
    config_digest = push_blob(base_url, repo, config_body)
    entries = [
        {
            "mediaType": media_type,
            "digest": push_blob(base_url, repo, body),
            "size": len(body),
            "annotations": annotations,
        }
        for media_type, body, annotations in layers
    ]
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_body)},
            "layers": entries,
        }
    )
    return put_manifest(base_url, repo, tag or sha256(manifest), manifest, OCI_MANIFEST), manifest


def push_image(
    base_url: str,
    repo: str,
    tag: str,
    *,
    layers: Sequence[bytes],
    config: dict[str, Any],
    media: Media = "docker",
    auth: Auth = None,
) -> str:
    """Push a single-platform image; returns its manifest digest."""
    return build_image(
        base_url, repo, tag, layers=layers, config=config, media=media, auth=auth
    ).digest


def image_config(
    platform: str, *, user: str = "", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """A minimal image config for `os/arch[/variant]`."""
    os_name, arch, *rest = platform.split("/")
    config: dict[str, Any] = {
        "architecture": arch,
        "os": os_name,
        "created": "2024-05-01T12:00:00.123456789Z",
        "config": {"User": user, "Labels": labels or {}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    if rest:
        config["variant"] = rest[0]
    return config


@dataclass(frozen=True)
class PushedIndex:
    """An index and the attestation manifests pushed with it."""

    digest: str
    media_type: str
    attestations: tuple[str, ...]


def _platform_object(platform: str) -> dict[str, str]:
    os_name, arch, *rest = platform.split("/")
    out = {"architecture": arch, "os": os_name}
    if rest:
        out["variant"] = rest[0]
    return out


def _head(base_url: str, repo: str, digest: str, auth: Auth) -> tuple[str, int]:
    accept = ", ".join((DOCKER_MANIFEST, OCI_MANIFEST, DOCKER_LIST, OCI_INDEX))
    with requests.head(
        f"{base_url}/v2/{repo}/manifests/{digest}",
        headers={"Accept": accept},
        auth=auth,
        timeout=10,
    ) as response:
        response.raise_for_status()
        return response.headers["Content-Type"], int(response.headers["Content-Length"])


def push_index(
    base_url: str,
    repo: str,
    tag: str,
    manifests: Sequence[tuple[str, str]],
    *,
    media: Media = "docker",
    attestations: bool = True,
    auth: Auth = None,
) -> PushedIndex:
    """Push an index over already-pushed manifests [(digest, "os/arch[/variant]")].

    With `attestations`, a buildkit-style attestation manifest (platform
    `unknown/unknown`, `vnd.docker.reference.type: attestation-manifest`) follows each
    image entry.
    """
    entries: list[dict[str, Any]] = []
    attested: list[str] = []
    for digest, platform in manifests:
        media_type, size = _head(base_url, repo, digest, auth)
        entries.append(
            {
                "mediaType": media_type,
                "digest": digest,
                "size": size,
                "platform": _platform_object(platform),
            }
        )
    if attestations:
        for digest, platform in manifests:
            statement = canonical({"_type": "https://in-toto.io/Statement/v0.1", "subject": digest})
            attestation = build_image(
                base_url,
                repo,
                f"att-{digest[7:19]}-{platform.replace('/', '-')}",
                layers=[statement],
                config={"architecture": "unknown", "os": "unknown", "rootfs": {"type": "layers"}},
                media="oci",
                auth=auth,
                layer_type=IN_TOTO,
            )
            attested.append(attestation.digest)
            entries.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": attestation.digest,
                    "size": attestation.size,
                    "platform": {"architecture": "unknown", "os": "unknown"},
                    "annotations": {
                        "vnd.docker.reference.digest": digest,
                        "vnd.docker.reference.type": "attestation-manifest",
                    },
                }
            )
    index_type = OCI_INDEX if media == "oci" else DOCKER_LIST
    body = canonical({"schemaVersion": 2, "mediaType": index_type, "manifests": entries})
    digest = put_manifest(base_url, repo, tag, body, index_type, auth=auth)
    return PushedIndex(digest=digest, media_type=index_type, attestations=tuple(attested))
