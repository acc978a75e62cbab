"""BuildKit-shaped attestations pushed to a registry: for each platform image of an index, an
attestation manifest (platform `unknown/unknown`, `vnd.docker.reference.type:
attestation-manifest`, `vnd.docker.reference.digest: <image>`) whose layers are in-toto
statements (`application/vnd.in-toto+json`, `in-toto.io/predicate-type`), plain or in a DSSE
envelope signed with a test key."""

from __future__ import annotations

import base64
import itertools
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
        attestations.append(
            _push_attestation_manifest(base_url, repo, digest, statements(digest, platform))
        )
    body = images.canonical(
        {"schemaVersion": 2, "mediaType": images.OCI_INDEX, "manifests": entries + attestations}
    )
    return images.put_manifest(base_url, repo, tag, body, images.OCI_INDEX)


def _push_attestation_manifest(
    base_url: str, repo: str, digest: str, statements: list[Statement]
) -> dict[str, Any]:
    """Push the attestation manifest of image `digest` (a layer per statement); return its
    entry in the index."""
    config = {
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    layers = [
        (IN_TOTO, body, {"in-toto.io/predicate-type": predicate_type})
        for predicate_type, body in statements
    ]
    attestation, manifest = images.push_artifact(base_url, repo, None, config, layers)
    return {
        "mediaType": images.OCI_MANIFEST,
        "digest": attestation,
        "size": len(manifest),
        "platform": {"architecture": "unknown", "os": "unknown"},
        "annotations": {
            "vnd.docker.reference.digest": digest,
            "vnd.docker.reference.type": "attestation-manifest",
        },
    }


_N = itertools.count()


def push_platform_image(base_url: str, repo: str, platform: str) -> str:
    """A fresh single-platform OCI image of `platform` (its own layer) under a new tag; its
    digest."""
    n = next(_N)
    return images.push_image(
        base_url,
        repo,
        f"p{n}",
        layers=[images.blob_bytes(f"{repo}/{platform}/{n}", 300)],
        config=images.image_config(platform),
        media="oci",
    )


def push_two_platform_index(
    base_url: str,
    repo: str,
    statements: Callable[[str, str], list[Statement]] = lambda d, p: [],
) -> tuple[str, str, str, str]:
    """A fresh linux/amd64 + linux/arm64 index under a new tag, with BuildKit attestations
    from `statements`: its tag, index digest, and the amd64 and arm64 digests."""
    amd = push_platform_image(base_url, repo, "linux/amd64")
    arm = push_platform_image(base_url, repo, "linux/arm64")
    tag = f"t{next(_N)}"
    index = push_attested_index(
        base_url, repo, tag, [(amd, "linux/amd64"), (arm, "linux/arm64")], statements
    )
    return tag, index, amd, arm


def _size(base_url: str, repo: str, digest: str) -> int:
    import requests

    with requests.head(
        f"{base_url}/v2/{repo}/manifests/{digest}",
        headers={"Accept": images.OCI_MANIFEST},
        timeout=10,
    ) as response:
        response.raise_for_status()
        return int(response.headers["Content-Length"])
