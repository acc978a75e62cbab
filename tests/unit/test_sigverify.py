"""Verifying cosign signatures and Sigstore bundles: every key type, every way to be wrong,
hostile bytes, and one real signature recorded from a public project."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from policy import signing, sigverify
from policy.registry import media
from tests.support import cosign

DIGEST = "sha256:" + "1" * 64
OTHER = "sha256:" + "2" * 64
DATA = Path(__file__).resolve().parents[1] / "data" / "signatures" / "dangerzone"


def _keys(*pairs: cosign.KeyPair) -> sigverify.Trust:
    return sigverify.Trust(
        sigverify.load_keys([signing.parse_public_key(p.public_pem).der for p in pairs])
    )


def _cosign(key: cosign.KeyPair, body: bytes) -> dict[str, str]:
    return {sigverify.SIGNATURE_ANNOTATION: base64.b64encode(key.sign(body)).decode()}


@pytest.mark.parametrize("kind", ["p256", "p384", "ed25519", "rsa"])
def test_cosign_signature_by_each_key_type_verifies(kind: cosign.Kind) -> None:
    key = cosign.keypair(kind)
    body = cosign.payload(DIGEST, "registry.example/app")
    found = sigverify.verify_cosign(body, _cosign(key, body), DIGEST, _keys(key))
    assert found.verified and found.reason == ""
    assert found.key == key.fingerprint
    assert found.signer == f"key {signing.short(key.fingerprint)}"


def test_p384_signed_with_sha384_verifies_too() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = cosign.keypair("p384")
    body = cosign.payload(DIGEST, "r/app")
    assert isinstance(key.private, ec.EllipticCurvePrivateKey)
    signature = key.private.sign(body, ec.ECDSA(hashes.SHA384()))
    annotations = {sigverify.SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()}
    assert sigverify.verify_cosign(body, annotations, DIGEST, _keys(key)).verified


def test_which_of_several_keys_signed_is_said() -> None:
    a, b = cosign.keypair(), cosign.keypair("ed25519")
    body = cosign.payload(DIGEST, "r/app")
    assert sigverify.verify_cosign(body, _cosign(b, body), DIGEST, _keys(a, b)).key == b.fingerprint


def test_wrong_key_is_not_verified() -> None:
    signer, trusted = cosign.keypair(), cosign.keypair()
    body = cosign.payload(DIGEST, "r/app")
    found = sigverify.verify_cosign(body, _cosign(signer, body), DIGEST, _keys(trusted))
    assert (found.verified, found.key, found.reason, found.signer) == (
        False,
        None,
        "does not verify with a configured key",
        "unknown key",
    )


def test_payload_for_another_digest_is_not_verified_even_by_the_right_key() -> None:
    key = cosign.keypair()
    body = cosign.payload(OTHER, "r/app")
    found = sigverify.verify_cosign(body, _cosign(key, body), DIGEST, _keys(key))
    assert not found.verified and found.key is None
    assert found.reason == (
        "the payload names sha256:222222222222…, not this image sha256:111111111111…"
    )
    assert found.signer == f"key {signing.short(key.fingerprint)}"


def test_tampered_payload_is_not_verified() -> None:
    key = cosign.keypair()
    body = cosign.payload(OTHER, "r/app")
    annotations = _cosign(key, body)
    tampered = body.replace(OTHER.encode(), DIGEST.encode())
    found = sigverify.verify_cosign(tampered, annotations, DIGEST, _keys(key))
    assert not found.verified
    assert found.reason == "does not verify with a configured key"


@pytest.mark.parametrize(
    ("body", "annotations", "reason"),
    [
        (b"{}", {}, "the layer has no dev.cosignproject.cosign/signature annotation"),
        (b"{}", {sigverify.SIGNATURE_ANNOTATION: "***"}, "the signature is not valid base64"),
        (
            b"{}",
            {sigverify.SIGNATURE_ANNOTATION: "A" * 20000},
            "the signature annotation is too long",
        ),
        (b"[" * 10000, {sigverify.SIGNATURE_ANNOTATION: "AAAA"}, "the payload is not valid JSON"),
        (b"\xff\xfe", {sigverify.SIGNATURE_ANNOTATION: "AAAA"}, "the payload is not valid JSON"),
        (
            b"x" * (sigverify.MAX_PAYLOAD_BYTES + 1),
            {sigverify.SIGNATURE_ANNOTATION: "AAAA"},
            "the payload is over 262144 bytes",
        ),
        (
            b'{"critical": {"type": "something else"}}',
            {sigverify.SIGNATURE_ANNOTATION: "AAAA"},
            "the payload is not a cosign container image signature",
        ),
        (
            b'{"critical": {"type": "cosign container image signature", "image": 7}}',
            {sigverify.SIGNATURE_ANNOTATION: "AAAA"},
            "the payload names no docker-manifest-digest",
        ),
    ],
)
def test_hostile_cosign_layers_give_a_reason(
    body: bytes, annotations: dict[str, str], reason: str
) -> None:
    found = sigverify.verify_cosign(body, annotations, DIGEST, _keys(cosign.keypair()))
    assert not found.verified
    assert found.reason.startswith(reason)


def image_digest() -> str:
    return "sha256:7396780b5862cf8b37527854a2a2331e5c746b6a71aa1f424258c3bfaf3a1bd7"


def test_a_real_cosign_signature_recorded_from_dangerzone_verifies() -> None:
    """Bytes cosign wrote (see tests/data/signatures/dangerzone/README.md)."""
    manifest = media.parse_manifest((DATA / "signature-manifest.json").read_bytes(), None)
    assert isinstance(manifest, media.ImageManifest)
    (layer,) = manifest.layers
    assert layer.media_type == sigverify.SIMPLE_SIGNING
    body = (DATA / "payload.json").read_bytes()
    media.verify_digest(body, layer.digest)  # the exact bytes the registry serves
    # ...which are what the tests' cosign layout writes for that image, byte for byte.
    assert cosign.payload(image_digest(), "ghcr.io/freedomofpress/dangerzone/v1") == body
    key = signing.parse_public_key((DATA / "freedomofpress-dangerzone.pub").read_text())
    image = "sha256:7396780b5862cf8b37527854a2a2331e5c746b6a71aa1f424258c3bfaf3a1bd7"
    found = sigverify.verify_cosign(
        body, layer.annotations, image, sigverify.Trust(sigverify.load_keys([key.der]))
    )
    assert found.verified
    assert found.key == "sha256:089c5e9a2c90336b87f529af528db2ec14caf36695c5ab80f14f0e735c730a1b"
    # The same bytes judged for another digest, or with one byte changed, do not pass.
    assert not sigverify.verify_cosign(
        body, layer.annotations, DIGEST, sigverify.Trust(sigverify.load_keys([key.der]))
    ).verified
    flipped = body.replace(b"dangerzone/v1", b"dangerzone/v2")
    assert not sigverify.verify_cosign(
        flipped, layer.annotations, image, sigverify.Trust(sigverify.load_keys([key.der]))
    ).verified


# --- bundles ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["p256", "ed25519", "rsa"])
def test_dsse_bundle_of_cosign_sign_statement_verifies(kind: cosign.Kind) -> None:
    key = cosign.keypair(kind)
    found = sigverify.verify_bundle(
        cosign.dsse_bundle(key, cosign.statement(DIGEST)), DIGEST, _keys(key)
    )
    assert (found.format, found.verified, found.key) == ("bundle", True, key.fingerprint)


def test_dsse_bundle_with_simple_signing_payload_verifies() -> None:
    key = cosign.keypair()
    bundle = cosign.dsse_bundle(key, cosign.payload(DIGEST, "r/app"), sigverify.SIMPLE_SIGNING)
    assert sigverify.verify_bundle(bundle, DIGEST, _keys(key)).verified


def test_message_signature_bundle_over_the_manifest_verifies() -> None:
    key = cosign.keypair()
    assert sigverify.verify_bundle(cosign.message_bundle(key, DIGEST), DIGEST, _keys(key)).verified
    other = sigverify.verify_bundle(cosign.message_bundle(key, OTHER), DIGEST, _keys(key))
    assert (
        other.reason == "the bundle signs sha256:222222222222…, not this image sha256:111111111111…"
    )


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (
            lambda k: cosign.dsse_bundle(k, cosign.statement(OTHER)),
            "the statement's subject is sha256:222222222222…, not this image",
        ),
        (
            lambda k: cosign.dsse_bundle(
                k, cosign.statement(DIGEST, "https://slsa.dev/provenance/v1")
            ),
            "an attestation (predicate https://slsa.dev/provenance/v1), not a signature",
        ),
        (
            lambda k: cosign.dsse_bundle(cosign.keypair(), cosign.statement(DIGEST)),
            "does not verify with a configured key",
        ),
        (
            lambda k: json.dumps(
                {
                    "mediaType": cosign.BUNDLE_V03,
                    "verificationMaterial": {"certificate": {"rawBytes": "AAAA"}},
                    "messageSignature": {},
                }
            ).encode(),
            "the certificate is not a DER X.509 certificate",
        ),
        (lambda k: b"[]", "the bundle is not a JSON object"),
        (lambda k: b'{"mediaType": "x"}', "not a Sigstore bundle"),
        (lambda k: b"{" * 5000, "the bundle is not valid JSON"),
        (
            lambda k: json.dumps({"mediaType": cosign.BUNDLE_V03}).encode(),
            "the bundle holds neither a DSSE envelope nor a message signature",
        ),
        (
            lambda k: json.dumps(
                {"mediaType": cosign.BUNDLE_V03, "dsseEnvelope": {"payloadType": "x"}}
            ).encode(),
            "the DSSE payload is not a base64 string",
        ),
        (lambda k: b" " * (sigverify.MAX_BUNDLE_BYTES + 1), "the bundle is over 1048576 bytes"),
    ],
)
def test_bad_bundles_give_a_reason(make: object, reason: str) -> None:
    key = cosign.keypair()
    found = sigverify.verify_bundle(make(key), DIGEST, _keys(key))  # type: ignore[operator]
    assert not found.verified
    assert found.reason.startswith(reason), found.reason


def test_tampered_dsse_payload_is_not_verified() -> None:
    key = cosign.keypair()
    document = json.loads(cosign.dsse_bundle(key, cosign.statement(OTHER)))
    document["dsseEnvelope"]["payload"] = base64.b64encode(cosign.statement(DIGEST)).decode()
    found = sigverify.verify_bundle(json.dumps(document).encode(), DIGEST, _keys(key))
    assert not found.verified
    assert found.reason == "does not verify with a configured key"


def test_pae_is_dsse_v1() -> None:
    assert sigverify.pae("t", b"ab") == b"DSSEv1 1 t 2 ab"


def test_the_real_signatures_rekor_entry_verifies_with_the_shipped_public_good_root() -> None:
    """Its SET is Rekor's (rekor.sigstore.dev, log id c0d23d6a…) over cosign's bundle
    annotation: the canonical form signed, the log key and the hashedrekord body (payload
    hash, signature, key) all read as Rekor and cosign wrote them."""
    manifest = media.parse_manifest((DATA / "signature-manifest.json").read_bytes(), None)
    assert isinstance(manifest, media.ImageManifest)
    annotations = dict(manifest.layers[0].annotations)
    body = (DATA / "payload.json").read_bytes()
    key = signing.parse_public_key((DATA / "freedomofpress-dangerzone.pub").read_text())
    roots = sigverify.load_roots([signing.public_good_root()])
    trust = sigverify.Trust(sigverify.load_keys([key.der]), roots)
    found = sigverify.verify_cosign(body, annotations, image_digest(), trust)
    assert (found.verified, found.tlog) == (True, True)
    # Without the log's key, or with the entry altered, the signature stands but is not logged.
    assert (
        sigverify.verify_cosign(body, annotations, image_digest(), sigverify.Trust(trust.keys)).tlog
        is False
    )
    rekor = json.loads(annotations[sigverify.REKOR_ANNOTATION])
    rekor["Payload"]["logIndex"] += 1
    altered = {**annotations, sigverify.REKOR_ANNOTATION: json.dumps(rekor)}
    assert sigverify.verify_cosign(body, altered, image_digest(), trust).tlog is False
