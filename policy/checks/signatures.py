"""The `signatures` check: how many of the configured signers (keys, keyless identities)
verified a signature of the digest judged, and, when too few, what was found instead."""

from __future__ import annotations

from policy import signing
from policy.checks.signers import (
    KEYLESS_SCHEMA,
    keys_and_identities,
    roots_for,
    signer_list,
    trusted_root,
)
from policy.checks.spec import STRINGS, CheckSpec, Subject
from policy.facts import SignatureFacts
from policy.yamlsrc import Node, Reader

_SIGNATURE_KEYS = ("keys", "keyless", "minimum", "requireTlog", "trustedRoot")


def _parse_signatures(reader: Reader, node: Node, path: str) -> object | None:
    children = signer_list(reader, node, path, _SIGNATURE_KEYS)
    if children is None:
        return None
    keys, identities, ok = keys_and_identities(reader, children, path)
    minimum = 1
    if "minimum" in children:
        minimum = reader.positive_int(children["minimum"], f"{path}.minimum") or 0
        ok = ok and minimum > 0
    require_tlog = False
    if "requireTlog" in children:
        value = reader.boolean(children["requireTlog"], f"{path}.requireTlog")
        ok = ok and value is not None
        require_tlog = bool(value)
    root, root_ok = trusted_root(reader, children, path)
    if not (ok and root_ok):
        return None
    distinct = len({k.fingerprint for k in keys}) + len(set(identities))
    if minimum > distinct:
        reader.error(
            children["minimum"],
            f"{path}.minimum",
            f"minimum is {minimum} but only {distinct} distinct signer"
            f"{' is' if distinct == 1 else 's are'} configured",
        )
        return None
    roots = roots_for(root) if identities or require_tlog else ()
    return signing.SignaturePolicy(
        keys=tuple(keys),
        minimum=minimum,
        keyless=tuple(identities),
        require_tlog=require_tlog,
        roots=roots,
    )


def _counts_for(sig: SignatureFacts, policy: signing.SignaturePolicy) -> str | None:
    """The signer a verified signature counts as under `policy` (`key:<fp>` or
    `keyless:<issuer> <subject>`), or None."""
    if not sig.verified or (policy.require_tlog and not sig.tlog):
        return None
    if sig.key is not None and sig.key in policy.fingerprints:
        return f"key:{sig.key}"
    if sig.subject is not None and any(i.matches(sig.issuer, sig.subject) for i in policy.keyless):
        return f"keyless:{sig.issuer} {sig.subject}"
    return None


def _signature_said(sig: SignatureFacts, policy: signing.SignaturePolicy) -> str:
    """One signature, as a finding tells it."""
    if not sig.verified:
        return (
            f"{sig.format} signature by {sig.signer or 'unknown signer'}, not verified: "
            f"{sig.reason}"
        )
    if sig.key is not None:
        who = f"key {signing.short(sig.key)}"
        if sig.key not in policy.fingerprints:
            return f"{sig.format} signature by {who} (not a key of this rule)"
    else:
        who = f"keyless {sig.subject} (issuer {sig.issuer})"
        if not any(i.matches(sig.issuer, sig.subject) for i in policy.keyless):
            return f"{sig.format} signature by {who} (not an identity of this rule)"
    if policy.require_tlog and not sig.tlog:
        return f"{sig.format} signature by {who}, without a verified transparency-log entry"
    return f"{sig.format} signature by {who}"


def _wanted(policy: signing.SignaturePolicy) -> str:
    signers = [f"key {signing.short(k)}" for k in sorted(policy.fingerprints)]
    signers += [f"keyless {i}" for i in dict.fromkeys(policy.keyless)]
    tlog = " with a transparency-log entry" if policy.require_tlog else ""
    if len(signers) == 1:
        only = signers[0].replace("key ", "the configured key ", 1) if policy.keys else signers[0]
        return f"a signature{tlog} by {only}"
    return f"signatures{tlog} by {policy.minimum} of: {', '.join(signers)}"


def _judge_signatures(setting: object, s: Subject) -> list[str]:
    assert isinstance(setting, signing.SignaturePolicy)
    found = s.facts.signatures or ()
    signers = {who for sig in found if (who := _counts_for(sig, setting)) is not None}
    if len(signers) >= setting.minimum:
        return []
    requires = _wanted(setting)
    digest = signing.short(s.facts.digest or "?")
    if not found:
        return [
            f"{s.ref}: no signatures found for {digest} (cosign .sig tag, OCI referrers); "
            f"rule {s.rule_id} requires {requires}"
        ]
    count = f"{len(found)} signature{'' if len(found) == 1 else 's'}"
    if signers:
        head = f"{count} for {digest}, {len(signers)} by a configured signer"
    else:
        head = f"{count} for {digest}, none by a configured signer"
    listed = sorted({_signature_said(sig, setting) for sig in found})
    shown = "; ".join(listed[:4]) + (f"; {len(listed) - 4} more" if len(listed) > 4 else "")
    return [f"{s.ref}: {head} ({shown}); rule {s.rule_id} requires {requires}"]


SPECS: tuple[CheckSpec, ...] = (
    CheckSpec(
        "signatures",
        "signatures",
        _parse_signatures,
        _judge_signatures,
        {
            "type": "object",
            "anyOf": [{"required": ["keys"]}, {"required": ["keyless"]}],
            "additionalProperties": False,
            "properties": {
                "keys": {
                    **STRINGS,
                    "description": "PEM public keys (ECDSA P-256/P-384, Ed25519, RSA ≥ "
                    "2048 bits), inline or as file paths (relative to the rules file)",
                },
                "keyless": KEYLESS_SCHEMA,
                "minimum": {"type": "integer", "minimum": 1, "default": 1},
                "requireTlog": {"type": "boolean", "default": False},
                "trustedRoot": {
                    "type": "string",
                    "description": "Sigstore trusted_root.json (default: the public-good "
                    "root shipped with image-policy)",
                },
            },
        },
        "cosign signatures of the digest judged (for an index, the index digest), found "
        "in cosign's `sha256-<hex>.sig` tag or OCI referrers; `minimum` distinct signers "
        "among the configured `keys` and `keyless` identities must each have verified one.",
    ),
)
