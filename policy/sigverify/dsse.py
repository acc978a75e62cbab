"""Attestations in DSSE envelopes, opened: the in-toto statement of cosign's `.att` layers,
of Sigstore bundles among the OCI referrers and of BuildKit's envelopes, and who signed it —
a configured key or a keyless identity (`Opened`). What a statement says is read by
`policy.attestations`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from policy import jsonbound
from policy.sigverify.base import (
    CERTIFICATE_ANNOTATION,
    COSIGN_SIGN_PREDICATE,
    DEPTH,
    IN_TOTO,
    MAX_BUNDLE_BYTES,
    MAX_DSSE_SIGNATURES,
    REKOR_ANNOTATION,
    Refused,
    b64,
    listed,
    pae,
    read_json,
    verifies_with,
)
from policy.sigverify.fulcio import (
    bundle_certificate,
    certificate_pem,
    der_of,
    keyless,
    when_logged,
)
from policy.sigverify.rekor import bundle_entry, cosign_entry, logged_bundle
from policy.sigverify.trust import Trust, signed_by


def open_envelope(data: bytes, trust: Trust) -> tuple[bytes, str | None] | None:
    """The payload of a DSSE envelope and the fingerprint of the configured key whose
    signature over it verified (None: none did); None when `data` is not an envelope."""
    try:
        document = jsonbound.loads(data, max_bytes=MAX_BUNDLE_BYTES, max_depth=DEPTH)
    except jsonbound.JSONRefused:
        return None
    if not isinstance(document, dict) or "payloadType" not in document:
        return None
    try:
        payload_type = document.get("payloadType")
        if not isinstance(payload_type, str):
            return None
        payload = b64(document.get("payload"), "the DSSE payload")
        message = pae(payload_type, payload)
        for entry in listed(document.get("signatures"))[:MAX_DSSE_SIGNATURES]:
            if isinstance(entry, dict):
                key = signed_by(trust.keys, message, b64(entry.get("sig"), "a signature"))
                if key is not None:
                    return payload, key.fingerprint
    except Refused:
        return None
    return payload, None


@dataclass(frozen=True)
class Opened:
    """An attestation's DSSE envelope, opened: its in-toto statement, and who signed it — a
    configured key (`key`, its fingerprint), or a keyless identity (`issuer`, `subject`) whose
    certificate chains to a trusted root, with its SCT and transparency-log entry. `reason`
    says why a signature there did not verify ("" when one did, or when none was by a
    configured key)."""

    payload: bytes
    key: str | None = None
    issuer: str | None = None
    subject: str | None = None
    reason: str = ""


DSSE_ENVELOPE = "application/vnd.dsse.envelope.v1+json"


def _envelope_parts(envelope: object) -> tuple[bytes, bytes, list[bytes]]:
    """(payload, its PAE, the signatures) of an in-toto DSSE envelope; refused otherwise."""
    if not isinstance(envelope, dict):
        raise Refused("not a DSSE envelope")
    payload_type = envelope.get("payloadType")
    if payload_type != IN_TOTO:
        shown = payload_type[:80] if isinstance(payload_type, str) else "none"
        raise Refused(f"the DSSE payload type {shown!r} is not an in-toto statement")
    payload = b64(envelope.get("payload"), "the DSSE payload")
    if len(payload) > MAX_BUNDLE_BYTES:
        raise Refused(f"the DSSE payload is over {MAX_BUNDLE_BYTES} bytes")
    signatures = [
        b64(item.get("sig"), "a DSSE signature")
        for item in listed(envelope.get("signatures"))[:MAX_DSSE_SIGNATURES]
        if isinstance(item, dict)
    ]
    return payload, pae(IN_TOTO, payload), signatures


def _opened(
    fmt: str,
    payload: bytes,
    message: bytes,
    signatures: list[bytes],
    leaf: x509.Certificate | None,
    entry: Callable[[bytes, x509.Certificate], datetime | Refused | None],
    trust: Trust,
) -> Opened:
    """Who signed `message` (a PAE) among `signatures`: the certificate `leaf` (keyless, its
    entry's time from `entry`), else a configured key."""
    if leaf is not None:
        signature = next(
            (sig for sig in signatures if verifies_with(leaf.public_key(), message, sig)), None
        )
        if signature is None:
            return Opened(payload, reason="the signature does not verify with its certificate")
        facts = keyless(fmt, leaf, entry(signature, leaf), trust)
        if not facts.verified:
            return Opened(payload, reason=f"{facts.signer}: {facts.reason}")
        return Opened(payload, issuer=facts.issuer, subject=facts.subject)
    for signature in signatures:
        key = signed_by(trust.keys, message, signature)
        if key is not None:
            return Opened(payload, key=key.fingerprint)
    return Opened(payload)


def open_cosign_attestation(
    envelope: bytes, annotations: Mapping[str, str], trust: Trust
) -> Opened | str:
    """A layer of cosign's `sha256-<hex>.att` manifest: a DSSE envelope of an in-toto
    statement, signed by a configured key or keyless (the certificate, chain and Rekor bundle
    annotations, as for `.sig` layers). A str says why it is not an attestation at all."""
    try:
        if len(envelope) > MAX_BUNDLE_BYTES:
            raise Refused(f"the envelope is over {MAX_BUNDLE_BYTES} bytes")
        payload, message, signatures = _envelope_parts(
            read_json(envelope, "the DSSE envelope", MAX_BUNDLE_BYTES)
        )
        certificate = annotations.get(CERTIFICATE_ANNOTATION)
        try:
            leaf = certificate_pem(certificate) if certificate else None
            entry = cosign_entry(annotations.get(REKOR_ANNOTATION))
        except Refused as exc:
            return Opened(payload, reason=str(exc))
        return _opened(
            "cosign",
            payload,
            message,
            signatures,
            leaf,
            lambda sig, cert: when_logged(entry, trust, message, sig, cert),
            trust,
        )
    except Refused as exc:
        return str(exc)


def open_attestation_bundle(bundle: bytes, trust: Trust) -> Opened | str | None:
    """A Sigstore bundle among the OCI referrers holding a DSSE envelope of an in-toto
    statement that is not cosign's signature predicate; None for any other bundle (a
    signature: `verify_bundle`'s); a str says why it cannot be read."""
    try:
        if len(bundle) > MAX_BUNDLE_BYTES:
            raise Refused(f"the bundle is over {MAX_BUNDLE_BYTES} bytes")
        document = read_json(bundle, "the bundle", MAX_BUNDLE_BYTES)
        envelope = document.get("dsseEnvelope") if isinstance(document, dict) else None
        if not isinstance(envelope, dict) or envelope.get("payloadType") != IN_TOTO:
            return None
        payload, message, signatures = _envelope_parts(envelope)
        predicate = read_json(payload, "the in-toto statement", MAX_BUNDLE_BYTES)
        if isinstance(predicate, dict) and predicate.get("predicateType") == COSIGN_SIGN_PREDICATE:
            return None
        material = document.get("verificationMaterial")
        if not isinstance(material, dict):
            material = {}
        try:
            leaf = bundle_certificate(material)
            entry = bundle_entry(material.get("tlogEntries"))
        except Refused as exc:
            return Opened(payload, reason=str(exc))

        def logged(signature: bytes, cert: x509.Certificate) -> datetime | Refused | None:
            if entry is None:
                return None
            try:
                return logged_bundle(entry, trust, message, message, signature, der_of(cert))
            except Refused as exc:
                return exc

        return _opened("bundle", payload, message, signatures, leaf, logged, trust)
    except Refused as exc:
        return str(exc)
