"""cosign's `.sig` layout: each layer of the `sha256-<hex>.sig` manifest is a simple-signing
payload naming the digest it signs, with the signature (and, keyless, the certificate, chain
and Rekor bundle) in its annotations."""

from __future__ import annotations

from collections.abc import Mapping

from policy import signing
from policy.facts import SignatureFacts
from policy.sigverify.base import (
    CERTIFICATE_ANNOTATION,
    COSIGN_TYPE,
    MAX_PAYLOAD_BYTES,
    MAX_SIGNATURE_CHARS,
    REKOR_ANNOTATION,
    SIGNATURE_ANNOTATION,
    Refused,
    b64,
    read_json,
    verifies_with,
)
from policy.sigverify.fulcio import certificate_pem, keyless, when_logged
from policy.sigverify.rekor import cosign_entry, logged_or_none
from policy.sigverify.trust import Key, Trust, signed_by


def payload_digest(payload: bytes) -> str:
    """The digest a simple-signing payload says it signs."""
    document = read_json(payload, "the payload", MAX_PAYLOAD_BYTES)
    critical = document.get("critical") if isinstance(document, dict) else None
    if not isinstance(critical, dict):
        raise Refused("the payload has no 'critical' section")
    if critical.get("type") != COSIGN_TYPE:
        raise Refused("the payload is not a cosign container image signature")
    image = critical.get("image")
    digest = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(digest, str):
        raise Refused("the payload names no docker-manifest-digest")
    return digest


def require_named(digest: str, claimed: str) -> None:
    """Refused unless the payload's `claimed` digest is the `digest` judged."""
    if claimed != digest:
        raise Refused(
            f"the payload names {signing.short(claimed)}, not this image {signing.short(digest)}"
        )


def keyed(fmt: str, mismatch: Refused | None, key: Key, tlog: bool) -> SignatureFacts:
    """The facts of a signature `key` verified: valid, or (`mismatch`) over another image."""
    signer = f"key {signing.short(key.fingerprint)}"
    if mismatch is not None:
        # Signed by a trusted key, but over another image: say both, so the finding tells the
        # operator a signature was moved (or the payload made for another digest).
        return SignatureFacts(fmt, False, reason=str(mismatch), signer=signer, tlog=tlog)
    return SignatureFacts(fmt, True, key=key.fingerprint, signer=signer, tlog=tlog)


UNKNOWN_KEY = "does not verify with a configured key"


def verify_cosign(
    payload: bytes, annotations: Mapping[str, str], digest: str, trust: Trust
) -> SignatureFacts:
    """One layer of a cosign `.sig` manifest: its payload bytes and annotations, judged for
    `digest`: by a configured key, or keyless (a Fulcio certificate chaining to a trusted
    root, with its SCT and a Rekor entry of the signature)."""
    try:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise Refused(f"the payload is over {MAX_PAYLOAD_BYTES} bytes")
        text = annotations.get(SIGNATURE_ANNOTATION)
        if text is None:
            raise Refused(f"the layer has no {SIGNATURE_ANNOTATION} annotation")
        if len(text) > MAX_SIGNATURE_CHARS:
            raise Refused("the signature annotation is too long")
        signature = b64(text, "the signature")
        mismatch: Refused | None = None
        try:
            require_named(digest, payload_digest(payload))
        except Refused as exc:
            mismatch = exc
        certificate = annotations.get(CERTIFICATE_ANNOTATION)
        entry = cosign_entry(annotations.get(REKOR_ANNOTATION))
        if certificate:
            leaf = certificate_pem(certificate)
            if not verifies_with(leaf.public_key(), payload, signature):
                raise Refused("the signature does not verify with its certificate")
            if mismatch is not None:
                raise mismatch
            return keyless(
                "cosign", leaf, when_logged(entry, trust, payload, signature, leaf), trust
            )
        key = signed_by(trust.keys, payload, signature)
        if key is None:
            if mismatch is not None:
                raise mismatch
            return SignatureFacts("cosign", False, reason=UNKNOWN_KEY, signer="unknown key")
        tlog = (
            entry is not None and logged_or_none(entry, trust, payload, signature, key) is not None
        )
        return keyed("cosign", mismatch, key, tlog)
    except Refused as exc:
        return SignatureFacts("cosign", False, reason=str(exc), signer="unknown key")
