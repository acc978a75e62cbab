"""The `attestations` check: the in-toto statements each selected platform's image must
carry (SLSA provenance with matching builder, source and build type; an SBOM), optionally
only those signed by configured keys or keyless identities."""

from __future__ import annotations

from policy import attestations, signing
from policy.checks.signers import (
    KEYLESS_SCHEMA,
    keys_and_identities,
    roots_for,
    signer_list,
    trusted_root,
)
from policy.checks.spec import STRINGS, CheckSpec, Subject
from policy.facts import AttestationFacts
from policy.yamlsrc import Node, Reader


def _globs(reader: Reader, node: Node, path: str) -> tuple[signing.Matcher, ...] | None:
    return reader.compiled(node, path, lambda text: signing.matcher(text, "glob"))


def _parse_attestations(reader: Reader, node: Node, path: str) -> object | None:
    children = reader.mapping(node, path, allowed=("provenance", "sbom", "signed"))
    if children is None:
        return None
    ok = True
    provenance = False
    found: dict[str, tuple[signing.Matcher, ...]] = {}
    if "provenance" in children:
        child, child_path = children["provenance"], f"{path}.provenance"
        if isinstance(child.value, bool):
            provenance = child.value
        else:
            fields = reader.mapping(child, child_path, allowed=("builder", "source", "buildType"))
            provenance = fields is not None
            for name, value in (fields or {}).items():
                globs = _globs(reader, value, f"{child_path}.{name}")
                ok = ok and globs is not None
                found[name] = globs or ()
    sbom = False
    if "sbom" in children:
        wants_sbom = reader.boolean(children["sbom"], f"{path}.sbom")
        ok = ok and wants_sbom is not None
        sbom = bool(wants_sbom)
    keys: tuple[signing.KeySpec, ...] = ()
    keyless: tuple[signing.Identity, ...] = ()
    roots: tuple[signing.RootFile, ...] = ()
    if "signed" in children:
        signed = _parse_signers(reader, children["signed"], f"{path}.signed")
        if signed is None:
            ok = False
        else:
            keys, keyless, roots = signed
    if ok and not (provenance or sbom):
        reader.error(node, path, "require provenance, sbom, or both")
        return None
    if not ok:
        return None
    return attestations.AttestationPolicy(
        provenance=provenance,
        builder=found.get("builder", ()),
        source=found.get("source", ()),
        build_type=found.get("buildType", ()),
        sbom=sbom,
        keys=keys,
        keyless=keyless,
        roots=roots,
    )


_SIGNED_KEYS = ("keys", "keyless", "trustedRoot")


_Signers = tuple[
    tuple[signing.KeySpec, ...], tuple[signing.Identity, ...], tuple[signing.RootFile, ...]
]


def _parse_signers(reader: Reader, node: Node, path: str) -> _Signers | None:
    """`signed: {keys, keyless, trustedRoot}`: who must have signed an attestation, as in
    `require.signatures` (None when it is wrong, the errors reported)."""
    children = signer_list(reader, node, path, _SIGNED_KEYS)
    if children is None:
        return None
    keys, identities, ok = keys_and_identities(reader, children, path)
    root, root_ok = trusted_root(reader, children, path)
    if not (ok and root_ok):
        return None
    return tuple(keys), tuple(identities), roots_for(root) if identities else ()


_NO_CERTIFICATE = (
    "signed in the index (BuildKit's DSSE carries no certificate), not by a configured key; "
    "a keyless identity cannot apply"
)


def _attestation_why(a: AttestationFacts, policy: attestations.AttestationPolicy) -> str:
    """Why a statement does not count under `policy` ("" when it does)."""
    if a.reason or not policy.signed or policy.signer_of(a):
        return a.reason
    if a.signature:
        return f"its signature did not verify: {a.signature}"
    if a.subject is not None:
        return f"signed by keyless {a.subject} (issuer {a.issuer}), not an identity of this rule"
    if a.signed_by is not None:
        return f"signed by key {signing.short(a.signed_by)}, not a key of this rule"
    if policy.keyless and a.format == "buildkit":
        return (
            _NO_CERTIFICATE
            if not policy.keys
            else _NO_CERTIFICATE.replace("not by a configured key", "and by no configured key")
        )
    return (
        "not signed by a configured signer"
        if policy.keyless
        else ("not signed by a configured key")
    )


def _attestations_said(
    found: tuple[AttestationFacts, ...], policy: attestations.AttestationPolicy
) -> str:
    if not found:
        return "no attestations"
    parts = []
    for a in found:
        why = _attestation_why(a, policy)
        where = "" if a.format == "buildkit" else f" ({a.format})"
        parts.append(f"{a.kind}{where}{f' ({why})' if why else ''}")
    counted = {p: parts.count(p) for p in dict.fromkeys(parts)}
    return ", ".join(f"{n} {p}" if n > 1 else p for p, n in counted.items())


def _first_mismatch(
    statements: list[AttestationFacts], policy: attestations.AttestationPolicy
) -> str | None:
    """Why none of the provenance statements has matching builder, source and build type
    (None when one has)."""
    fields = (
        ("builder id", policy.builder, "builder"),
        ("source", policy.source, "source"),
        ("build type", policy.build_type, "build_type"),
    )
    why = None
    for a in statements:
        for name, globs, attribute in fields:
            value: str | None = getattr(a, attribute)
            if globs and (value is None or not any(g.matches(value) for g in globs)):
                shown = repr(value) if value is not None else "none"
                why = f"provenance {name} {shown} matches none of {', '.join(map(str, globs))}"
                break
        else:
            return None
    return why


def _judge_attestations(setting: object, s: Subject) -> list[str]:
    assert isinstance(setting, attestations.AttestationPolicy)
    out = []
    signed = ""
    if setting.signed:
        signed = " signed by a configured " + ("key" if not setting.keyless else "signer")
    for p in s.platforms:
        found = p.attestations or ()
        usable = [a for a in found if not _attestation_why(a, setting)]
        said = _attestations_said(found, setting)
        if setting.provenance:
            provenance = [a for a in usable if a.kind == "provenance"]
            if not provenance:
                out.append(
                    f"{s.label(p)} has no SLSA provenance attestation{signed} ({said}); "
                    f"rule {s.rule_id} requires one"
                )
            elif (why := _first_mismatch(provenance, setting)) is not None:
                out.append(f"{s.label(p)}: {why}; rule {s.rule_id} requires a match")
        if setting.sbom and not any(a.kind == "sbom" for a in usable):
            out.append(
                f"{s.label(p)} has no SBOM attestation{signed} ({said}); "
                f"rule {s.rule_id} requires one"
            )
    return out


SPECS: tuple[CheckSpec, ...] = (
    CheckSpec(
        "attestations",
        "attestations",
        _parse_attestations,
        _judge_attestations,
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "provenance": {
                    "oneOf": [
                        {"type": "boolean"},
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "builder": STRINGS,
                                "source": STRINGS,
                                "buildType": STRINGS,
                            },
                        },
                    ]
                },
                "sbom": {"type": "boolean"},
                "signed": {
                    "type": "object",
                    "anyOf": [{"required": ["keys"]}, {"required": ["keyless"]}],
                    "additionalProperties": False,
                    "properties": {
                        "keys": STRINGS,
                        "keyless": KEYLESS_SCHEMA,
                        "trustedRoot": {"type": "string"},
                    },
                },
            },
        },
        "In-toto attestations each selected platform's image must carry (BuildKit "
        "attestation manifests of its index, subject = the platform image): SLSA "
        "`provenance` (`true`, or globs for `builder`, `source`, `buildType`) and/or an "
        "`sbom`; also cosign `.att` attestations and Sigstore bundles among the OCI referrers "
        "of the digest judged; `signed`: only statements in DSSE envelopes signed by these "
        "`keys` or `keyless` identities (those with a certificate: cosign, bundles) count.",
    ),
)
