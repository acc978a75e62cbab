"""Public keys read without a crypto library: algorithm, fingerprint, and every refusal."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from policy import signing


def _pem(key: object) -> str:
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.mark.parametrize(
    ("private", "algorithm"),
    [
        (ec.generate_private_key(ec.SECP256R1()), "ecdsa-p256"),
        (ec.generate_private_key(ec.SECP384R1()), "ecdsa-p384"),
        (ed25519.Ed25519PrivateKey.generate(), "ed25519"),
        (rsa.generate_private_key(public_exponent=65537, key_size=2048), "rsa-2048"),
        (rsa.generate_private_key(public_exponent=65537, key_size=3072), "rsa-3072"),
    ],
)
def test_supported_keys_are_named_and_fingerprinted(private: object, algorithm: str) -> None:
    pem = _pem(private.public_key())  # type: ignore[attr-defined]
    key = signing.parse_public_key(pem, "k.pub")
    der = base64.b64decode("".join(pem.strip().splitlines()[1:-1]))
    assert key.algorithm == algorithm
    assert key.der == der
    assert key.fingerprint == "sha256:" + hashlib.sha256(der).hexdigest()
    assert key.source == "k.pub"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hello", "k: no '-----BEGIN PUBLIC KEY-----' PEM block"),
        ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", "k: is a private key"),
        ("-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----", "k: is a certificate"),
        ("-----BEGIN PUBLIC KEY-----\nAAA*\n-----END PUBLIC KEY-----", "no '-----BEGIN"),
        ("-----BEGIN PUBLIC KEY-----\nAAA\n-----END PUBLIC KEY-----", "not valid base64"),
        ("-----BEGIN PUBLIC KEY-----\nMAMCAQA=\n-----END PUBLIC KEY-----", "not a DER"),
        ("x" * (signing.MAX_PEM_CHARS + 1), "more than 65536 characters"),
    ],
)
def test_unusable_text_is_refused_with_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*")):
        signing.parse_public_key(text, "k")


def test_two_keys_in_one_entry_are_refused() -> None:
    pem = _pem(ed25519.Ed25519PrivateKey.generate().public_key())
    with pytest.raises(ValueError, match="holds 2 public keys"):
        signing.parse_public_key(pem + pem, "k")


@pytest.mark.parametrize(
    ("private", "message"),
    [
        (ec.generate_private_key(ec.SECP256K1()), "ECDSA on secp256k1 is not supported"),
        (ec.generate_private_key(ec.SECP521R1()), "ECDSA on P-521 is not supported"),
        (
            rsa.generate_private_key(public_exponent=65537, key_size=1024),
            "RSA key of 1024 bits; at least 2048 are required",
        ),
    ],
)
def test_weak_or_unsupported_keys_are_refused(private: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        signing.parse_public_key(_pem(private.public_key()), "k")  # type: ignore[attr-defined]


def test_truncated_der_is_refused_not_crashed() -> None:
    der = base64.b64decode(
        "".join(_pem(ec.generate_private_key(ec.SECP256R1()).public_key()).splitlines()[1:-1])
    )
    for cut in range(1, len(der)):
        text = (
            "-----BEGIN PUBLIC KEY-----\n"
            + base64.b64encode(der[:cut]).decode()
            + "\n-----END PUBLIC KEY-----"
        )
        with pytest.raises(ValueError, match="not a DER SubjectPublicKeyInfo"):
            signing.parse_public_key(text, "k")


def test_short_names_a_fingerprint_in_a_message() -> None:
    assert signing.short("sha256:" + "ab" * 32) == "sha256:abababababab…"
    assert signing.short("sha256:ab") == "sha256:ab"
