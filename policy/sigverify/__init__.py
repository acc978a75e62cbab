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

The package, by what each part verifies: `cosign` (the `.sig` layout), `bundle` (Sigstore
bundles as signatures), `dsse` (attestations in DSSE envelopes, opened), `fulcio` (keyless
certificates: chain, SCT, identity), `rekor` (transparency-log entries: SET, logged body),
`merkle` (inclusion proofs and checkpoints), `trust` (configured keys, trusted roots) and
`base` (limits, readers and the signature check they share). This module re-exports what the
resolver and the tests use.
"""

from __future__ import annotations

from policy.sigverify.base import (
    BUNDLE_TYPE_PREFIX,
    CERTIFICATE_ANNOTATION,
    COSIGN_SIGN_PREDICATE,
    MAX_BUNDLE_BYTES,
    MAX_PAYLOAD_BYTES,
    REKOR_ANNOTATION,
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING,
    pae,
)
from policy.sigverify.base import b64 as _b64  # noqa: F401 - the tests decode annotations with it
from policy.sigverify.bundle import verify_bundle
from policy.sigverify.cosign import verify_cosign
from policy.sigverify.dsse import (
    DSSE_ENVELOPE,
    Opened,
    open_attestation_bundle,
    open_cosign_attestation,
    open_envelope,
)
from policy.sigverify.merkle import merkle_root
from policy.sigverify.trust import Key, Trust, TrustedRoot, load_keys, load_root, load_roots

__all__ = [
    "BUNDLE_TYPE_PREFIX",
    "CERTIFICATE_ANNOTATION",
    "COSIGN_SIGN_PREDICATE",
    "DSSE_ENVELOPE",
    "MAX_BUNDLE_BYTES",
    "MAX_PAYLOAD_BYTES",
    "REKOR_ANNOTATION",
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
