"""Certificates for the webhook's own TLS, without cert-manager: `image-policy certs`.

`issue()` makes a private CA and a serving certificate signed by it (both ECDSA P-256):
the serving certificate names the in-cluster Service the API server dials
(`NAME`, `NAME.NS`, `NAME.NS.svc`, `NAME.NS.svc.cluster.local`, plus any extra names or IP
addresses), has the `serverAuth` extended key usage and is not a CA; the CA has
`basicConstraints: CA:TRUE, pathlen:0`. `write()` stores `ca.crt`, `tls.crt` and `tls.key`
(the key with mode 0600). `fill_ca_bundle()` reads webhook configuration YAML (the kustomize
base) and fills every webhook's `clientConfig.caBundle` with the CA, refusing a webhook that
calls a different Service than the certificate names. `check()` reads a directory written
by `write()` (or a cert-manager Secret's files) and says whether the pair is usable and how
many days it has left.

The clock is passed in (`now`); only the command line reads it.
"""

from __future__ import annotations

import base64
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from policy.errors import InputError

CA_FILE = "ca.crt"
CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
WEBHOOKS_FILE = "webhooks.yaml"
DEFAULT_DAYS = 365
WARN_DAYS = 30
CLOCK_SKEW = timedelta(minutes=5)
"""Certificates start this long before `now`, so a node whose clock lags still accepts them."""

WEBHOOK_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")
DEFAULT_WEBHOOK_FILES = (
    "deploy/kubernetes/base/validatingwebhookconfiguration.yaml",
    "deploy/kubernetes/overlays/mutating/mutatingwebhookconfiguration.yaml",
)
"""The webhook configurations `image-policy certs` fills when run from a checkout."""


@dataclass(frozen=True)
class Bundle:
    """A CA certificate, and a serving certificate and its private key, all PEM."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


def service_names(service: str, namespace: str) -> tuple[str, ...]:
    """The DNS names a Service is reached by inside the cluster, shortest first."""
    if not service or not namespace:
        raise InputError("the service name and namespace must not be empty")
    return (
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    )


def _general_name(text: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        return x509.DNSName(text)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def issue(
    service: str,
    namespace: str,
    *,
    now: datetime,
    days: int = DEFAULT_DAYS,
    extra_names: Sequence[str] = (),
) -> Bundle:
    """A new CA and a serving certificate for `service` in `namespace`, valid `days` days.

    `extra_names` are added to the subject alternative names: IP addresses as IP entries,
    anything else as DNS names (for the ImagePolicyWebhook plugin or a local stack, which
    may dial the webhook by another name).
    """
    if days < 1:
        raise InputError(f"--days must be at least 1, got {days}")
    names = service_names(service, namespace)
    start = now - CLOCK_SKEW
    end = now + timedelta(days=days)

    ca_key, ca_cert = _ca(names[2], start, end)
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    for extra in extra_names:
        name = _general_name(extra)
        if name not in alt_names:
            alt_names.append(name)
    cert = _serving(key, names[2], alt_names, ca_key, ca_cert, start, end)
    return Bundle(
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def _ca(
    service_name: str, start: datetime, end: datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new CA key and its self-signed certificate, which signs only the serving one."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "image-policy"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"image-policy CA for {service_name}"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return ca_key, ca_cert


def _serving(
    key: ec.EllipticCurvePrivateKey,
    service_name: str,
    alt_names: list[x509.GeneralName],
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    start: datetime,
    end: datetime,
) -> x509.Certificate:
    """The serving certificate of `key` for `alt_names`, signed by the CA (server auth only)."""
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # an existing file keeps its old mode through O_CREAT
        os.write(fd, data)
    finally:
        os.close(fd)


def write(bundle: Bundle, out: Path) -> tuple[Path, Path, Path]:
    """Store `ca.crt` and `tls.crt` (0644) and `tls.key` (0600) in `out`, creating it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = (out / CA_FILE, out / CERT_FILE, out / KEY_FILE)
        _write(paths[2], bundle.key_pem, 0o600)
        _write(paths[0], bundle.ca_pem, 0o644)
        _write(paths[1], bundle.cert_pem, 0o644)
    except OSError as exc:
        raise InputError(f"{out}: cannot write certificates: {exc.strerror or exc}") from exc
    return paths


def fill_ca_bundle(
    text: str, filename: str, ca_pem: bytes, *, service: str, namespace: str
) -> list[dict[str, Any]]:
    """The webhook configurations in YAML `text` with `caBundle` set to `ca_pem` everywhere.

    Other documents are dropped. Raises InputError for YAML that does not parse, a file with
    no webhook configuration, a webhook without `clientConfig`, and a webhook calling a
    Service other than `service` in `namespace` (the certificate would not match it).
    """
    try:
        documents = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise InputError(f"{filename}: not valid YAML: {exc}") from exc
    bundle = base64.b64encode(ca_pem).decode("ascii")
    filled: list[dict[str, Any]] = []
    for doc in documents:
        if not isinstance(doc, dict) or doc.get("kind") not in WEBHOOK_KINDS:
            continue
        name = (doc.get("metadata") or {}).get("name", "?")
        webhooks = doc.get("webhooks")
        if not isinstance(webhooks, list) or not webhooks:
            raise InputError(f"{filename}: {doc['kind']} {name}: has no webhooks")
        for index, hook in enumerate(webhooks):
            where = f"{filename}: {doc['kind']} {name}: webhooks[{index}]"
            config = hook.get("clientConfig") if isinstance(hook, dict) else None
            if not isinstance(config, dict):
                raise InputError(f"{where}: has no clientConfig")
            target = config.get("service")
            if isinstance(target, dict) and (
                target.get("name") != service or target.get("namespace") != namespace
            ):
                raise InputError(
                    f"{where}: calls service {target.get('namespace')}/{target.get('name')}, "
                    f"but the certificate is for {namespace}/{service}"
                )
            config["caBundle"] = bundle
        filled.append(doc)
    if not filled:
        raise InputError(
            f"{filename}: no ValidatingWebhookConfiguration or MutatingWebhookConfiguration in it"
        )
    return filled


def render(documents: Sequence[dict[str, Any]]) -> str:
    """YAML documents as `kubectl apply -f` takes them, keys in their original order."""
    return yaml.safe_dump_all(list(documents), sort_keys=False, default_flow_style=False)


@dataclass(frozen=True)
class CertStatus:
    """What `check()` found: the serving certificate's names and validity, and any problems
    (each a sentence); `days_left` counts whole days until the earliest expiry of the pair."""

    subject: str
    names: tuple[str, ...]
    not_after: datetime
    days_left: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise InputError(f"{path}: not a PEM certificate: {exc}") from exc


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    return tuple(str(n.value) for n in san)


def check(directory: Path, *, now: datetime, warn_days: int = WARN_DAYS) -> CertStatus:
    """Whether `ca.crt`, `tls.crt` and `tls.key` in `directory` make a usable, lasting pair.

    Problems: a certificate not yet valid or expired, fewer than `warn_days` days left, a
    serving certificate not signed by the CA, a key that is not the certificate's, no
    `serverAuth` usage. Raises InputError when a file is missing or unreadable.
    """
    ca = _load_cert(directory / CA_FILE)
    cert = _load_cert(directory / CERT_FILE)
    key_path = directory / KEY_FILE
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise InputError(f"{key_path}: cannot read: {exc.strerror or exc}") from exc
    except (ValueError, TypeError) as exc:
        raise InputError(f"{key_path}: not an unencrypted PEM private key: {exc}") from exc

    problems: list[str] = []
    for label, c in (("CA certificate", ca), ("serving certificate", cert)):
        if now < c.not_valid_before_utc:
            problems.append(f"the {label} is not valid before {c.not_valid_before_utc:%Y-%m-%d}")
        if now >= c.not_valid_after_utc:
            problems.append(f"the {label} expired on {c.not_valid_after_utc:%Y-%m-%d}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        problems.append("the serving certificate is not signed by ca.crt")
    if key.public_key() != cert.public_key():
        problems.append("tls.key is not the serving certificate's key")
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if ExtendedKeyUsageOID.SERVER_AUTH not in usage:
            problems.append("the serving certificate lacks the serverAuth usage")
    except x509.ExtensionNotFound:
        pass  # no EKU extension at all allows every usage
    not_after = min(ca.not_valid_after_utc, cert.not_valid_after_utc)
    days_left = max((not_after - now).days, 0)
    if now < not_after and days_left < warn_days:
        problems.append(f"only {days_left} days left (renew at {warn_days})")
    return CertStatus(
        subject=cert.subject.rfc4514_string(),
        names=_names(cert),
        not_after=not_after,
        days_left=days_left,
        problems=tuple(problems),
    )
