"""Keyless signatures: a Fulcio certificate that verified a signature is judged — logged
while valid, chaining to a trusted root, for code signing, with an SCT from a trusted CT log
(RFC 6962) — and its OIDC identity (issuer, subject) read."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from policy.facts import SignatureFacts
from policy.sigverify.base import MAX_CERTIFICATE_CHARS, MAX_CHAIN, Refused, b64, verifies_with
from policy.sigverify.rekor import Entry, logged
from policy.sigverify.trust import Trust


def der_of(certificate: x509.Certificate) -> bytes:
    """The certificate's DER, as a log entry names its signer."""
    return certificate.public_bytes(serialization.Encoding.DER)


def certificate_pem(text: str) -> x509.Certificate:
    """The certificate of cosign's PEM annotation; refused when too long or not one."""
    if len(text) > MAX_CERTIFICATE_CHARS:
        raise Refused("the certificate is too long")
    try:
        return x509.load_pem_x509_certificate(text.encode("ascii", "replace"))
    except ValueError:
        raise Refused("the certificate is not a PEM X.509 certificate") from None


def _certificate_der(data: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise Refused("the certificate is not a DER X.509 certificate") from None


def bundle_certificate(material: Mapping[str, Any]) -> x509.Certificate | None:
    """The signing certificate of a keyless bundle (v0.3 `certificate`, or the first of an
    `x509CertificateChain`); None for a keyed one."""
    single = material.get("certificate")
    if isinstance(single, dict):
        return _certificate_der(b64(single.get("rawBytes"), "the certificate"))
    chain = material.get("x509CertificateChain")
    certificates = chain.get("certificates") if isinstance(chain, dict) else None
    if isinstance(certificates, list) and certificates and isinstance(certificates[0], dict):
        return _certificate_der(b64(certificates[0].get("rawBytes"), "the certificate"))
    return None


def _at(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def when_logged(
    entry: Entry | None, trust: Trust, message: bytes, signature: bytes, leaf: x509.Certificate
) -> datetime | Refused | None:
    """When a keyless signature was logged; why its entry is refused; None without one."""
    if entry is None:
        return None
    try:
        return logged(entry, trust, message, signature, der_of(leaf))
    except Refused as exc:
        return exc


def keyless(
    fmt: str, leaf: x509.Certificate, signed_at: datetime | Refused | None, trust: Trust
) -> SignatureFacts:
    """A signature whose certificate `leaf` verified it: logged (`signed_at`, or why its
    entry was refused), valid when logged, chaining to a trusted root, with an SCT from a
    trusted CT log and an OIDC identity."""
    issuer, subject = _identity(leaf)
    signer = f"keyless {subject} (issuer {issuer})"
    try:
        if isinstance(signed_at, Refused):
            raise signed_at
        if signed_at is None:
            raise Refused("no transparency-log entry proves when it was signed")
        if not leaf.not_valid_before_utc <= signed_at <= leaf.not_valid_after_utc:
            raise Refused(
                f"the certificate was not valid when signed ({_at(signed_at)}; valid "
                f"{_at(leaf.not_valid_before_utc)} to {_at(leaf.not_valid_after_utc)})"
            )
        parent = _chain(leaf, signed_at, trust)
        _code_signing(leaf)
        _sct(leaf, parent, trust)
    except Refused as exc:
        return SignatureFacts(fmt, False, reason=str(exc), signer=signer)
    return SignatureFacts(fmt, True, signer=signer, issuer=issuer, subject=subject, tlog=True)


_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


def _identity(leaf: x509.Certificate) -> tuple[str, str]:
    """(OIDC issuer, subject) of a Fulcio certificate: the issuer extension (v2, a DER
    UTF8String, else v1, raw text) and the first URI or email SAN."""
    issuer = ""
    for oid, der in ((_ISSUER_V2, True), (_ISSUER_V1, False)):
        try:
            value = leaf.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
        if der and len(raw) >= 2 and raw[0] == 0x0C and raw[1] < 0x80:
            raw = raw[2 : 2 + raw[1]]
        issuer = raw.decode("utf-8", "replace")[:512]
        break
    subject = ""
    try:
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found = names.get_values_for_type(
            x509.UniformResourceIdentifier
        ) or names.get_values_for_type(x509.RFC822Name)
        subject = found[0][:512] if found else ""
    except x509.ExtensionNotFound:
        pass
    return issuer or "(no issuer)", subject or "(no subject)"


def _chain(leaf: x509.Certificate, at: datetime, trust: Trust) -> x509.Certificate:
    """The certificate that issued `leaf`, after walking from it to a trusted root's anchor
    (each issuer a CA, valid at `at`, its signature verified)."""
    current, parent = leaf, None
    for _ in range(MAX_CHAIN):
        issuer = next(
            (
                c
                for root in trust.roots
                for c in root.certificates
                if c.subject == current.issuer and _issued(current, c, at)
            ),
            None,
        )
        if issuer is None:
            raise Refused("the certificate does not chain to the trusted root")
        parent = parent or issuer
        if issuer.subject == issuer.issuer:  # self-signed: a trust anchor of the root
            return parent
        current = issuer
    raise Refused("the certificate chain is too long")


def _issued(child: x509.Certificate, issuer: x509.Certificate, at: datetime) -> bool:
    try:
        constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    if not constraints.ca or not issuer.not_valid_before_utc <= at <= issuer.not_valid_after_utc:
        return False
    try:
        child.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _code_signing(leaf: x509.Certificate) -> None:
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise Refused("the certificate is not for code signing") from None
    if ExtendedKeyUsageOID.CODE_SIGNING not in usage:
        raise Refused("the certificate is not for code signing")


def _sct(leaf: x509.Certificate, issuer: x509.Certificate, trust: Trust) -> None:
    """At least one embedded SCT signed by a CT log of the trusted root (RFC 6962 §3.2, a
    precertificate entry)."""
    try:
        scts = leaf.extensions.get_extension_for_class(
            x509.PrecertificateSignedCertificateTimestamps
        ).value
    except (x509.ExtensionNotFound, ValueError):
        raise Refused("the certificate carries no SCT") from None
    issuer_key = hashlib.sha256(
        issuer.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).digest()
    tbs = leaf.tbs_precertificate_bytes
    for sct in list(scts)[:8]:
        key = next((r.ctlogs[sct.log_id] for r in trust.roots if sct.log_id in r.ctlogs), None)
        if key is None:
            continue
        millis = int(sct.timestamp.replace(tzinfo=UTC).timestamp() * 1000)
        signed = (
            b"\x00\x00"
            + millis.to_bytes(8, "big")
            + b"\x00\x01"
            + issuer_key
            + len(tbs).to_bytes(3, "big")
            + tbs
            + len(sct.extension_bytes).to_bytes(2, "big")
            + sct.extension_bytes
        )
        if verifies_with(key, signed, sct.signature):
            return
    raise Refused("no SCT from a CT log of the trusted root verifies")
