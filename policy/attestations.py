"""In-toto statements attached to images: what a statement is about and what it says (pure).

BuildKit writes, for each platform of an index, an attestation manifest (platform
`unknown/unknown`, annotations `vnd.docker.reference.type: attestation-manifest` and
`vnd.docker.reference.digest: <the platform image's digest>`) whose layers are in-toto
statements (`application/vnd.in-toto+json`, annotation `in-toto.io/predicate-type`): SLSA
provenance and SPDX SBOMs. A statement counts for a platform only when one of its subjects is
that platform's image digest; a provenance's builder id, source repository and build type are
read from SLSA v0.2 and v1 predicates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from policy import jsonbound
from policy.facts import AttestationFacts
from policy.signing import Identity, KeySpec, Matcher, RootFile

__all__ = [
    "IN_TOTO",
    "MAX_STATEMENT_BYTES",
    "PREDICATE_ANNOTATION",
    "AttestationPolicy",
    "kind_of",
    "read_statement",
]

IN_TOTO = "application/vnd.in-toto+json"
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
REFERENCE_DIGEST_ANNOTATION = "vnd.docker.reference.digest"
MAX_STATEMENT_BYTES = 1024 * 1024
_PROVENANCE = ("https://slsa.dev/provenance/",)
_SBOM = ("https://spdx.dev/Document", "https://cyclonedx.org/bom")


def kind_of(predicate_type: str) -> str:
    """`provenance` (SLSA, any version), `sbom` (SPDX or CycloneDX) or `other`."""
    if predicate_type.startswith(_PROVENANCE):
        return "provenance"
    if predicate_type.startswith(_SBOM):
        return "sbom"
    return "other"


def _text(value: object) -> str | None:
    return value[:1024] if isinstance(value, str) and value else None


def _at(document: Any, *path: str) -> object:
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def read_statement(
    data: bytes,
    digest: str,
    *,
    signed_by: str | None = None,
    also: str | None = None,
    **signer: str | None,
) -> AttestationFacts:
    """The statement in `data` as facts for the image `digest` (or, `also`, the index that
    lists it: a statement about the index is about each of its images); a statement that is
    not JSON, not a statement, or about another image gets its `reason`. `signer`: the other
    AttestationFacts fields saying who signed it and where it was found."""
    facts = _read(data, digest, also, signed_by)
    extra = {k: v for k, v in signer.items() if v is not None}
    return dataclasses.replace(facts, **extra) if extra else facts


def _read(data: bytes, digest: str, also: str | None, signed_by: str | None) -> AttestationFacts:
    try:
        document = jsonbound.loads(data, max_bytes=MAX_STATEMENT_BYTES, max_depth=32)
    except jsonbound.JSONRefused as exc:
        return AttestationFacts("", "other", reason=f"not a JSON in-toto statement ({exc})")
    predicate_type = _text(_at(document, "predicateType")) or ""
    kind = kind_of(predicate_type)
    if not predicate_type:
        return AttestationFacts("", "other", reason="not an in-toto statement (no predicateType)")
    algorithm, _, encoded = digest.partition(":")
    subjects = _at(document, "subject")
    wanted = {encoded} | ({also.partition(":")[2]} if also is not None else set())
    named = isinstance(subjects, list) and any(
        _at(s, "digest", algorithm) in wanted for s in subjects[:256]
    )
    if not named:
        return AttestationFacts(
            predicate_type, kind, signed_by=signed_by, reason="its subject is not this image"
        )
    if kind != "provenance":
        return AttestationFacts(predicate_type, kind, signed_by=signed_by)
    predicate = _at(document, "predicate")
    if predicate_type.endswith("/v0.2"):
        builder = _text(_at(predicate, "builder", "id"))
        build_type = _text(_at(predicate, "buildType"))
        source = _text(_at(predicate, "invocation", "configSource", "uri"))
        if source is None:
            materials = _at(predicate, "materials")
            first = materials[0] if isinstance(materials, list) and materials else None
            source = _text(_at(first, "uri"))
    else:  # SLSA v1
        builder = _text(_at(predicate, "runDetails", "builder", "id"))
        build_type = _text(_at(predicate, "buildDefinition", "buildType"))
        source = _text(
            _at(predicate, "buildDefinition", "externalParameters", "configSource", "uri")
        )
        if source is None:
            deps = _at(predicate, "buildDefinition", "resolvedDependencies")
            first = deps[0] if isinstance(deps, list) and deps else None
            source = _text(_at(first, "uri"))
    return AttestationFacts(
        predicate_type,
        kind,
        builder=builder,
        source=source,
        build_type=build_type,
        signed_by=signed_by,
    )


@dataclass(frozen=True)
class AttestationPolicy:
    """The parsed `require.attestations`: for every selected platform, a provenance (whose
    builder id, source and build type match the globs given) and/or an SBOM, each signed by
    one of `keys` or one of the `keyless` identities (certificates chaining to `roots`) when
    `signed` is given."""

    provenance: bool = False
    builder: tuple[Matcher, ...] = ()
    source: tuple[Matcher, ...] = ()
    build_type: tuple[Matcher, ...] = ()
    sbom: bool = False
    keys: tuple[KeySpec, ...] = ()
    keyless: tuple[Identity, ...] = ()
    roots: tuple[RootFile, ...] = ()

    @property
    def signed(self) -> bool:
        """Whether only signed statements count."""
        return bool(self.keys or self.keyless)

    def signer_of(self, facts: AttestationFacts) -> bool:
        """Whether `facts` was signed by a key or a keyless identity of this policy."""
        if facts.signed_by is not None and facts.signed_by in self.fingerprints:
            return True
        return any(i.matches(facts.issuer, facts.subject) for i in self.keyless)

    @property
    def fingerprints(self) -> frozenset[str]:
        return frozenset(k.fingerprint for k in self.keys)
