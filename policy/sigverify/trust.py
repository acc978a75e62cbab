"""What signatures are verified against (`Trust`): configured keys (`Key`, loaded once per
process) and Sigstore trusted roots (`TrustedRoot`: CA certificates, transparency-log and
CT-log keys), read from the bytes the rules name."""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from policy import jsonbound, signing
from policy.sigverify.base import Refused, b64, listed, verifies_with


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
    return verifies_with(key.public, message, signature, prehashed=prehashed)


def signed_by(
    keys: Sequence[Key], message: bytes, signature: bytes, *, prehashed: bool = False
) -> Key | None:
    """The first of `keys` whose signature over `message` `signature` is (None: none)."""
    return next((k for k in keys if _verifies(k, message, signature, prehashed=prehashed)), None)


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
    for authority in listed(document.get("certificateAuthorities")):
        chain = authority.get("certChain") if isinstance(authority, dict) else None
        for item in listed(chain.get("certificates") if isinstance(chain, dict) else None):
            try:
                raw = b64(item.get("rawBytes") if isinstance(item, dict) else None, "a cert")
                certificates.append(x509.load_der_x509_certificate(raw))
            except (Refused, ValueError):
                continue
    return TrustedRoot(
        tuple(certificates), _log_keys(document.get("tlogs")), _log_keys(document.get("ctlogs"))
    )


def _log_keys(logs: object) -> Mapping[bytes, PublicKeyTypes]:
    out: dict[bytes, PublicKeyTypes] = {}
    for log in listed(logs):
        public = log.get("publicKey") if isinstance(log, dict) else None
        try:
            der = b64(public.get("rawBytes") if isinstance(public, dict) else None, "a log key")
            key = serialization.load_der_public_key(der)
        except (Refused, ValueError, UnsupportedAlgorithm):
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
