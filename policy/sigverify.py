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
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID

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
    "Opened",
    "Trust",
    "TrustedRoot",
    "load_keys",
    "load_root",
    "load_roots",
    "merkle_root",
    "open_attestation_bundle",
    "open_cosign_attestation",
    "open_envelope",
    "pae",
    "verify_bundle",
    "verify_cosign",
]

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
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
_DEPTH = 16


@dataclass(frozen=True)
class Key:
    """A configured key, loaded: its fingerprint, the `cryptography` public key, its DER."""

    fingerprint: str
    public: PublicKeyTypes
    der: bytes


@functools.lru_cache(maxsize=256)
def _load(der: bytes) -> Key | None:
    try:
        public = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm):
        return None
    return Key(signing.KeySpec(der, "", "").fingerprint, public, der)


def load_keys(ders: Sequence[bytes]) -> tuple[Key, ...]:
    """The keys `cryptography` can load (a key the lint accepted but whose point is not on
    its curve is left out: it can verify nothing); loaded once per process."""
    return tuple(k for k in (_load(d) for d in ders) if k is not None)


def _verifies(key: Key, message: bytes, signature: bytes, *, prehashed: bool = False) -> bool:
    """Whether `signature` over `message` (or, `prehashed`, over the message whose SHA-256
    digest `message` is) verifies with `key`."""
    return _verifies_with(key.public, message, signature, prehashed=prehashed)


def _verifies_with(
    public: PublicKeyTypes, message: bytes, signature: bytes, *, prehashed: bool = False
) -> bool:
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


def _keyed(fmt: str, mismatch: _Refused | None, key: Key, tlog: bool) -> SignatureFacts:
    signer = f"key {signing.short(key.fingerprint)}"
    if mismatch is not None:
        # Signed by a trusted key, but over another image: say both, so the finding tells the
        # operator a signature was moved (or the payload made for another digest).
        return SignatureFacts(fmt, False, reason=str(mismatch), signer=signer, tlog=tlog)
    return SignatureFacts(fmt, True, key=key.fingerprint, signer=signer, tlog=tlog)


_UNKNOWN = "does not verify with a configured key"


def verify_cosign(
    payload: bytes, annotations: Mapping[str, str], digest: str, trust: Trust
) -> SignatureFacts:
    """One layer of a cosign `.sig` manifest: its payload bytes and annotations, judged for
    `digest`: by a configured key, or keyless (a Fulcio certificate chaining to a trusted
    root, with its SCT and a Rekor entry of the signature)."""
    try:
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise _Refused(f"the payload is over {MAX_PAYLOAD_BYTES} bytes")
        text = annotations.get(SIGNATURE_ANNOTATION)
        if text is None:
            raise _Refused(f"the layer has no {SIGNATURE_ANNOTATION} annotation")
        if len(text) > MAX_SIGNATURE_CHARS:
            raise _Refused("the signature annotation is too long")
        signature = _b64(text, "the signature")
        mismatch: _Refused | None = None
        try:
            _names(digest, _payload_digest(payload))
        except _Refused as exc:
            mismatch = exc
        certificate = annotations.get(CERTIFICATE_ANNOTATION)
        entry = _cosign_entry(annotations.get(REKOR_ANNOTATION))
        if certificate:
            leaf = _certificate_pem(certificate)
            if not _verifies_with(leaf.public_key(), payload, signature):
                raise _Refused("the signature does not verify with its certificate")
            if mismatch is not None:
                raise mismatch
            return _keyless("cosign", leaf, _when(entry, trust, payload, signature, leaf), trust)
        key = _signed_by(trust.keys, payload, signature)
        if key is None:
            if mismatch is not None:
                raise mismatch
            return SignatureFacts("cosign", False, reason=_UNKNOWN, signer="unknown key")
        tlog = (
            entry is not None and _logged_or_none(entry, trust, payload, signature, key) is not None
        )
        return _keyed("cosign", mismatch, key, tlog)
    except _Refused as exc:
        return SignatureFacts("cosign", False, reason=str(exc), signer="unknown key")


# --- keyless: Fulcio certificates, SCTs, Rekor entries -----------------------------------------


@dataclass(frozen=True)
class _Proof:
    """A Rekor inclusion proof: the entry's index in a tree of `size` leaves, the audit path
    (`hashes`) to that tree's `root`, and the log's signed checkpoint of it (a signed note)."""

    index: int
    size: int
    root: bytes
    hashes: tuple[bytes, ...]
    checkpoint: str | None


@dataclass(frozen=True)
class _Entry:
    """A Rekor entry as a signature carries it: the canonicalized body (base64, as logged),
    integrated time, log index, log id, the log's signed entry timestamp over them, and an
    inclusion proof when the bundle carries one."""

    body: str
    integrated_time: int
    log_index: int
    log_id: bytes
    set_signature: bytes
    proof: _Proof | None = None


MAX_PROOF_HASHES = 64  # a path in a tree of up to 2**64 leaves
MAX_CHECKPOINT_CHARS = 8 * 1024
MAX_NOTE_SIGNATURES = 16


def _proof(value: object) -> _Proof | None:
    """A bundle entry's `inclusionProof` (None when it has none); refused when malformed."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _Refused("the inclusion proof is not an object")
    try:
        index, size = int(value.get("logIndex", "")), int(value.get("treeSize", ""))
    except (TypeError, ValueError):
        raise _Refused("the inclusion proof has no log index or tree size") from None
    hashes = value.get("hashes", [])  # a tree of one leaf has none (and JSON omits them)
    if not isinstance(hashes, list):
        raise _Refused("the inclusion proof's hashes are not a list")
    if len(hashes) > MAX_PROOF_HASHES:
        raise _Refused(f"the inclusion proof has more than {MAX_PROOF_HASHES} hashes")
    path = tuple(_b64(h, "an inclusion proof hash") for h in hashes)
    root = _b64(value.get("rootHash"), "the inclusion proof's root hash")
    if len(root) != 32 or any(len(h) != 32 for h in path):
        raise _Refused("the inclusion proof's hashes are not SHA-256 hashes")
    checkpoint = value.get("checkpoint")
    note = checkpoint.get("envelope") if isinstance(checkpoint, dict) else None
    if note is not None and (not isinstance(note, str) or len(note) > MAX_CHECKPOINT_CHARS):
        raise _Refused("the inclusion proof's checkpoint is not a signed note")
    return _Proof(index, size, root, path, note)


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """The root of a tree of `size` leaves reached from the leaf hash `leaf` at `index` by
    the audit path `path` (RFC 9162 §2.1.3.2, as RFC 6962 trees are hashed); ValueError when
    the path cannot be one of such a tree."""
    if not 0 <= index < size:
        raise ValueError("the log index is outside its tree")
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ValueError("the audit path is longer than its tree is deep")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ValueError("the audit path is shorter than its tree is deep")
    return r


def _included(entry: _Entry, body: bytes, key: PublicKeyTypes) -> None:
    """`entry`'s inclusion proof leads from its body's leaf hash to the proof's root, and the
    checkpoint of that root (tree size and hash) is signed by the log's `key`."""
    proof = entry.proof
    if proof is None:
        return
    try:
        root = merkle_root(
            proof.index, proof.size, hashlib.sha256(b"\x00" + body).digest(), proof.hashes
        )
    except ValueError as exc:
        raise _Refused(f"its inclusion proof is wrong: {exc}") from None
    if root != proof.root:
        raise _Refused("its inclusion proof does not lead from the entry to its root hash")
    if proof.checkpoint is not None:
        _checkpoint(proof, key)


def _checkpoint(proof: _Proof, key: PublicKeyTypes) -> None:
    """A checkpoint is a signed note: `origin\nsize\nbase64(root)\n[…]` then a blank line
    and `— <name> base64(key hint(4) ‖ signature)` lines; its size and root must be the
    proof's, and one signature the log key's over the note's text."""
    text, blank, signatures = (
        proof.checkpoint.partition("\n\n") if proof.checkpoint else ("", "", "")
    )
    lines = text.split("\n")
    if not blank or len(lines) < 3:
        raise _Refused("its inclusion proof's checkpoint is not a signed note")
    try:
        size, root = int(lines[1]), base64.b64decode(lines[2], validate=True)
    except (ValueError, binascii.Error):
        raise _Refused("its inclusion proof's checkpoint names no tree size and root") from None
    if (size, root) != (proof.size, proof.root):
        raise _Refused(
            f"its inclusion proof's checkpoint is for another tree (size {size}, not "
            f"{proof.size}, or another root hash)"
        )
    signed = (text + "\n").encode()
    for line in signatures.split("\n")[:MAX_NOTE_SIGNATURES]:
        if not line.startswith("\u2014 "):
            continue
        try:
            raw = base64.b64decode(line.rpartition(" ")[2], validate=True)
        except (ValueError, binascii.Error):
            continue
        if len(raw) > 4 and _verifies_with(key, signed, raw[4:]):
            return
    raise _Refused("its inclusion proof's checkpoint is not signed by the log")


def _cosign_entry(text: str | None) -> _Entry | None:
    """cosign's `dev.sigstore.cosign/bundle` annotation (`SignedEntryTimestamp`, `Payload`)."""
    if not text:
        return None
    document = _json(text.encode(), "the Rekor bundle annotation", MAX_BUNDLE_BYTES)
    payload = document.get("Payload") if isinstance(document, dict) else None
    if not isinstance(payload, dict):
        raise _Refused("the Rekor bundle annotation has no Payload")
    body, when, index, log_id = (
        payload.get("body"),
        payload.get("integratedTime"),
        payload.get("logIndex"),
        payload.get("logID"),
    )
    if not (
        isinstance(body, str)
        and isinstance(when, int)
        and isinstance(index, int)
        and isinstance(log_id, str)
        and when >= 0
        and index >= 0
    ):
        raise _Refused("the Rekor bundle annotation is incomplete")
    try:
        log = bytes.fromhex(log_id)
    except ValueError:
        raise _Refused("the Rekor bundle annotation's logID is not hex") from None
    return _Entry(body, when, index, log, _b64(document.get("SignedEntryTimestamp"), "the SET"))


def _bundle_entry(entries: object) -> _Entry | None:
    """The first transparency-log entry of a Sigstore bundle with an inclusion promise."""
    if not isinstance(entries, list):
        return None
    for entry in entries[:8]:
        if not isinstance(entry, dict):
            continue
        promise = entry.get("inclusionPromise")
        log_id = entry.get("logId")
        if not isinstance(promise, dict) or not isinstance(log_id, dict):
            continue
        try:
            when, index = int(entry.get("integratedTime", "")), int(entry.get("logIndex", ""))
        except (TypeError, ValueError):
            continue
        body = entry.get("canonicalizedBody")
        if not isinstance(body, str) or when < 0 or index < 0:
            continue
        return _Entry(
            body,
            when,
            index,
            _b64(log_id.get("keyId"), "the log id"),
            _b64(promise.get("signedEntryTimestamp"), "the SET"),
            _proof(entry.get("inclusionProof")),
        )
    return None


def _verified_body(entry: _Entry | None, trust: Trust) -> Any:
    """The logged body of `entry` (JSON), once its signed entry timestamp verified with the
    key of a log of the trusted roots; refused otherwise, saying why."""
    if entry is None:
        raise _Refused("no transparency-log entry")
    key = next((r.tlogs[entry.log_id] for r in trust.roots if entry.log_id in r.tlogs), None)
    if key is None:
        raise _Refused("its transparency-log entry is from a log the trusted root does not know")
    signed = json.dumps(
        {
            "body": entry.body,
            "integratedTime": entry.integrated_time,
            "logID": entry.log_id.hex(),
            "logIndex": entry.log_index,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    if not _verifies_with(key, signed, entry.set_signature):
        raise _Refused("its transparency-log entry's signed timestamp does not verify")
    body = _b64(entry.body, "the log entry body")
    _included(entry, body, key)
    return _json(body, "the log entry body", MAX_BUNDLE_BYTES)


def _logged(
    entry: _Entry | None, trust: Trust, message: bytes, signature: bytes, signer_der: bytes
) -> datetime:
    """When the signature was logged: the entry verified (`_verified_body`) and its body
    naming this signature, this message's SHA-256 and this signer (certificate or key)."""
    body = _verified_body(entry, trust)
    _body_names(body, hashlib.sha256(message).hexdigest(), signature, signer_der)
    assert entry is not None
    return datetime.fromtimestamp(entry.integrated_time, UTC)


def _logged_or_none(
    entry: _Entry, trust: Trust, message: bytes, signature: bytes, key: Key
) -> datetime | None:
    try:
        return _logged(entry, trust, message, signature, key.der)
    except _Refused:
        return None


def _body_names(document: Any, hashed: str, signature: bytes, signer_der: bytes) -> None:
    """A `hashedrekord` (v0.0.1) body for this SHA-256 (`hashed`, hex), signature and signer,
    or a `dsse` (v0.0.1) one carrying this signature by this signer."""
    spec = document.get("spec") if isinstance(document, dict) else None
    kind = document.get("kind") if isinstance(document, dict) else None
    if not isinstance(spec, dict):
        raise _Refused("the log entry body has no spec")
    if kind == "hashedrekord":
        data, sig = spec.get("data"), spec.get("signature")
        hashed_field = data.get("hash") if isinstance(data, dict) else None
        if not isinstance(hashed_field, dict) or not isinstance(sig, dict):
            raise _Refused("the log entry body is not a hashedrekord")
        if hashed_field.get("value") != hashed:
            raise _Refused("the log entry is for another payload")
        if _b64(sig.get("content"), "the logged signature") != signature:
            raise _Refused("the log entry is for another signature")
        public = sig.get("publicKey")
        logged = public.get("content") if isinstance(public, dict) else None
        if _pem_der(_b64(logged, "the logged key")) != signer_der:
            raise _Refused("the log entry names another signer")
        return
    if kind == "dsse":
        listed = spec.get("signatures")
        for item in listed[:MAX_DSSE_SIGNATURES] if isinstance(listed, list) else ():
            if (
                isinstance(item, dict)
                and _b64(item.get("signature"), "the logged signature") == signature
                and _pem_der(_b64(item.get("verifier"), "the logged verifier")) == signer_der
            ):
                return
        raise _Refused("the log entry is for another signature")
    if kind == "intoto":  # v0.0.2, as `cosign attest` logs: signatures base64 twice over
        content = spec.get("content")
        envelope = content.get("envelope") if isinstance(content, dict) else None
        listed = envelope.get("signatures") if isinstance(envelope, dict) else None
        for item in listed[:MAX_DSSE_SIGNATURES] if isinstance(listed, list) else ():
            if not isinstance(item, dict):
                continue
            logged_sig = _b64(item.get("sig"), "the logged signature")
            if logged_sig != signature:
                logged_sig = _b64(logged_sig.decode("ascii", "replace"), "the logged signature")
            if (
                logged_sig == signature
                and _pem_der(_b64(item.get("publicKey"), "the logged key")) == signer_der
            ):
                return
        raise _Refused("the log entry is for another signature")
    raise _Refused("the log entry is neither a hashedrekord, a dsse nor an intoto entry")


def _pem_der(pem: bytes) -> bytes:
    """The DER of a logged PEM key or certificate (b"" when it is neither)."""
    text = pem.decode("ascii", "replace")
    body = "".join(line for line in text.splitlines() if line and not line.startswith("-----"))
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return b""
    if "CERTIFICATE" in text:
        return der
    return der if "PUBLIC KEY" in text else b""


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.DER)


def _certificate_pem(text: str) -> x509.Certificate:
    if len(text) > MAX_CERTIFICATE_CHARS:
        raise _Refused("the certificate is too long")
    try:
        return x509.load_pem_x509_certificate(text.encode("ascii", "replace"))
    except ValueError:
        raise _Refused("the certificate is not a PEM X.509 certificate") from None


def _certificate_der(data: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise _Refused("the certificate is not a DER X.509 certificate") from None


def _at(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(
    entry: _Entry | None, trust: Trust, message: bytes, signature: bytes, leaf: x509.Certificate
) -> datetime | _Refused | None:
    """When a keyless signature was logged; why its entry is refused; None without one."""
    if entry is None:
        return None
    try:
        return _logged(entry, trust, message, signature, _der(leaf))
    except _Refused as exc:
        return exc


def _keyless(
    fmt: str, leaf: x509.Certificate, signed_at: datetime | _Refused | None, trust: Trust
) -> SignatureFacts:
    """A signature whose certificate `leaf` verified it: logged (`signed_at`, or why its
    entry was refused), valid when logged, chaining to a trusted root, with an SCT from a
    trusted CT log and an OIDC identity."""
    issuer, subject = _identity(leaf)
    signer = f"keyless {subject} (issuer {issuer})"
    try:
        if isinstance(signed_at, _Refused):
            raise signed_at
        if signed_at is None:
            raise _Refused("no transparency-log entry proves when it was signed")
        if not leaf.not_valid_before_utc <= signed_at <= leaf.not_valid_after_utc:
            raise _Refused(
                f"the certificate was not valid when signed ({_at(signed_at)}; valid "
                f"{_at(leaf.not_valid_before_utc)} to {_at(leaf.not_valid_after_utc)})"
            )
        parent = _chain(leaf, signed_at, trust)
        _code_signing(leaf)
        _sct(leaf, parent, trust)
    except _Refused as exc:
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
            raise _Refused("the certificate does not chain to the trusted root")
        parent = parent or issuer
        if issuer.subject == issuer.issuer:  # self-signed: a trust anchor of the root
            return parent
        current = issuer
    raise _Refused("the certificate chain is too long")


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
        raise _Refused("the certificate is not for code signing") from None
    if ExtendedKeyUsageOID.CODE_SIGNING not in usage:
        raise _Refused("the certificate is not for code signing")


def _sct(leaf: x509.Certificate, issuer: x509.Certificate, trust: Trust) -> None:
    """At least one embedded SCT signed by a CT log of the trusted root (RFC 6962 §3.2, a
    precertificate entry)."""
    try:
        scts = leaf.extensions.get_extension_for_class(
            x509.PrecertificateSignedCertificateTimestamps
        ).value
    except (x509.ExtensionNotFound, ValueError):
        raise _Refused("the certificate carries no SCT") from None
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
        if _verifies_with(key, signed, sct.signature):
            return
    raise _Refused("no SCT from a CT log of the trusted root verifies")


# --- trusted roots --------------------------------------------------------------------------


@dataclass(frozen=True)
class TrustedRoot:
    """A Sigstore trusted root: CA certificates (Fulcio roots and intermediates), and the
    transparency-log and CT-log keys by log id (SHA-256 of the key's DER)."""

    certificates: tuple[x509.Certificate, ...]
    tlogs: Mapping[bytes, PublicKeyTypes]
    ctlogs: Mapping[bytes, PublicKeyTypes]


@dataclass(frozen=True)
class Trust:
    """What signatures are verified against: configured keys and trusted roots."""

    keys: tuple[Key, ...] = ()
    roots: tuple[TrustedRoot, ...] = ()


@functools.lru_cache(maxsize=16)
def load_root(data: bytes) -> TrustedRoot:
    """A trusted_root.json's certificates and log keys (unusable entries left out); ValueError
    when it is not a trusted root at all."""
    try:
        document = jsonbound.loads(data, max_bytes=signing.MAX_TRUSTED_ROOT_BYTES)
    except jsonbound.JSONRefused as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    certificates: list[x509.Certificate] = []
    for authority in _list(document.get("certificateAuthorities")):
        chain = authority.get("certChain") if isinstance(authority, dict) else None
        for item in _list(chain.get("certificates") if isinstance(chain, dict) else None):
            try:
                raw = _b64(item.get("rawBytes") if isinstance(item, dict) else None, "a cert")
                certificates.append(x509.load_der_x509_certificate(raw))
            except (_Refused, ValueError):
                continue
    return TrustedRoot(
        tuple(certificates), _log_keys(document.get("tlogs")), _log_keys(document.get("ctlogs"))
    )


def _list(value: object) -> list[Any]:
    return value[:64] if isinstance(value, list) else []


def _log_keys(logs: object) -> Mapping[bytes, PublicKeyTypes]:
    out: dict[bytes, PublicKeyTypes] = {}
    for log in _list(logs):
        public = log.get("publicKey") if isinstance(log, dict) else None
        try:
            der = _b64(public.get("rawBytes") if isinstance(public, dict) else None, "a log key")
            key = serialization.load_der_public_key(der)
        except (_Refused, ValueError, UnsupportedAlgorithm):
            continue
        out[hashlib.sha256(der).digest()] = key
    return MappingProxyType(out)


def load_roots(datas: Sequence[bytes]) -> tuple[TrustedRoot, ...]:
    """The trusted roots that load (one that does not trusts nothing)."""
    out = []
    for data in datas:
        try:
            out.append(load_root(data))
        except ValueError:
            continue
    return tuple(out)


def open_envelope(data: bytes, trust: Trust) -> tuple[bytes, str | None] | None:
    """The payload of a DSSE envelope and the fingerprint of the configured key whose
    signature over it verified (None: none did); None when `data` is not an envelope."""
    try:
        document = jsonbound.loads(data, max_bytes=MAX_BUNDLE_BYTES, max_depth=_DEPTH)
    except jsonbound.JSONRefused:
        return None
    if not isinstance(document, dict) or "payloadType" not in document:
        return None
    try:
        payload_type = document.get("payloadType")
        if not isinstance(payload_type, str):
            return None
        payload = _b64(document.get("payload"), "the DSSE payload")
        message = pae(payload_type, payload)
        for entry in _list(document.get("signatures"))[:MAX_DSSE_SIGNATURES]:
            if isinstance(entry, dict):
                key = _signed_by(trust.keys, message, _b64(entry.get("sig"), "a signature"))
                if key is not None:
                    return payload, key.fingerprint
    except _Refused:
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
        raise _Refused("not a DSSE envelope")
    payload_type = envelope.get("payloadType")
    if payload_type != IN_TOTO:
        shown = payload_type[:80] if isinstance(payload_type, str) else "none"
        raise _Refused(f"the DSSE payload type {shown!r} is not an in-toto statement")
    payload = _b64(envelope.get("payload"), "the DSSE payload")
    if len(payload) > MAX_BUNDLE_BYTES:
        raise _Refused(f"the DSSE payload is over {MAX_BUNDLE_BYTES} bytes")
    signatures = [
        _b64(item.get("sig"), "a DSSE signature")
        for item in _list(envelope.get("signatures"))[:MAX_DSSE_SIGNATURES]
        if isinstance(item, dict)
    ]
    return payload, pae(IN_TOTO, payload), signatures


def _opened(
    fmt: str,
    payload: bytes,
    message: bytes,
    signatures: list[bytes],
    leaf: x509.Certificate | None,
    entry: Callable[[bytes, x509.Certificate], datetime | _Refused | None],
    trust: Trust,
) -> Opened:
    """Who signed `message` (a PAE) among `signatures`: the certificate `leaf` (keyless, its
    entry's time from `entry`), else a configured key."""
    if leaf is not None:
        signature = next(
            (sig for sig in signatures if _verifies_with(leaf.public_key(), message, sig)), None
        )
        if signature is None:
            return Opened(payload, reason="the signature does not verify with its certificate")
        facts = _keyless(fmt, leaf, entry(signature, leaf), trust)
        if not facts.verified:
            return Opened(payload, reason=f"{facts.signer}: {facts.reason}")
        return Opened(payload, issuer=facts.issuer, subject=facts.subject)
    for signature in signatures:
        key = _signed_by(trust.keys, message, signature)
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
            raise _Refused(f"the envelope is over {MAX_BUNDLE_BYTES} bytes")
        payload, message, signatures = _envelope_parts(
            _json(envelope, "the DSSE envelope", MAX_BUNDLE_BYTES)
        )
        certificate = annotations.get(CERTIFICATE_ANNOTATION)
        try:
            leaf = _certificate_pem(certificate) if certificate else None
            entry = _cosign_entry(annotations.get(REKOR_ANNOTATION))
        except _Refused as exc:
            return Opened(payload, reason=str(exc))
        return _opened(
            "cosign",
            payload,
            message,
            signatures,
            leaf,
            lambda sig, cert: _when(entry, trust, message, sig, cert),
            trust,
        )
    except _Refused as exc:
        return str(exc)


def open_attestation_bundle(bundle: bytes, trust: Trust) -> Opened | str | None:
    """A Sigstore bundle among the OCI referrers holding a DSSE envelope of an in-toto
    statement that is not cosign's signature predicate; None for any other bundle (a
    signature: `verify_bundle`'s); a str says why it cannot be read."""
    try:
        if len(bundle) > MAX_BUNDLE_BYTES:
            raise _Refused(f"the bundle is over {MAX_BUNDLE_BYTES} bytes")
        document = _json(bundle, "the bundle", MAX_BUNDLE_BYTES)
        envelope = document.get("dsseEnvelope") if isinstance(document, dict) else None
        if not isinstance(envelope, dict) or envelope.get("payloadType") != IN_TOTO:
            return None
        payload, message, signatures = _envelope_parts(envelope)
        predicate = _json(payload, "the in-toto statement", MAX_BUNDLE_BYTES)
        if isinstance(predicate, dict) and predicate.get("predicateType") == COSIGN_SIGN_PREDICATE:
            return None
        material = document.get("verificationMaterial")
        if not isinstance(material, dict):
            material = {}
        try:
            leaf = _bundle_certificate(material)
            entry = _bundle_entry(material.get("tlogEntries"))
        except _Refused as exc:
            return Opened(payload, reason=str(exc))

        def logged(signature: bytes, cert: x509.Certificate) -> datetime | _Refused | None:
            if entry is None:
                return None
            try:
                return _logged_bundle(entry, trust, message, message, signature, _der(cert))
            except _Refused as exc:
                return exc

        return _opened("bundle", payload, message, signatures, leaf, logged, trust)
    except _Refused as exc:
        return str(exc)


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


def verify_bundle(bundle: bytes, digest: str, trust: Trust) -> SignatureFacts:
    """A Sigstore bundle (v0.1–v0.3) judged for `digest`: signed by a configured key (a
    public-key hint), or keyless (its certificate chaining to a trusted root, with an SCT and
    a transparency-log entry with an inclusion promise)."""
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
        if not isinstance(material, dict):
            material = {}
        leaf = _bundle_certificate(material)
        entry = _bundle_entry(material.get("tlogEntries"))
        envelope = document.get("dsseEnvelope")
        message = document.get("messageSignature")
        if isinstance(envelope, dict):
            signed, signature, check = _dsse(envelope, digest)
        elif isinstance(message, dict):
            signed, signature, check = _message(message, digest)
        else:
            raise _Refused("the bundle holds neither a DSSE envelope nor a message signature")
        prehashed = isinstance(message, dict) and not isinstance(envelope, dict)
        logged = signed if not prehashed else b""
        if leaf is not None:
            if not _verifies_with(leaf.public_key(), signed, signature, prehashed=prehashed):
                raise _Refused("the signature does not verify with its certificate")
            if check is not None:
                raise check
            when: datetime | _Refused | None = None
            if entry is not None:
                try:
                    when = _logged_bundle(entry, trust, logged, signed, signature, _der(leaf))
                except _Refused as exc:
                    when = exc
            return _keyless("bundle", leaf, when, trust)
        key = _signed_by(trust.keys, signed, signature, prehashed=prehashed)
        if key is None:
            if check is not None:
                raise check
            return SignatureFacts("bundle", False, reason=_UNKNOWN, signer="unknown key")
        tlog = False
        if entry is not None:
            try:
                _logged_bundle(entry, trust, logged, signed, signature, key.der)
                tlog = True
            except _Refused:
                tlog = False
        return _keyed("bundle", check, key, tlog)
    except _Refused as exc:
        return SignatureFacts("bundle", False, reason=str(exc), signer="unknown key")


def _logged_bundle(
    entry: _Entry, trust: Trust, message: bytes, signed: bytes, signature: bytes, der: bytes
) -> datetime:
    """`_logged` for a bundle. A message signature's entry logs the message digest: then
    `message` is empty and `signed` is that digest."""
    if message:
        return _logged(entry, trust, message, signature, der)
    _body_names(_verified_body(entry, trust), signed.hex(), signature, der)
    return datetime.fromtimestamp(entry.integrated_time, UTC)


def _bundle_certificate(material: Mapping[str, Any]) -> x509.Certificate | None:
    """The signing certificate of a keyless bundle (v0.3 `certificate`, or the first of an
    `x509CertificateChain`); None for a keyed one."""
    single = material.get("certificate")
    if isinstance(single, dict):
        return _certificate_der(_b64(single.get("rawBytes"), "the certificate"))
    chain = material.get("x509CertificateChain")
    certificates = chain.get("certificates") if isinstance(chain, dict) else None
    if isinstance(certificates, list) and certificates and isinstance(certificates[0], dict):
        return _certificate_der(_b64(certificates[0].get("rawBytes"), "the certificate"))
    return None


def _dsse(envelope: Mapping[str, Any], digest: str) -> tuple[bytes, bytes, _Refused | None]:
    """What a DSSE envelope's first usable signature signs (its PAE), that signature, and why
    the payload is not a signature of `digest` (None when it is)."""
    payload_type = envelope.get("payloadType")
    if not isinstance(payload_type, str) or len(payload_type) > 256:
        raise _Refused("the DSSE envelope has no payloadType")
    payload = _b64(envelope.get("payload"), "the DSSE payload")
    signatures = envelope.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise _Refused("the DSSE envelope has no signatures")
    first = signatures[0]
    if not isinstance(first, dict):
        raise _Refused("the DSSE envelope's signature is not an object")
    signature = _b64(first.get("sig"), "a DSSE signature")
    check: _Refused | None = None
    try:
        if payload_type == SIMPLE_SIGNING:
            _names(digest, _payload_digest(payload))
        elif payload_type == IN_TOTO:
            _statement_names(payload, digest)
        else:
            raise _Refused(f"the DSSE payload type {payload_type[:80]!r} is not a signature")
    except _Refused as exc:
        check = exc
    return pae(payload_type, payload), signature, check


def _message(message: Mapping[str, Any], digest: str) -> tuple[bytes, bytes, _Refused | None]:
    """A message signature's digest (what is signed, prehashed), its signature, and why it is
    not over the manifest of `digest` (None when it is)."""
    digest_field = message.get("messageDigest")
    if not isinstance(digest_field, dict) or digest_field.get("algorithm") != "SHA2_256":
        raise _Refused("the message signature has no SHA2_256 messageDigest")
    hashed = _b64(digest_field.get("digest"), "the message digest")
    signature = _b64(message.get("signature"), "the message signature")
    signed = "sha256:" + hashed.hex()
    check = None
    if signed != digest:
        check = _Refused(
            f"the bundle signs {signing.short(signed)}, not this image {signing.short(digest)}"
        )
    return hashed, signature, check
