"""BuildKit-shaped attestations pushed to a registry: for each platform image of an index, an
attestation manifest (platform `unknown/unknown`, `vnd.docker.reference.type:
attestation-manifest`, `vnd.docker.reference.digest: <image>`) whose layers are in-toto
statements (`application/vnd.in-toto+json`, `in-toto.io/predicate-type`), plain or in a DSSE
envelope signed with a test key."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from typing import Any

from tests.support import cosign, images

IN_TOTO = "application/vnd.in-toto+json"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
SLSA_V1 = "https://slsa.dev/provenance/v1"
SPDX = "https://spdx.dev/Document"
BUILDKIT = "https://mobyproject.org/buildkit@v1"

Statement = tuple[str, bytes]  # (predicate type, layer bytes)


def statement(subject: str, predicate_type: str, predicate: dict[str, Any]) -> bytes:
    algorithm, _, encoded = subject.partition(":")
    return json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": predicate_type,
            "subject": [
                {"name": "pkg:docker/acme/app@1?platform=x", "digest": {algorithm: encoded}}
            ],
            "predicate": predicate,
        }
    ).encode()


def provenance_v02(
    subject: str,
    *,
    builder: str = "https://github.com/acme/app/actions/runs/1",
    source: str = "https://github.com/acme/app.git#refs/tags/v1.2.0",
    build_type: str = BUILDKIT,
) -> Statement:
    """A provenance as BuildKit writes it (mode=max, SLSA v0.2)."""
    return SLSA_V02, statement(
        subject,
        SLSA_V02,
        {
            "builder": {"id": builder},
            "buildType": build_type,
            "invocation": {"configSource": {"uri": source, "entryPoint": "Dockerfile"}},
            "materials": [{"uri": "pkg:docker/alpine@3.20", "digest": {"sha256": "0" * 64}}],
        },
    )


def sbom(subject: str) -> Statement:
    return SPDX, statement(
        subject, SPDX, {"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT", "packages": []}
    )


def signed(key: cosign.KeyPair, made: Statement) -> Statement:
    """The statement in a DSSE envelope signed by `key` (in-toto's envelope)."""
    predicate_type, body = made
    signature = key.sign(cosign.pae(IN_TOTO, body))
    envelope = {
        "payloadType": IN_TOTO,
        "payload": base64.b64encode(body).decode(),
        "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
    }
    return predicate_type, json.dumps(envelope).encode()


def push_attested_index(
    base_url: str,
    repo: str,
    tag: str,
    manifests: Sequence[tuple[str, str]],
    statements: Callable[[str, str], list[Statement]],
) -> str:
    """Push an OCI index over the already pushed `manifests` [(digest, platform)], each
    followed by its attestation manifest holding `statements(digest, platform)`; returns the
    index digest."""
    entries: list[dict[str, Any]] = []
    attestations: list[dict[str, Any]] = []
    for digest, platform in manifests:
        os_name, arch, *rest = platform.split("/")
        entries.append(
            {
                "mediaType": images.OCI_MANIFEST,
                "digest": digest,
                "size": _size(base_url, repo, digest),
                "platform": {
                    "os": os_name,
                    "architecture": arch,
                    **({"variant": rest[0]} if rest else {}),
                },
            }
        )
        config = images.canonical(
            {
                "architecture": "unknown",
                "os": "unknown",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": []},
            }
        )
        config_digest = images.push_blob(base_url, repo, config)
        layers = []
        for predicate_type, body in statements(digest, platform):
            layers.append(
                {
                    "mediaType": IN_TOTO,
                    "digest": images.push_blob(base_url, repo, body),
                    "size": len(body),
                    "annotations": {"in-toto.io/predicate-type": predicate_type},
                }
            )
        manifest = images.canonical(
            {
                "schemaVersion": 2,
                "mediaType": images.OCI_MANIFEST,
                "config": {
                    "mediaType": images.OCI_CONFIG,
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": layers,
            }
        )
        attestation = images.put_manifest(
            base_url, repo, images.sha256(manifest), manifest, images.OCI_MANIFEST
        )
        attestations.append(
            {
                "mediaType": images.OCI_MANIFEST,
                "digest": attestation,
                "size": len(manifest),
                "platform": {"architecture": "unknown", "os": "unknown"},
                "annotations": {
                    "vnd.docker.reference.digest": digest,
                    "vnd.docker.reference.type": "attestation-manifest",
                },
            }
        )
    body = images.canonical(
        {"schemaVersion": 2, "mediaType": images.OCI_INDEX, "manifests": entries + attestations}
    )
    return images.put_manifest(base_url, repo, tag, body, images.OCI_INDEX)


def _size(base_url: str, repo: str, digest: str) -> int:
    import requests

    with requests.head(
        f"{base_url}/v2/{repo}/manifests/{digest}",
        headers={"Accept": images.OCI_MANIFEST},
        timeout=10,
    ) as response:
        response.raise_for_status()
        return int(response.headers["Content-Length"])
