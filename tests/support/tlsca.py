"""A throwaway certificate authority for TLS tests (made with `cryptography`): server
certificates for 127.0.0.1 and localhost, and client certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def self_signed(
    key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    serial: int | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> x509.CertificateBuilder:
    """A builder of the certificate `key` issues itself as `common_name` (extensions to add,
    then to sign with `key`): a random serial, valid from 5 minutes ago for a day, unless
    told otherwise."""
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number() if serial is None else serial)
        .not_valid_before(now - dt.timedelta(minutes=5) if not_before is None else not_before)
        .not_valid_after(now + dt.timedelta(days=1) if not_after is None else not_after)
    )


def ca_key_usage(*, digital_signature: bool) -> x509.KeyUsage:
    """The key usage of a CA certificate: signs certificates and CRLs (and, when
    `digital_signature`, other data); nothing else."""
    off = ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement")
    return x509.KeyUsage(
        digital_signature=digital_signature,
        key_cert_sign=True,
        crl_sign=True,
        **dict.fromkeys((*off, "encipher_only", "decipher_only"), False),
    )


@dataclass
class Issued:
    cert: bytes
    key: bytes
    der: bytes


@dataclass
class CA:
    """A throwaway certificate authority issuing server and client certificates."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    path: Path
    serial: int = 1000
    issued: list[int] = field(default_factory=list)

    @classmethod
    def create(cls, directory: Path) -> CA:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            self_signed(key, "image-policy test CA", serial=1)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(ca_key_usage(digital_signature=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        path = directory / "ca.crt"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(key, cert, path)

    def issue(self, common_name: str, *, server: bool = True) -> Issued:
        """A leaf certificate (for 127.0.0.1 and localhost when `server`)."""
        self.serial += 1
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(self.serial)
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(
            cert=cert.public_bytes(serialization.Encoding.PEM),
            key=key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            der=cert.public_bytes(serialization.Encoding.DER),
        )
