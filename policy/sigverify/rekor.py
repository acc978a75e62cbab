"""Transparency-log (Rekor) entries as signatures carry them — cosign's bundle annotation, a
Sigstore bundle's `tlogEntries` — verified: the log's signed entry timestamp (SET), the
inclusion proof when there is one, and the logged body naming this signature, its message
and its signer."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from policy.sigverify.base import (
    MAX_BUNDLE_BYTES,
    MAX_DSSE_SIGNATURES,
    Refused,
    b64,
    read_json,
    verifies_with,
)
from policy.sigverify.merkle import Proof, merkle_root, read_proof, verify_checkpoint
from policy.sigverify.trust import Key, Trust


@dataclass(frozen=True)
class Entry:
    """A Rekor entry as a signature carries it: the canonicalized body (base64, as logged),
    integrated time, log index, log id, the log's signed entry timestamp over them, and an
    inclusion proof when the bundle carries one."""

    body: str
    integrated_time: int
    log_index: int
    log_id: bytes
    set_signature: bytes
    proof: Proof | None = None


def _included(entry: Entry, body: bytes, key: PublicKeyTypes) -> None:
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
        raise Refused(f"its inclusion proof is wrong: {exc}") from None
    if root != proof.root:
        raise Refused("its inclusion proof does not lead from the entry to its root hash")
    if proof.checkpoint is not None:
        verify_checkpoint(proof, key)


def cosign_entry(text: str | None) -> Entry | None:
    """cosign's `dev.sigstore.cosign/bundle` annotation (`SignedEntryTimestamp`, `Payload`)."""
    if not text:
        return None
    document = read_json(text.encode(), "the Rekor bundle annotation", MAX_BUNDLE_BYTES)
    payload = document.get("Payload") if isinstance(document, dict) else None
    if not isinstance(payload, dict):
        raise Refused("the Rekor bundle annotation has no Payload")
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
        raise Refused("the Rekor bundle annotation is incomplete")
    try:
        log = bytes.fromhex(log_id)
    except ValueError:
        raise Refused("the Rekor bundle annotation's logID is not hex") from None
    return Entry(body, when, index, log, b64(document.get("SignedEntryTimestamp"), "the SET"))


def bundle_entry(entries: object) -> Entry | None:
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
        return Entry(
            body,
            when,
            index,
            b64(log_id.get("keyId"), "the log id"),
            b64(promise.get("signedEntryTimestamp"), "the SET"),
            read_proof(entry.get("inclusionProof")),
        )
    return None


def _verified_body(entry: Entry | None, trust: Trust) -> Any:
    """The logged body of `entry` (JSON), once its signed entry timestamp verified with the
    key of a log of the trusted roots; refused otherwise, saying why."""
    if entry is None:
        raise Refused("no transparency-log entry")
    key = next((r.tlogs[entry.log_id] for r in trust.roots if entry.log_id in r.tlogs), None)
    if key is None:
        raise Refused("its transparency-log entry is from a log the trusted root does not know")
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
    if not verifies_with(key, signed, entry.set_signature):
        raise Refused("its transparency-log entry's signed timestamp does not verify")
    body = b64(entry.body, "the log entry body")
    _included(entry, body, key)
    return read_json(body, "the log entry body", MAX_BUNDLE_BYTES)


def logged(
    entry: Entry | None, trust: Trust, message: bytes, signature: bytes, signer_der: bytes
) -> datetime:
    """When the signature was logged: the entry verified (`_verified_body`) and its body
    naming this signature, this message's SHA-256 and this signer (certificate or key)."""
    body = _verified_body(entry, trust)
    _body_names(body, hashlib.sha256(message).hexdigest(), signature, signer_der)
    assert entry is not None
    return datetime.fromtimestamp(entry.integrated_time, UTC)


def logged_or_none(
    entry: Entry, trust: Trust, message: bytes, signature: bytes, key: Key
) -> datetime | None:
    """`logged` for a configured key's signature, None when its entry does not prove it."""
    try:
        return logged(entry, trust, message, signature, key.der)
    except Refused:
        return None


def _body_names(document: Any, hashed: str, signature: bytes, signer_der: bytes) -> None:
    """A `hashedrekord` (v0.0.1) body for this SHA-256 (`hashed`, hex), signature and signer,
    or a `dsse` (v0.0.1) one carrying this signature by this signer."""
    spec = document.get("spec") if isinstance(document, dict) else None
    kind = document.get("kind") if isinstance(document, dict) else None
    if not isinstance(spec, dict):
        raise Refused("the log entry body has no spec")
    if kind == "hashedrekord":
        data, sig = spec.get("data"), spec.get("signature")
        hashed_field = data.get("hash") if isinstance(data, dict) else None
        if not isinstance(hashed_field, dict) or not isinstance(sig, dict):
            raise Refused("the log entry body is not a hashedrekord")
        if hashed_field.get("value") != hashed:
            raise Refused("the log entry is for another payload")
        if b64(sig.get("content"), "the logged signature") != signature:
            raise Refused("the log entry is for another signature")
        public = sig.get("publicKey")
        logged = public.get("content") if isinstance(public, dict) else None
        if _pem_der(b64(logged, "the logged key")) != signer_der:
            raise Refused("the log entry names another signer")
        return
    if kind == "dsse":
        listed = spec.get("signatures")
        for item in listed[:MAX_DSSE_SIGNATURES] if isinstance(listed, list) else ():
            if (
                isinstance(item, dict)
                and b64(item.get("signature"), "the logged signature") == signature
                and _pem_der(b64(item.get("verifier"), "the logged verifier")) == signer_der
            ):
                return
        raise Refused("the log entry is for another signature")
    if kind == "intoto":  # v0.0.2, as `cosign attest` logs: signatures base64 twice over
        content = spec.get("content")
        envelope = content.get("envelope") if isinstance(content, dict) else None
        listed = envelope.get("signatures") if isinstance(envelope, dict) else None
        for item in listed[:MAX_DSSE_SIGNATURES] if isinstance(listed, list) else ():
            if not isinstance(item, dict):
                continue
            logged_sig = b64(item.get("sig"), "the logged signature")
            if logged_sig != signature:
                logged_sig = b64(logged_sig.decode("ascii", "replace"), "the logged signature")
            if (
                logged_sig == signature
                and _pem_der(b64(item.get("publicKey"), "the logged key")) == signer_der
            ):
                return
        raise Refused("the log entry is for another signature")
    raise Refused("the log entry is neither a hashedrekord, a dsse nor an intoto entry")


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


def logged_bundle(
    entry: Entry, trust: Trust, message: bytes, signed: bytes, signature: bytes, der: bytes
) -> datetime:
    """`logged` for a bundle. A message signature's entry logs the message digest: then
    `message` is empty and `signed` is that digest."""
    if message:
        return logged(entry, trust, message, signature, der)
    _body_names(_verified_body(entry, trust), signed.hex(), signature, der)
    return datetime.fromtimestamp(entry.integrated_time, UTC)
