"""What a `require.signatures` rule trusts, read without a crypto library (pure).

A public key is read from PEM (`-----BEGIN PUBLIC KEY-----`, a DER SubjectPublicKeyInfo) with
the standard library: the DER is walked far enough to name the algorithm (ECDSA P-256/P-384,
Ed25519, RSA of at least 2048 bits), so a rule file naming an unusable key is refused by lint
with its file:line, and the key's fingerprint (`sha256:` of the DER) names it in findings and
facts files. Verifying signatures with it is `policy.sigverify`'s (shell) job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Literal

__all__ = [
    "MAX_TRUSTED_ROOT_BYTES",
    "MIN_RSA_BITS",
    "Identity",
    "KeySpec",
    "Matcher",
    "RootFile",
    "SignaturePolicy",
    "matcher",
    "parse_public_key",
    "public_good_root",
    "short",
]

MIN_RSA_BITS = 2048
MAX_PEM_CHARS = 64 * 1024
MAX_TRUSTED_ROOT_BYTES = 1024 * 1024
PUBLIC_GOOD_ROOT = "sigstore-public-good.trusted_root.json"

_PEM = re.compile(
    r"-----BEGIN PUBLIC KEY-----\s*(?P<body>[A-Za-z0-9+/=\s]+?)\s*-----END PUBLIC KEY-----"
)
# Algorithm and curve object identifiers, as DER contents (without tag and length).
_EC_PUBLIC_KEY = bytes.fromhex("2a8648ce3d0201")  # 1.2.840.10045.2.1
_RSA = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1
_ED25519 = bytes.fromhex("2b6570")  # 1.3.101.112
_CURVES = {
    bytes.fromhex("2a8648ce3d030107"): "ecdsa-p256",  # prime256v1
    bytes.fromhex("2b81040022"): "ecdsa-p384",  # secp384r1
}
_CURVE_NAMES = {
    bytes.fromhex("2b8104000a"): "secp256k1",
    bytes.fromhex("2b81040023"): "P-521",
}


@dataclass(frozen=True)
class KeySpec:
    """A trusted public key: its DER SubjectPublicKeyInfo, algorithm and where it came from."""

    der: bytes
    algorithm: str
    source: str

    @property
    def fingerprint(self) -> str:
        """`sha256:<hex>` of the DER: the key's name in findings and facts files."""
        return "sha256:" + hashlib.sha256(self.der).hexdigest()


@dataclass(frozen=True)
class Matcher:
    """How an identity field is matched: `exact` text, a `glob` (`*` matches any run of
    characters, `/` included), or a `regex` (matched whole)."""

    text: str
    kind: Literal["exact", "glob", "regex"]
    pattern: re.Pattern[str] | None = None

    def matches(self, value: str) -> bool:
        if self.pattern is None:
            return value == self.text
        return self.pattern.fullmatch(value) is not None

    def __str__(self) -> str:
        return f"/{self.text}/" if self.kind == "regex" else self.text


def matcher(text: str, kind: Literal["exact", "glob", "regex"]) -> Matcher:
    """A Matcher; ValueError for a regular expression that does not compile."""
    if kind == "regex":
        try:
            return Matcher(text, kind, re.compile(text))
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
    if kind == "glob" and "*" in text:
        return Matcher(text, kind, re.compile(".*".join(re.escape(p) for p in text.split("*"))))
    return Matcher(text, "exact")


@dataclass(frozen=True)
class Identity:
    """A keyless signer: the OIDC issuer and the subject (SAN) of its Fulcio certificate."""

    issuer: Matcher
    subject: Matcher

    def matches(self, issuer: str | None, subject: str | None) -> bool:
        return (
            issuer is not None
            and subject is not None
            and self.issuer.matches(issuer)
            and self.subject.matches(subject)
        )

    def __str__(self) -> str:
        return f"{self.subject} (issuer {self.issuer})"


@dataclass(frozen=True)
class RootFile:
    """A Sigstore trusted root's bytes, compared and hashed by their digest. The rule set
    owns them: caches holding needs that name a root charge nothing for it (`opaque`)."""

    digest: str
    data: bytes = field(compare=False, repr=False)

    @classmethod
    def of(cls, data: bytes) -> RootFile:
        return cls("sha256:" + hashlib.sha256(data).hexdigest(), data)


@dataclass(frozen=True)
class SignaturePolicy:
    """The parsed `require.signatures`: `minimum` distinct signers — configured keys and
    keyless identities — must each have verified a signature of the judged digest.
    `roots`: the Sigstore trusted roots (JSON) that keyless certificates chain to and whose
    transparency logs and CT logs are trusted; `require_tlog`: only signatures with a verified
    transparency-log entry count (keyless ones always need one)."""

    keys: tuple[KeySpec, ...]
    minimum: int = 1
    keyless: tuple[Identity, ...] = ()
    require_tlog: bool = False
    roots: tuple[RootFile, ...] = ()

    @property
    def fingerprints(self) -> frozenset[str]:
        return frozenset(k.fingerprint for k in self.keys)


def public_good_root() -> bytes:
    """The Sigstore public-good trusted root shipped with the package (Fulcio, Rekor, CT log
    keys as of the release; `trustedRoot:` in a rule names another one)."""
    return resources.files("policy").joinpath("data", PUBLIC_GOOD_ROOT).read_bytes()


def short(fingerprint: str) -> str:
    """`sha256:ab12cd34ef56…`: a fingerprint or digest short enough for a message."""
    algorithm, _, encoded = fingerprint.partition(":")
    return f"{algorithm}:{encoded[:12]}…" if len(encoded) > 12 else fingerprint


def parse_public_key(text: str, source: str = "inline") -> KeySpec:
    """The one PEM public key in `text`; ValueError saying what is wrong with it."""
    if len(text) > MAX_PEM_CHARS:
        raise ValueError(f"{source}: more than {MAX_PEM_CHARS} characters, not a public key")
    found = list(_PEM.finditer(text))
    if not found:
        if "PRIVATE KEY" in text:
            raise ValueError(f"{source}: is a private key; give the public key")
        if "CERTIFICATE" in text:
            raise ValueError(f"{source}: is a certificate; give its public key (PUBLIC KEY PEM)")
        raise ValueError(f"{source}: no '-----BEGIN PUBLIC KEY-----' PEM block")
    if len(found) > 1:
        raise ValueError(f"{source}: holds {len(found)} public keys; give one per entry")
    try:
        der = base64.b64decode("".join(found[0]["body"].split()), validate=True)
    except binascii.Error:
        raise ValueError(f"{source}: the PEM body is not valid base64") from None
    try:
        algorithm = _spki_algorithm(der)
    except _BadDer as exc:
        raise ValueError(f"{source}: not a DER SubjectPublicKeyInfo ({exc})") from None
    except _Unsupported as exc:
        raise ValueError(f"{source}: {exc}") from None
    return KeySpec(der=der, algorithm=algorithm, source=source)


class _BadDer(ValueError):
    pass


class _Unsupported(ValueError):
    pass


def _read(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at `at`."""
    if at + 2 > len(der):
        raise _BadDer("truncated")
    tag, first = der[at], der[at + 1]
    at += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or at + count > len(der):
            raise _BadDer("bad length")
        length = int.from_bytes(der[at : at + count], "big")
        at += count
    if at + length > len(der):
        raise _BadDer("truncated")
    return tag, at, at + length


def _spki_algorithm(der: bytes) -> str:
    tag, start, end = _read(der, 0)
    if tag != 0x30 or end != len(der):
        raise _BadDer("not one SEQUENCE")
    tag, alg_start, alg_end = _read(der, start)
    if tag != 0x30:
        raise _BadDer("no AlgorithmIdentifier")
    tag, oid_start, oid_end = _read(der, alg_start)
    if tag != 0x06:
        raise _BadDer("no algorithm OID")
    oid = der[oid_start:oid_end]
    tag, bits_start, bits_end = _read(der, alg_end)
    if tag != 0x03 or bits_end != end or bits_start == bits_end:
        raise _BadDer("no subjectPublicKey BIT STRING")
    if oid == _ED25519:
        if bits_end - bits_start != 33:
            raise _BadDer("an Ed25519 key is 32 bytes")
        return "ed25519"
    if oid == _EC_PUBLIC_KEY:
        if oid_end >= alg_end:
            raise _BadDer("an EC key names its curve")
        tag, curve_start, curve_end = _read(der, oid_end)
        curve = der[curve_start:curve_end]
        if tag != 0x06:
            raise _BadDer("an EC key names its curve")
        if curve not in _CURVES:
            name = _CURVE_NAMES.get(curve, "this curve")
            raise _Unsupported(f"ECDSA on {name} is not supported (use P-256 or P-384)")
        return _CURVES[curve]
    if oid == _RSA:
        # BIT STRING: one byte of unused bits, then SEQUENCE { modulus INTEGER, exponent }.
        tag, seq_start, _ = _read(der, bits_start + 1)
        if tag != 0x30:
            raise _BadDer("no RSAPublicKey")
        tag, mod_start, mod_end = _read(der, seq_start)
        if tag != 0x02:
            raise _BadDer("no RSA modulus")
        bits = int.from_bytes(der[mod_start:mod_end], "big").bit_length()
        if bits < MIN_RSA_BITS:
            raise _Unsupported(f"RSA key of {bits} bits; at least {MIN_RSA_BITS} are required")
        return f"rsa-{bits}"
    raise _Unsupported(
        "unsupported key algorithm (ECDSA P-256/P-384, Ed25519 and RSA are supported)"
    )
