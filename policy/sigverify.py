"""Verifying cosign signatures and Sigstore bundles against configured keys (pure functions
over bytes, with `cryptography`; no I/O).

What is verified, and against what:
- a cosign signature (a layer of the `sha256-<hex>.sig` manifest): the layer is the
  simple-signing payload, the `dev.cosignproject.cosign/signature` annotation the base64
  signature over those exact bytes; the payload's `critical.image.docker-manifest-digest`
  must be the digest judged and `critical.type` cosign's;
- a Sigstore bundle (found through OCI referrers): a DSSE envelope whose payload is a
  simple-signing payload or an in-toto statement of predicate type cosign's signature
  (`https://sigstore.dev/cosign/sign/v1`) naming the judged digest as a subject, signed over
  DSSE's pre-authentication encoding; or a `messageSignature` whose message digest is the
  judged digest itself (the signature is over the manifest bytes).

Keys: ECDSA P-256 (SHA-256), P-384 (SHA-384, or SHA-256 as cosign signs by default), Ed25519,
RSA PKCS#1 v1.5 with SHA-256. Every input is hostile: sizes and JSON depth are bounded, and
every failure is a reason in words, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from policy import jsonbound, signing
from policy.facts import SignatureFacts

__all__ = [
    "BUNDLE_TYPE_PREFIX",
    "COSIGN_SIGN_PREDICATE",
    "MAX_BUNDLE_BYTES",
    "MAX_PAYLOAD_BYTES",
    "SIGNATURE_ANNOTATION",
    "SIMPLE_SIGNING",
    "Key",
    "load_keys",
    "pae",
    "verify_bundle",
    "verify_cosign",
]

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
BUNDLE_TYPE_PREFIX = "application/vnd.dev.sigstore.bundle"
IN_TOTO = "application/vnd.in-toto+json"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
COSIGN_TYPE = "cosign container image signature"
MAX_PAYLOAD_BYTES = 256 * 1024
MAX_BUNDLE_BYTES = 1024 * 1024
MAX_SIGNATURE_CHARS = 16 * 1024
MAX_DSSE_SIGNATURES = 16
_DEPTH = 16


@dataclass(frozen=True)
class Key:
    """A configured key, loaded: its fingerprint and the `cryptography` public key."""

    fingerprint: str
    public: PublicKeyTypes


@functools.lru_cache(maxsize=256)
def _load(der: bytes) -> Key | None:
    try:
        public = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        return None
    return Key(signing.KeySpec(der, "", "").fingerprint, public)


def load_keys(ders: Sequence[bytes]) -> tuple[Key, ...]:
    """The keys `cryptography` can load (a key the lint accepted but whose point is not on
    its curve is left out: it can verify nothing); loaded once per process."""
    return tuple(k for k in (_load(d) for d in ders) if k is not None)


def _verifies(key: Key, message: bytes, signature: bytes, *, prehashed: bool = False) -> bool:
    """Whether `signature` over `message` (or, `prehashed`, over the message whose SHA-256
    digest `message` is) verifies with `key`."""
    public = key.public
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


def _signed_by(
    keys: Sequence[Key], message: bytes, signature: bytes, *, prehashed: bool = False
) -> Key | None:
    return next((k for k in keys if _verifies(k, message, signature, prehashed=prehashed)), None)


def _b64(text: object, what: str) -> bytes:
    if not isinstance(text, str) or len(text) > 4 * MAX_BUNDLE_BYTES // 3 + 4:
        raise _Refused(f"{what} is not a base64 string")
    for alphabet in (None, b"-_"):  # DSSE and bundles may use the URL-safe alphabet
        try:
            return base64.b64decode(text, altchars=alphabet, validate=True)
        except (binascii.Error, ValueError):
            continue
    raise _Refused(f"{what} is not valid base64")


class _Refused(ValueError):
    """Why an artifact is not a valid signature of the judged digest (the message is the
    reason shown in findings)."""


def _json(data: bytes, what: str, limit: int) -> Any:
    try:
        return jsonbound.loads(data, max_bytes=limit, max_depth=_DEPTH)
    except jsonbound.JSONRefused as exc:
        raise _Refused(f"{what} is not valid JSON ({exc})") from None


def _payload_digest(payload: bytes) -> str:
    """The digest a simple-signing payload says it signs."""
    document = _json(payload, "the payload", MAX_PAYLOAD_BYTES)
    critical = document.get("critical") if isinstance(document, dict) else None
    if not isinstance(critical, dict):
        raise _Refused("the payload has no 'critical' section")
    if critical.get("type") != COSIGN_TYPE:
        raise _Refused("the payload is not a cosign container image signature")
    image = critical.get("image")
    digest = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(digest, str):
        raise _Refused("the payload names no docker-manifest-digest")
    return digest


def _names(digest: str, claimed: str) -> None:
    if claimed != digest:
        raise _Refused(
            f"the payload names {signing.short(claimed)}, not this image {signing.short(digest)}"
        )


def _facts(fmt: str, digest_check: Exception | None, key: Key | None) -> SignatureFacts:
    if key is None:
        return SignatureFacts(
            fmt, False, reason="does not verify with a configured key", signer="unknown key"
        )
    signer = f"key {signing.short(key.fingerprint)}"
    if digest_check is not None:
        # Signed by a trusted key, but over another image: say both, so the finding tells the
        # operator a signature was moved (or the payload made for another digest).
        return SignatureFacts(fmt, False, reason=str(digest_check), signer=signer)
    return SignatureFacts(fmt, True, key=key.fingerprint, signer=signer)


def verify_cosign(
    payload: bytes, annotations: Mapping[str, str], digest: str, keys: Sequence[Key]
) -> SignatureFacts:
    """One layer of a cosign `.sig` manifest: its payload bytes and annotations, judged for
    `digest` against `keys`."""
    try:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise _Refused(f"the payload is over {MAX_PAYLOAD_BYTES} bytes")
        text = annotations.get(SIGNATURE_ANNOTATION)
        if text is None:
            raise _Refused(f"the layer has no {SIGNATURE_ANNOTATION} annotation")
        if len(text) > MAX_SIGNATURE_CHARS:
            raise _Refused("the signature annotation is too long")
        signature = _b64(text, "the signature")
        key = _signed_by(keys, payload, signature)
        mismatch: _Refused | None = None
        try:
            _names(digest, _payload_digest(payload))
        except _Refused as exc:
            if key is None:
                raise
            mismatch = exc
        return _facts("cosign", mismatch, key)
    except _Refused as exc:
        return SignatureFacts("cosign", False, reason=str(exc), signer="unknown key")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def _statement_names(statement: bytes, digest: str) -> None:
    """An in-toto statement of cosign's signature predicate naming `digest` as a subject."""
    document = _json(statement, "the in-toto statement", MAX_PAYLOAD_BYTES)
    if not isinstance(document, dict):
        raise _Refused("the in-toto statement is not an object")
    predicate = document.get("predicateType")
    if predicate != COSIGN_SIGN_PREDICATE:
        shown = predicate if isinstance(predicate, str) else "none"
        raise _Refused(f"an attestation (predicate {shown[:80]}), not a signature")
    subjects = document.get("subject")
    if not isinstance(subjects, list):
        raise _Refused("the in-toto statement has no subject list")
    algorithm = digest.partition(":")[0]
    named = [
        f"{algorithm}:{s['digest'][algorithm]}"
        for s in subjects[:64]
        if isinstance(s, dict)
        and isinstance(s.get("digest"), dict)
        and isinstance(s["digest"].get(algorithm), str)
    ]
    if digest not in named:
        shown = signing.short(named[0]) if named else "no digest"
        raise _Refused(
            f"the statement's subject is {shown}, not this image {signing.short(digest)}"
        )


def verify_bundle(bundle: bytes, digest: str, keys: Sequence[Key]) -> SignatureFacts:
    """A Sigstore bundle (any of v0.1–v0.3) judged for `digest` against `keys`."""
    try:
        if len(bundle) > MAX_BUNDLE_BYTES:
            raise _Refused(f"the bundle is over {MAX_BUNDLE_BYTES} bytes")
        document = _json(bundle, "the bundle", MAX_BUNDLE_BYTES)
        if not isinstance(document, dict):
            raise _Refused("the bundle is not a JSON object")
        kind = document.get("mediaType")
        if not isinstance(kind, str) or not kind.startswith(BUNDLE_TYPE_PREFIX):
            raise _Refused("not a Sigstore bundle (no bundle mediaType)")
        material = document.get("verificationMaterial")
        if (
            isinstance(material, dict)
            and "publicKey" not in material
            and ("certificate" in material or "x509CertificateChain" in material)
        ):
            raise _Refused(
                "a keyless (certificate) signature; this rule trusts keys, not certificates"
            )
        envelope = document.get("dsseEnvelope")
        message = document.get("messageSignature")
        if isinstance(envelope, dict):
            return _verify_dsse(envelope, digest, keys)
        if isinstance(message, dict):
            return _verify_message(message, digest, keys)
        raise _Refused("the bundle holds neither a DSSE envelope nor a message signature")
    except _Refused as exc:
        return SignatureFacts("bundle", False, reason=str(exc), signer="unknown key")


def _verify_dsse(envelope: Mapping[str, Any], digest: str, keys: Sequence[Key]) -> SignatureFacts:
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str) or len(payload_type) > 256:
        raise _Refused("the DSSE envelope has no payloadType")
    payload = _b64(envelope.get("payload"), "the DSSE payload")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise _Refused("the DSSE envelope has no signatures")
    message = pae(payload_type, payload)
    key = None
    for entry in signatures[:MAX_DSSE_SIGNATURES]:
        if isinstance(entry, dict) and isinstance(entry.get("sig"), str):
            key = _signed_by(keys, message, _b64(entry["sig"], "a DSSE signature"))
            if key is not None:
                break
    mismatch: _Refused | None = None
    try:
        if payload_type == SIMPLE_SIGNING:
            _names(digest, _payload_digest(payload))
        elif payload_type == IN_TOTO:
            _statement_names(payload, digest)
        else:
            raise _Refused(f"the DSSE payload type {payload_type[:80]!r} is not a signature")
    except _Refused as exc:
        if key is None:
            raise
        mismatch = exc
    return _facts("bundle", mismatch, key)


def _verify_message(message: Mapping[str, Any], digest: str, keys: Sequence[Key]) -> SignatureFacts:
    digest_field = message.get("messageDigest")
    if not isinstance(digest_field, dict) or digest_field.get("algorithm") != "SHA2_256":
        raise _Refused("the message signature has no SHA2_256 messageDigest")
    hashed = _b64(digest_field.get("digest"), "the message digest")
    signature = _b64(message.get("signature"), "the message signature")
    key = _signed_by(keys, hashed, signature, prehashed=True)
    signed = "sha256:" + hashed.hex()
    mismatch: _Refused | None = None
    if signed != digest:
        mismatch = _Refused(
            f"the bundle signs {signing.short(signed)}, not this image {signing.short(digest)}"
        )
        if key is None:
            raise mismatch
    return _facts("bundle", mismatch, key)
