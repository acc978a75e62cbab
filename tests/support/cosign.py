"""Sign images in the tests, in cosign's exact layouts, with `cryptography`.

- the `.sig` tag: `sha256-<hex>.sig` names an OCI image manifest whose layers are simple-signing
  payloads (`application/vnd.dev.cosign.simplesigning.v1+json`), each carrying its base64
  signature in the `dev.cosignproject.cosign/signature` annotation (cosign's `sign --key`);
- OCI 1.1 referrers: an artifact manifest (`artifactType` a Sigstore bundle type, `subject` the
  image) whose one layer is the bundle; a registry without the referrers API finds it through
  the fallback tag `sha256-<hex>`, an index listing the referrers (cosign and oras write it).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Literal

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from tests.support import images

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY = "application/vnd.oci.empty.v1+json"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
IN_TOTO = "application/vnd.in-toto+json"

Kind = Literal["p256", "p384", "ed25519", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class KeyPair:
    private: PrivateKey
    kind: Kind

    @property
    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    @property
    def fingerprint(self) -> str:
        import hashlib

        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return "sha256:" + hashlib.sha256(der).hexdigest()

    def sign(self, data: bytes) -> bytes:
        """What cosign signs with: ECDSA with SHA-256 (cosign's default hash, P-384 too),
        Ed25519, RSA PKCS#1 v1.5 with SHA-256."""
        key = self.private
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(hashes.SHA256()))
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(data)
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def sign_digest(self, digest: bytes) -> bytes:
        """A signature over the message whose SHA-256 is `digest` (a bundle's
        messageSignature)."""
        key = self.private
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        raise ValueError("Ed25519 cannot sign a digest")


def keypair(kind: Kind = "p256") -> KeyPair:
    private: PrivateKey
    if kind == "p256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif kind == "p384":
        private = ec.generate_private_key(ec.SECP384R1())
    elif kind == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return KeyPair(private, kind)


def payload(digest: str, reference: str) -> bytes:
    """cosign's simple-signing payload, byte for byte as cosign writes it (Go's json.Marshal
    of its struct: fields in this order, no spaces, `optional: null`)."""
    return (
        f'{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":'
        f'{{"docker-manifest-digest":"{digest}"}},"type":"cosign container image signature"}},'
        '"optional":null}'
    ).encode()


def push_cosign(
    base_url: str, repo: str, digest: str, layers: list[tuple[bytes, str | dict[str, str]]]
) -> str:
    """Push cosign's `.sig` manifest for `digest`: `layers` are (payload, base64 signature —
    or all the layer's annotations, for keyless ones). Returns the manifest's digest."""
    tag = digest.replace(":", "-") + ".sig"
    entries = [
        (
            SIMPLE_SIGNING,
            body,
            signature if isinstance(signature, dict) else {SIGNATURE_ANNOTATION: signature},
        )
        for body, signature in layers
    ]
    return images.push_artifact(base_url, repo, tag, _EMPTY_CONFIG, entries)[0]


# The config document of cosign's `.sig` and `.att` manifests.
_EMPTY_CONFIG = {
    "architecture": "",
    "os": "",
    "config": {},
    "rootfs": {"type": "layers", "diff_ids": []},
}


DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"


def envelope(key: KeyPair | None, body: bytes, *, signature: bytes | None = None) -> bytes:
    """A DSSE envelope of the in-toto statement `body` as `cosign attest` writes it into a
    `.att` layer, signed by `key` (or carrying `signature`, made elsewhere)."""
    if signature is None:
        assert key is not None
        signature = key.sign(pae(IN_TOTO, body))
    return json.dumps(
        {
            "payloadType": IN_TOTO,
            "payload": base64.b64encode(body).decode(),
            "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
        }
    ).encode()


def push_attestations(
    base_url: str, repo: str, digest: str, layers: list[tuple[bytes, dict[str, str]]]
) -> str:
    """Push cosign's `.att` manifest for `digest`: `layers` are (DSSE envelope, annotations;
    cosign's signature annotation is empty there, the envelope holds the signature)."""
    tag = digest.replace(":", "-") + ".att"
    entries = [
        (DSSE_ENVELOPE, body, {SIGNATURE_ANNOTATION: "", **annotations})
        for body, annotations in layers
    ]
    return images.push_artifact(base_url, repo, tag, _EMPTY_CONFIG, entries)[0]


def sign_cosign(
    base_url: str, repo: str, digest: str, key: KeyPair, *, reference: str | None = None
) -> str:
    """Sign `digest` with `key` in cosign's `.sig` layout (one layer)."""
    body = payload(digest, reference or f"{base_url.split('//')[-1]}/{repo}")
    signature = base64.b64encode(key.sign(body)).decode()
    return push_cosign(base_url, repo, digest, [(body, signature)])


def pae(payload_type: str, body: bytes) -> bytes:
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(body), body)


def statement(digest: str, predicate_type: str = COSIGN_SIGN_PREDICATE) -> bytes:
    algorithm, _, encoded = digest.partition(":")
    return json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "image", "digest": {algorithm: encoded}}],
            "predicateType": predicate_type,
            "predicate": {},
        }
    ).encode()


def dsse_bundle(
    key: KeyPair, body: bytes, payload_type: str = "application/vnd.in-toto+json"
) -> bytes:
    """A v0.3 Sigstore bundle with a DSSE envelope over `body`, signed by `key` (keyed: the
    verification material is a public-key hint)."""
    signature = key.sign(pae(payload_type, body))
    return json.dumps(
        {
            "mediaType": BUNDLE_V03,
            "verificationMaterial": {"publicKey": {"hint": key.fingerprint}, "tlogEntries": []},
            "dsseEnvelope": {
                "payload": base64.b64encode(body).decode(),
                "payloadType": payload_type,
                "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
            },
        }
    ).encode()


def message_bundle(key: KeyPair, digest: str) -> bytes:
    """A v0.3 bundle whose messageSignature signs the manifest whose digest is `digest`."""
    hashed = bytes.fromhex(digest.partition(":")[2])
    return json.dumps(
        {
            "mediaType": BUNDLE_V03,
            "verificationMaterial": {"publicKey": {"hint": key.fingerprint}, "tlogEntries": []},
            "messageSignature": {
                "messageDigest": {
                    "algorithm": "SHA2_256",
                    "digest": base64.b64encode(hashed).decode(),
                },
                "signature": base64.b64encode(key.sign_digest(hashed)).decode(),
            },
        }
    ).encode()


def _subject(base_url: str, repo: str, digest: str) -> dict[str, Any]:
    accept = ", ".join(
        (images.OCI_INDEX, images.DOCKER_LIST, images.OCI_MANIFEST, images.DOCKER_MANIFEST)
    )
    with requests.head(
        f"{base_url}/v2/{repo}/manifests/{digest}", headers={"Accept": accept}, timeout=10
    ) as response:
        response.raise_for_status()
        return {
            "mediaType": response.headers["Content-Type"],
            "digest": digest,
            "size": int(response.headers["Content-Length"]),
        }


def push_referrer(
    base_url: str,
    repo: str,
    digest: str,
    bundle: bytes,
    *,
    artifact_type: str = BUNDLE_V03,
    fallback_tag: bool = True,
) -> tuple[str, dict[str, Any]]:
    """Push a bundle as an OCI 1.1 referrer of `digest`; with `fallback_tag`, also list it in
    the `sha256-<hex>` referrers tag index. Returns the referrer's digest and its descriptor
    (as a referrers index lists it)."""
    empty = b"{}"
    empty_digest = images.push_blob(base_url, repo, empty)
    layer_digest = images.push_blob(base_url, repo, bundle)
    manifest = images.canonical(
        {
            "schemaVersion": 2,
            "mediaType": images.OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": EMPTY, "digest": empty_digest, "size": len(empty)},
            "layers": [{"mediaType": artifact_type, "digest": layer_digest, "size": len(bundle)}],
            "subject": _subject(base_url, repo, digest),
        }
    )
    referrer = images.put_manifest(
        base_url, repo, images.sha256(manifest), manifest, images.OCI_MANIFEST
    )
    descriptor = {
        "mediaType": images.OCI_MANIFEST,
        "digest": referrer,
        "size": len(manifest),
        "artifactType": artifact_type,
    }
    if fallback_tag:
        tag = digest.replace(":", "-")
        listed: list[dict[str, Any]] = []
        with requests.get(
            f"{base_url}/v2/{repo}/manifests/{tag}",
            headers={"Accept": images.OCI_INDEX},
            timeout=10,
        ) as existing:
            if existing.status_code == 200:
                listed = existing.json().get("manifests", [])
        index = images.canonical(
            {"schemaVersion": 2, "mediaType": images.OCI_INDEX, "manifests": [*listed, descriptor]}
        )
        images.put_manifest(base_url, repo, tag, index, images.OCI_INDEX)
    return referrer, descriptor
