"""A test Sigstore: a Fulcio-like CA, a CT log and a Rekor-like log, each with its own key,
written as a `trusted_root.json`; keyless signing in cosign's `.sig` layout and as Sigstore
bundles, with certificates carrying an embedded SCT and signatures carrying a Rekor entry
(hashedrekord body, signed entry timestamp) — all made with `cryptography`, offline.

Each part can be made wrong on purpose (an expired certificate, no log entry, a certificate
from another CA, another identity) so the tests can show each is refused, and why.

It stays one file over 500 lines because it is one thing: a `Sigstore` whose CA, CT log and
Rekor log sign for each other, and whose every product (certificate, log entry, signature
layer, bundle) is made by that one instance. What is not Sigstore lives elsewhere: the RFC 6962
Merkle tree in merkle.py, a CA certificate's key usage in tlsca.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.support import cosign
from tests.support.merkle import audit_path, merkle_tree_hash
from tests.support.tlsca import ca_key_usage, self_signed

ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
SCT_LIST = x509.ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
GITHUB = "https://token.actions.githubusercontent.com"
WORKFLOW = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.2.0"
SIGNED_AT = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)


def _der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _pem(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass
class Sigstore:
    """One test Sigstore instance (CA, CT log, Rekor log), its trust root JSON."""

    ca_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    ct_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    log_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    name: str = "test-fulcio"
    seed_entries: int = 5

    def __post_init__(self) -> None:
        self.ca = (
            self_signed(
                self.ca_key,
                self.name,
                not_before=datetime(2020, 1, 1, tzinfo=UTC),
                not_after=datetime(2040, 1, 1, tzinfo=UTC),
            )
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(ca_key_usage(digital_signature=False), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.log_index = 1000
        # The log's Merkle tree (RFC 6962 leaf hashes): a few other entries first, so proofs
        # are paths through trees of several entries.
        self.leaves: list[bytes] = [
            hashlib.sha256(b"\x00" + os.urandom(16)).digest() for _ in range(self.seed_entries)
        ]

    @property
    def ct_log_id(self) -> bytes:
        return hashlib.sha256(_der(self.ct_key.public_key())).digest()

    @property
    def log_id(self) -> bytes:
        return hashlib.sha256(_der(self.log_key.public_key())).digest()

    def trusted_root(self) -> bytes:
        """This instance as a Sigstore `trusted_root.json`."""

        def log(key: ec.EllipticCurvePrivateKey, url: str) -> dict[str, Any]:
            der = _der(key.public_key())
            return {
                "baseUrl": url,
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": base64.b64encode(der).decode(),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": {"start": "2020-01-01T00:00:00Z"},
                },
                "logId": {"keyId": base64.b64encode(hashlib.sha256(der).digest()).decode()},
            }

        ca_der = self.ca.public_bytes(serialization.Encoding.DER)
        return json.dumps(
            {
                "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
                "tlogs": [log(self.log_key, "https://rekor.test")],
                "certificateAuthorities": [
                    {
                        "subject": {"organization": "test", "commonName": self.name},
                        "uri": "https://fulcio.test",
                        "certChain": {
                            "certificates": [{"rawBytes": base64.b64encode(ca_der).decode()}]
                        },
                        "validFor": {"start": "2020-01-01T00:00:00Z"},
                    }
                ],
                "ctlogs": [log(self.ct_key, "https://ctfe.test")],
                "timestampAuthorities": [],
            },
            indent=2,
        ).encode()

    # --- certificates ---------------------------------------------------------------------

    def certificate(
        self,
        signer: ec.EllipticCurvePrivateKey,
        *,
        subject: str = WORKFLOW,
        issuer: str = GITHUB,
        valid_from: datetime = SIGNED_AT - timedelta(minutes=1),
        minutes: int = 10,
        sct: bool = True,
        ct_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> x509.Certificate:
        """A Fulcio-shaped leaf: SAN URI `subject`, issuer extensions (v1 raw, v2 DER
        UTF8String), code-signing EKU, valid `minutes` from `valid_from`, and (with `sct`) an
        embedded SCT signed by the CT log (or by `ct_key`, a log the root does not know)."""
        issuer_bytes = issuer.encode()

        def builder() -> x509.CertificateBuilder:
            return (
                x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(self.ca.subject)
                .public_key(signer.public_key())
                .serial_number(serial)
                .not_valid_before(valid_from)
                .not_valid_after(valid_from + timedelta(minutes=minutes))
                .add_extension(
                    x509.SubjectAlternativeName([x509.UniformResourceIdentifier(subject)]),
                    critical=True,
                )
                .add_extension(
                    x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
                )
                .add_extension(x509.UnrecognizedExtension(ISSUER_V1, issuer_bytes), critical=False)
                .add_extension(
                    x509.UnrecognizedExtension(
                        ISSUER_V2, bytes([0x0C, len(issuer_bytes)]) + issuer_bytes
                    ),
                    critical=False,
                )
            )

        serial = x509.random_serial_number()
        if not sct:
            return builder().sign(self.ca_key, hashes.SHA256())
        # The SCT signs the precertificate's TBS (the certificate without the SCT extension).
        precert = builder().sign(self.ca_key, hashes.SHA256())
        tbs = precert.tbs_certificate_bytes
        log = ct_key or self.ct_key
        millis = int(valid_from.timestamp() * 1000)
        issuer_key_hash = hashlib.sha256(_der(self.ca_key.public_key())).digest()
        signed = (
            b"\x00\x00"
            + millis.to_bytes(8, "big")
            + b"\x00\x01"
            + issuer_key_hash
            + len(tbs).to_bytes(3, "big")
            + tbs
            + b"\x00\x00"
        )
        signature = log.sign(signed, ec.ECDSA(hashes.SHA256()))
        sct_bytes = (
            b"\x00"
            + hashlib.sha256(_der(log.public_key())).digest()
            + millis.to_bytes(8, "big")
            + b"\x00\x00"
            + b"\x04\x03"
            + len(signature).to_bytes(2, "big")
            + signature
        )
        listed = len(sct_bytes).to_bytes(2, "big") + sct_bytes
        tls_list = len(listed).to_bytes(2, "big") + listed
        octets = b"\x04" + _der_length(len(tls_list)) + tls_list
        return (
            builder()
            .add_extension(x509.UnrecognizedExtension(SCT_LIST, octets), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )

    # --- the log ----------------------------------------------------------------------------

    def entry(
        self,
        message: bytes,
        signature: bytes,
        signer_pem: bytes,
        *,
        at: datetime = SIGNED_AT,
        prehashed: bool = False,
        log_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> dict[str, Any]:
        """A hashedrekord entry for this signature, as cosign's bundle annotation holds it:
        `{"SignedEntryTimestamp", "Payload": {body, integratedTime, logIndex, logID}}`."""
        self.log_index += 1
        hashed = message.hex() if prehashed else hashlib.sha256(message).hexdigest()
        body = base64.b64encode(
            json.dumps(
                {
                    "apiVersion": "0.0.1",
                    "kind": "hashedrekord",
                    "spec": {
                        "data": {"hash": {"algorithm": "sha256", "value": hashed}},
                        "signature": {
                            "content": base64.b64encode(signature).decode(),
                            "publicKey": {"content": base64.b64encode(signer_pem).decode()},
                        },
                    },
                },
                separators=(",", ":"),
            ).encode()
        ).decode()
        key = log_key or self.log_key
        log_id = hashlib.sha256(_der(key.public_key())).hexdigest()
        payload = {
            "body": body,
            "integratedTime": int(at.timestamp()),
            "logIndex": self.log_index,
            "logID": log_id,
        }
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        set_signature = key.sign(canonical, ec.ECDSA(hashes.SHA256()))
        return {
            "SignedEntryTimestamp": base64.b64encode(set_signature).decode(),
            "Payload": payload,
        }

    # --- keyless signing --------------------------------------------------------------------

    def sign_cosign_layer(
        self,
        payload: bytes,
        *,
        logged: bool = True,
        log_at: datetime = SIGNED_AT,
        **certificate: Any,
    ) -> dict[str, str]:
        """The annotations of a keyless cosign `.sig` layer over `payload`: signature,
        certificate, chain and (with `logged`) the Rekor bundle."""
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        leaf = self.certificate(ephemeral, **certificate)
        signature = ephemeral.sign(payload, ec.ECDSA(hashes.SHA256()))
        leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
        annotations = {
            cosign.SIGNATURE_ANNOTATION: base64.b64encode(signature).decode(),
            "dev.sigstore.cosign/certificate": leaf_pem.decode(),
            "dev.sigstore.cosign/chain": self.ca.public_bytes(serialization.Encoding.PEM).decode(),
        }
        if logged:
            annotations["dev.sigstore.cosign/bundle"] = json.dumps(
                self.entry(payload, signature, leaf_pem, at=log_at)
            )
        return annotations

    def attest_cosign_layer(
        self,
        statement: bytes,
        *,
        logged: bool = True,
        kind: str = "intoto",
        **certificate: Any,
    ) -> tuple[bytes, dict[str, str]]:
        """A keyless `cosign attest` layer of the `.att` manifest: the DSSE envelope over
        `statement` and its annotations (certificate, chain, and with `logged` the Rekor bundle
        of an `intoto` v0.0.2 entry, as cosign logs attestations, or a `dsse` one)."""
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        leaf = self.certificate(ephemeral, **certificate)
        signature = ephemeral.sign(cosign.pae(cosign.IN_TOTO, statement), ec.ECDSA(hashes.SHA256()))
        leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
        annotations = {
            "dev.sigstore.cosign/certificate": leaf_pem.decode(),
            "dev.sigstore.cosign/chain": self.ca.public_bytes(serialization.Encoding.PEM).decode(),
            "predicateType": json.loads(statement).get("predicateType", ""),
        }
        if logged:
            sig64 = base64.b64encode(signature).decode()
            pem64 = base64.b64encode(leaf_pem).decode()
            if kind == "intoto":
                body: dict[str, Any] = {
                    "apiVersion": "0.0.2",
                    "kind": "intoto",
                    "spec": {
                        "content": {
                            "envelope": {
                                "payloadType": cosign.IN_TOTO,
                                "signatures": [
                                    {
                                        "sig": base64.b64encode(sig64.encode()).decode(),
                                        "publicKey": pem64,
                                    }
                                ],
                            },
                            "payloadHash": {
                                "algorithm": "sha256",
                                "value": hashlib.sha256(statement).hexdigest(),
                            },
                        }
                    },
                }
            else:
                body = {
                    "apiVersion": "0.0.1",
                    "kind": "dsse",
                    "spec": {"signatures": [{"signature": sig64, "verifier": pem64}]},
                }
            annotations["dev.sigstore.cosign/bundle"] = json.dumps(self.logged(body))
        return cosign.envelope(None, statement, signature=signature), annotations

    def logged(
        self,
        body: dict[str, Any],
        *,
        at: datetime = SIGNED_AT,
        log_key: ec.EllipticCurvePrivateKey | None = None,
    ) -> dict[str, Any]:
        """A log entry of `body` as cosign's bundle annotation holds it (signed entry
        timestamp by the log key, or `log_key`)."""
        self.log_index += 1
        key = log_key or self.log_key
        payload = {
            "body": base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode(),
            "integratedTime": int(at.timestamp()),
            "logIndex": self.log_index,
            "logID": hashlib.sha256(_der(key.public_key())).hexdigest(),
        }
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return {
            "SignedEntryTimestamp": base64.b64encode(
                key.sign(canonical, ec.ECDSA(hashes.SHA256()))
            ).decode(),
            "Payload": payload,
        }

    # --- inclusion proofs -------------------------------------------------------------------

    def prove(self, body: str) -> dict[str, Any]:
        """Append the entry whose canonicalized body is `body` (base64) to the log's tree and
        return its inclusion proof as a bundle carries it: index in the tree, tree size, root
        hash, the RFC 6962 audit path, and the checkpoint signed by the log key."""
        self.leaves.append(hashlib.sha256(b"\x00" + base64.b64decode(body)).digest())
        index, size = len(self.leaves) - 1, len(self.leaves)
        root = merkle_tree_hash(self.leaves)
        return {
            "logIndex": str(index),
            "rootHash": base64.b64encode(root).decode(),
            "treeSize": str(size),
            "hashes": [base64.b64encode(h).decode() for h in audit_path(index, self.leaves)],
            "checkpoint": {"envelope": self.checkpoint(size, root)},
        }

    def checkpoint(
        self, size: int, root: bytes, *, key: ec.EllipticCurvePrivateKey | None = None
    ) -> str:
        """A signed note of the tree head, as Rekor writes it: origin, size, root, a blank
        line, then `— <name> base64(key hint ‖ signature)`."""
        signer = key or self.log_key
        text = f"rekor.test - 1234\n{size}\n{base64.b64encode(root).decode()}\n"
        signature = signer.sign(text.encode(), ec.ECDSA(hashes.SHA256()))
        hint = hashlib.sha256(_der(signer.public_key())).digest()[:4]
        return f"{text}\n\u2014 rekor.test {base64.b64encode(hint + signature).decode()}\n"

    def message_bundle(self, digest: str, *, logged: bool = True, **certificate: Any) -> bytes:
        """A keyless v0.3 bundle whose messageSignature signs the manifest `digest`, with its
        certificate and a transparency-log entry (inclusion promise)."""
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        leaf = self.certificate(ephemeral, **certificate)
        hashed = bytes.fromhex(digest.partition(":")[2])
        from cryptography.hazmat.primitives.asymmetric import utils

        signature = ephemeral.sign(hashed, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        entries = []
        if logged:
            rekor = self.entry(
                hashed, signature, leaf.public_bytes(serialization.Encoding.PEM), prehashed=True
            )
            payload = rekor["Payload"]
            entries.append(
                {
                    "logIndex": str(payload["logIndex"]),
                    "logId": {"keyId": base64.b64encode(bytes.fromhex(payload["logID"])).decode()},
                    "kindVersion": {"kind": "hashedrekord", "version": "0.0.1"},
                    "integratedTime": str(payload["integratedTime"]),
                    "inclusionPromise": {"signedEntryTimestamp": rekor["SignedEntryTimestamp"]},
                    "inclusionProof": self.prove(payload["body"]),
                    "canonicalizedBody": payload["body"],
                }
            )
        return _bundle(
            leaf,
            entries,
            messageSignature={
                "messageDigest": {
                    "algorithm": "SHA2_256",
                    "digest": base64.b64encode(hashed).decode(),
                },
                "signature": base64.b64encode(signature).decode(),
            },
        )

    def dsse_bundle(self, statement: bytes, *, logged: bool = True, **certificate: Any) -> bytes:
        """A keyless v0.3 bundle with a DSSE envelope over an in-toto `statement`, logged as a
        Rekor `dsse` entry (the signature and the certificate as its verifier)."""
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        leaf = self.certificate(ephemeral, **certificate)
        signature = ephemeral.sign(cosign.pae(cosign.IN_TOTO, statement), ec.ECDSA(hashes.SHA256()))
        leaf_pem = leaf.public_bytes(serialization.Encoding.PEM)
        entries = [self._dsse_entry(statement, signature, leaf_pem)] if logged else []
        return _bundle(
            leaf,
            entries,
            dsseEnvelope={
                "payload": base64.b64encode(statement).decode(),
                "payloadType": cosign.IN_TOTO,
                "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}],
            },
        )

    def _dsse_entry(self, statement: bytes, signature: bytes, leaf_pem: bytes) -> dict[str, Any]:
        """Log a Rekor `dsse` entry of `statement`'s `signature` by the certificate `leaf_pem`;
        its bundle `tlogEntries` item (inclusion promise and proof)."""
        self.log_index += 1
        body = base64.b64encode(
            json.dumps(
                {
                    "apiVersion": "0.0.1",
                    "kind": "dsse",
                    "spec": {
                        "payloadHash": {
                            "algorithm": "sha256",
                            "value": hashlib.sha256(statement).hexdigest(),
                        },
                        "signatures": [
                            {
                                "signature": base64.b64encode(signature).decode(),
                                "verifier": base64.b64encode(leaf_pem).decode(),
                            }
                        ],
                    },
                },
                separators=(",", ":"),
            ).encode()
        ).decode()
        payload = {
            "body": body,
            "integratedTime": int(SIGNED_AT.timestamp()),
            "logIndex": self.log_index,
            "logID": self.log_id.hex(),
        }
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        promise = self.log_key.sign(canonical, ec.ECDSA(hashes.SHA256()))
        return {
            "logIndex": str(self.log_index),
            "logId": {"keyId": base64.b64encode(self.log_id).decode()},
            "kindVersion": {"kind": "dsse", "version": "0.0.1"},
            "integratedTime": str(payload["integratedTime"]),
            "inclusionPromise": {"signedEntryTimestamp": base64.b64encode(promise).decode()},
            "inclusionProof": self.prove(body),
            "canonicalizedBody": body,
        }


def _bundle(leaf: x509.Certificate, entries: list[dict[str, Any]], **content: Any) -> bytes:
    """A v0.3 bundle: the certificate `leaf`, its transparency-log `entries`, and `content`
    (a messageSignature or a dsseEnvelope)."""
    return json.dumps(
        {
            "mediaType": cosign.BUNDLE_V03,
            "verificationMaterial": {
                "certificate": {
                    "rawBytes": base64.b64encode(
                        leaf.public_bytes(serialization.Encoding.DER)
                    ).decode()
                },
                "tlogEntries": entries,
            },
            **content,
        }
    ).encode()


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    encoded = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(encoded)]) + encoded
