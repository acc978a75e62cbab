"""Sigstore bundles (v0.1–v0.3, found through OCI referrers) as signatures: a DSSE envelope
of a simple-signing payload or of an in-toto statement of cosign's signature predicate, or a
`messageSignature` over the manifest's digest; signed by a configured key or keyless."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from policy import signing
from policy.facts import SignatureFacts
from policy.sigverify.base import (
    BUNDLE_TYPE_PREFIX,
    COSIGN_SIGN_PREDICATE,
    IN_TOTO,
    MAX_BUNDLE_BYTES,
    MAX_PAYLOAD_BYTES,
    SIMPLE_SIGNING,
    Refused,
    b64,
    pae,
    read_json,
    verifies_with,
)
from policy.sigverify.cosign import UNKNOWN_KEY, keyed, payload_digest, require_named
from policy.sigverify.fulcio import bundle_certificate, der_of, keyless
from policy.sigverify.rekor import bundle_entry, logged_bundle
from policy.sigverify.trust import Trust, signed_by


def verify_bundle(bundle: bytes, digest: str, trust: Trust) -> SignatureFacts:
    """A Sigstore bundle (v0.1–v0.3) judged for `digest`: signed by a configured key (a
    public-key hint), or keyless (its certificate chaining to a trusted root, with an SCT and
    a transparency-log entry with an inclusion promise)."""
    try:
        if len(bundle) > MAX_BUNDLE_BYTES:
            raise Refused(f"the bundle is over {MAX_BUNDLE_BYTES} bytes")
        document = read_json(bundle, "the bundle", MAX_BUNDLE_BYTES)
        if not isinstance(document, dict):
            raise Refused("the bundle is not a JSON object")
        kind = document.get("mediaType")
        if not isinstance(kind, str) or not kind.startswith(BUNDLE_TYPE_PREFIX):
            raise Refused("not a Sigstore bundle (no bundle mediaType)")
        material = document.get("verificationMaterial")
        if not isinstance(material, dict):
            material = {}
        leaf = bundle_certificate(material)
        entry = bundle_entry(material.get("tlogEntries"))
        envelope = document.get("dsseEnvelope")
        message = document.get("messageSignature")
        if isinstance(envelope, dict):
            signed, signature, check = _dsse(envelope, digest)
        elif isinstance(message, dict):
            signed, signature, check = _message(message, digest)
        else:
            raise Refused("the bundle holds neither a DSSE envelope nor a message signature")
        prehashed = isinstance(message, dict) and not isinstance(envelope, dict)
        logged = signed if not prehashed else b""
        if leaf is not None:
            if not verifies_with(leaf.public_key(), signed, signature, prehashed=prehashed):
                raise Refused("the signature does not verify with its certificate")
            if check is not None:
                raise check
            when: datetime | Refused | None = None
            if entry is not None:
                try:
                    when = logged_bundle(entry, trust, logged, signed, signature, der_of(leaf))
                except Refused as exc:
                    when = exc
            return keyless("bundle", leaf, when, trust)
        key = signed_by(trust.keys, signed, signature, prehashed=prehashed)
        if key is None:
            if check is not None:
                raise check
            return SignatureFacts("bundle", False, reason=UNKNOWN_KEY, signer="unknown key")
        tlog = False
        if entry is not None:
            try:
                logged_bundle(entry, trust, logged, signed, signature, key.der)
                tlog = True
            except Refused:
                tlog = False
        return keyed("bundle", check, key, tlog)
    except Refused as exc:
        return SignatureFacts("bundle", False, reason=str(exc), signer="unknown key")


def _statement_names(statement: bytes, digest: str) -> None:
    """An in-toto statement of cosign's signature predicate naming `digest` as a subject."""
    document = read_json(statement, "the in-toto statement", MAX_PAYLOAD_BYTES)
    if not isinstance(document, dict):
        raise Refused("the in-toto statement is not an object")
    predicate = document.get("predicateType")
    if predicate != COSIGN_SIGN_PREDICATE:
        shown = predicate if isinstance(predicate, str) else "none"
        raise Refused(f"an attestation (predicate {shown[:80]}), not a signature")
    subjects = document.get("subject")
    if not isinstance(subjects, list):
        raise Refused("the in-toto statement has no subject list")
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
        raise Refused(f"the statement's subject is {shown}, not this image {signing.short(digest)}")


def _dsse(envelope: Mapping[str, Any], digest: str) -> tuple[bytes, bytes, Refused | None]:
    """What a DSSE envelope's first usable signature signs (its PAE), that signature, and why
    the payload is not a signature of `digest` (None when it is)."""
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str) or len(payload_type) > 256:
        raise Refused("the DSSE envelope has no payloadType")
    payload = b64(envelope.get("payload"), "the DSSE payload")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise Refused("the DSSE envelope has no signatures")
    first = signatures[0]
    if not isinstance(first, dict):
        raise Refused("the DSSE envelope's signature is not an object")
    signature = b64(first.get("sig"), "a DSSE signature")
    check: Refused | None = None
    try:
        if payload_type == SIMPLE_SIGNING:
            require_named(digest, payload_digest(payload))
        elif payload_type == IN_TOTO:
            _statement_names(payload, digest)
        else:
            raise Refused(f"the DSSE payload type {payload_type[:80]!r} is not a signature")
    except Refused as exc:
        check = exc
    return pae(payload_type, payload), signature, check


def _message(message: Mapping[str, Any], digest: str) -> tuple[bytes, bytes, Refused | None]:
    """A message signature's digest (what is signed, prehashed), its signature, and why it is
    not over the manifest of `digest` (None when it is)."""
    digest_field = message.get("messageDigest")
    if not isinstance(digest_field, dict) or digest_field.get("algorithm") != "SHA2_256":
        raise Refused("the message signature has no SHA2_256 messageDigest")
    hashed = b64(digest_field.get("digest"), "the message digest")
    signature = b64(message.get("signature"), "the message signature")
    signed = "sha256:" + hashed.hex()
    check = None
    if signed != digest:
        check = Refused(
            f"the bundle signs {signing.short(signed)}, not this image {signing.short(digest)}"
        )
    return hashed, signature, check
