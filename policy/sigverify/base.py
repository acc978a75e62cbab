"""What every part of signature verification shares: the media types and annotations it
reads, the size limits of hostile input, `Refused` (a reason in words), bounded base64 and
JSON readers, DSSE's pre-authentication encoding, and one signature check over a public key
(ECDSA P-256/P-384, Ed25519, RSA PKCS#1 v1.5)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from policy import jsonbound

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
REKOR_ANNOTATION = "dev.sigstore.cosign/bundle"
BUNDLE_TYPE_PREFIX = "application/vnd.dev.sigstore.bundle"
IN_TOTO = "application/vnd.in-toto+json"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
COSIGN_TYPE = "cosign container image signature"
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_BUNDLE_BYTES = 1024 * 1024
MAX_SIGNATURE_CHARS = 16 * 1024
MAX_DSSE_SIGNATURES = 16
MAX_CERTIFICATE_CHARS = 64 * 1024
MAX_CHAIN = 5
DEPTH = 16


class Refused(ValueError):
    """Why an artifact is not a valid signature of the judged digest (the message is the
    reason shown in findings)."""


def b64(text: object, what: str) -> bytes:
    """Base64 (standard or URL-safe alphabet) of at most a bundle's size; refused, naming
    `what`, otherwise."""
    if not isinstance(text, str) or len(text) > 4 * MAX_BUNDLE_BYTES // 3 + 4:
        raise Refused(f"{what} is not a base64 string")
    for alphabet in (None, b"-_"):  # DSSE and bundles may use the URL-safe alphabet
        try:
            return base64.b64decode(text, altchars=alphabet, validate=True)
        except (binascii.Error, ValueError):
            continue
    raise Refused(f"{what} is not valid base64")


def read_json(data: bytes, what: str, limit: int) -> Any:
    """JSON of at most `limit` bytes and `DEPTH` levels; refused, naming `what`, otherwise."""
    try:
        return jsonbound.loads(data, max_bytes=limit, max_depth=DEPTH)
    except jsonbound.JSONRefused as exc:
        raise Refused(f"{what} is not valid JSON ({exc})") from None


def listed(value: object) -> list[Any]:
    """The first 64 items of a JSON list (nothing when `value` is not a list)."""
    return value[:64] if isinstance(value, list) else []


def verifies_with(
    public: PublicKeyTypes, message: bytes, signature: bytes, *, prehashed: bool = False
) -> bool:
    """Whether `signature` over `message` (or, `prehashed`, over the message whose SHA-256
    digest `message` is) verifies with `public`: ECDSA (P-384 tries SHA-384, then SHA-256),
    Ed25519 (never prehashed), RSA PKCS#1 v1.5 with SHA-256."""
    try:
        if isinstance(public, ec.EllipticCurvePublicKey):
            if prehashed:
                public.verify(signature, message, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
                return True
            choices: list[hashes.HashAlgorithm] = [hashes.SHA256()]
            if public.curve.name == "secp384r1":
                choices.insert(0, hashes.SHA384())
            for algorithm in choices:
                try:
                    public.verify(signature, message, ec.ECDSA(algorithm))
                    return True
                except InvalidSignature:
                    continue
            return False
        if isinstance(public, ed25519.Ed25519PublicKey):
            if prehashed:
                return False  # Ed25519 signs messages, never digests
            public.verify(signature, message)
            return True
        if isinstance(public, rsa.RSAPublicKey):
            chosen: hashes.HashAlgorithm | utils.Prehashed = (
                utils.Prehashed(hashes.SHA256()) if prehashed else hashes.SHA256()
            )
            public.verify(signature, message, padding.PKCS1v15(), chosen)
            return True
    except (InvalidSignature, ValueError):
        return False
    return False


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)
