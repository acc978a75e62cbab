"""`image-policy resolve`: what the registry (and Docker Hub) say about one image: digest,
tier, platforms, signatures and attestations, as text or `--json`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import IO, TYPE_CHECKING

from policy import reference, signing, units
from policy import resolver as resolver_mod
from policy import settings as settings_mod
from policy.cli import options
from policy.cli.exits import EXIT_ALLOWED, EXIT_USAGE
from policy.cli.inputs import read_file
from policy.deadline import Deadline
from policy.errors import InputError
from policy.facts import ImageFacts, Needs, PlatformFacts, SignatureFacts

if TYPE_CHECKING:
    from policy.registry.client import RateLimit


def register(sub: options.Subcommands) -> None:
    """Add `resolve` and its options to the command parser."""
    resolve = sub.add_parser("resolve", help="show what the registry says about an image")
    resolve.add_argument("reference", metavar="REF")
    resolve.add_argument("--platform", action="append", default=[], metavar="OS/ARCH")
    resolve.add_argument("--json", action="store_true")
    resolve.add_argument(
        "--signatures",
        action="store_true",
        help="look up the digest's signatures (cosign .sig tag, OCI referrers)",
    )
    resolve.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="FILE",
        help="PEM public key to verify the signatures with (repeatable; implies --signatures)",
    )
    resolve.add_argument(
        "--trusted-root",
        metavar="FILE",
        help="Sigstore trusted_root.json for keyless signatures and attestations "
        "(default: the public-good root shipped)",
    )
    resolve.add_argument(
        "--attestations",
        action="store_true",
        help="read the in-toto attestations of each platform (BuildKit attestation manifests)",
    )
    resolve.add_argument("--config", metavar="FILE", help="settings file (registries, caches)")
    resolve.add_argument(
        "--timeout", type=options.seconds, default=None, help="seconds (default 8)"
    )
    resolve.set_defaults(func=run)


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Show the facts of one reference; exit 2 when any fact could not be looked up."""
    ref = reference.parse(args.reference)
    keys = _keys(args.key)
    roots = _root(args.trusted_root)
    settings = settings_mod.load_settings(args.config)
    resolver = resolver_mod.build(settings, mode="cli")
    needs = Needs(
        tier=True,
        digest=True,
        platforms=True,
        manifest=True,
        config=True,
        select=tuple(args.platform) or ("*",),
        tag=True,  # for name:tag@digest: where the tag points now
        signatures=args.signatures or bool(keys),  # verified against the --key files
        keys=keys,
        roots=roots,
        attestations=args.attestations,
    )
    deadline = Deadline(args.timeout if args.timeout is not None else settings.decision_timeout)
    facts = resolver.resolve([(ref, needs)], deadline=deadline)[0]
    rate = resolver.rate_limit(ref.registry)
    shown = [p for p in facts.platforms if p.layers is not None or not facts.index]
    if args.json:
        json.dump(_document(args.reference, ref, facts, shown, rate), out, indent=2)
        out.write("\n")
    else:
        _write_text(args.reference, ref, facts, shown, rate, out)
    # Any fact the registry (or Docker Hub) could not give is a failed lookup: exit 2.
    return EXIT_USAGE if facts.errors else EXIT_ALLOWED


def _document(
    written: str,
    ref: reference.Reference,
    facts: ImageFacts,
    shown: Sequence[PlatformFacts],
    rate: RateLimit | None,
) -> dict[str, object]:
    """The `--json` answer: every fact, the registry's rate limit, and what failed."""
    return {
        "reference": str(ref),
        "written": written,
        "digest": facts.digest,
        "tagDigest": facts.tag_digest,
        "tagMatchesDigest": facts.tag_match,
        "mediaType": facts.media_type,
        "tier": facts.tier,
        "tierSource": facts.tier_source,
        "platforms": [_platform_json(p) for p in shown],
        "signatures": (
            [_signature_json(s) for s in facts.signatures] if facts.signatures is not None else None
        ),
        "rateLimit": (
            {"limit": rate.limit, "remaining": rate.remaining, "window": rate.window}
            if rate is not None
            else None
        ),
        "errors": dict(facts.errors),
        "details": dict(facts.details),
    }


def _write_text(
    written: str,
    ref: reference.Reference,
    facts: ImageFacts,
    shown: Sequence[PlatformFacts],
    rate: RateLimit | None,
    out: IO[str],
) -> None:
    """The answer for a reader: one fact a line, each failure reason said once."""
    out.write(f"{ref}\n")
    if written not in (str(ref), ref.familiar):
        out.write(f"  written:    {written}\n")
    out.write(f"  digest:     {facts.digest or '-'}\n")
    if facts.tag_match is not None:
        verdict = "points at the digest" if facts.tag_match else "does NOT point at the digest"
        out.write(f"  tag:        {ref.tag} → {facts.tag_digest} ({verdict})\n")
    out.write(f"  mediaType:  {facts.media_type or '-'}\n")
    source = f" ({facts.tier_source})" if facts.tier_source else ""
    out.write(f"  tier:       {facts.tier or 'unknown'}{source}\n")
    for p in shown:
        out.write(f"  {p.platform or '?':<16} {_platform_line(p)}\n")
        for name, value in sorted((p.labels or {}).items()):
            out.write(f"  {'':<16}   label {name}={value}\n")
    if facts.signatures is not None:
        if not facts.signatures:
            out.write("  signatures: none found (cosign .sig tag, OCI referrers)\n")
        for s in facts.signatures:
            out.write(f"  signature:  {_signature_line(s)}\n")
    if rate is not None:
        out.write(f"  rate limit: {rate.describe()}\n")
    # One line per distinct reason: a failure shared by every fact is said once.
    by_reason: dict[str, list[str]] = {}
    for fact, reason in facts.errors.items():
        detail = facts.details.get(fact)
        by_reason.setdefault(f"{reason} ({detail})" if detail else reason, []).append(fact)
    for reason, names in by_reason.items():
        out.write(f"  error ({', '.join(names)}): {reason}\n")


def _platform_json(p: PlatformFacts) -> dict[str, object]:
    """One platform's facts for `--json`: its manifest, its config, and (when read) its
    attestations; null where not known."""
    return {
        "platform": p.platform,
        "digest": p.digest,
        "layers": p.layers,
        "size": p.size,
        "user": p.user,
        "created": p.created.isoformat() if p.created else None,
        "labels": dict(p.labels) if p.labels is not None else None,
        "attestations": (
            [
                {
                    "predicateType": a.predicate_type,
                    "kind": a.kind,
                    "builder": a.builder,
                    "source": a.source,
                    "buildType": a.build_type,
                    "signedBy": a.signed_by,
                    "issuer": a.issuer,
                    "subject": a.subject,
                    "format": a.format,
                    "signature": a.signature or None,
                    "reason": a.reason or None,
                }
                for a in p.attestations
            ]
            if p.attestations is not None
            else None
        ),
    }


def _signature_json(s: SignatureFacts) -> dict[str, object]:
    """One signature for `--json`: who signed, and whether it verified (else why not)."""
    return {
        "format": s.format,
        "signer": s.signer,
        "verified": s.verified,
        "key": s.key,
        "reason": s.reason or None,
    }


def _signature_line(s: SignatureFacts) -> str:
    """`cosign by key sha256:ab12… (verified)`, or why not."""
    if s.verified:
        return f"{s.format} by {s.signer} (verified)"
    return f"{s.format} by {s.signer}: not verified ({s.reason})"


def _keys(paths: list[str]) -> tuple[bytes, ...]:
    """The DER public keys of `--key` files (InputError naming the file when unusable)."""
    found = []
    for path in paths:
        text = read_file(path, flag="--key", encoding="ascii")
        try:
            found.append(signing.parse_public_key(text, path).der)
        except ValueError as exc:
            raise InputError(f"--key {exc}") from exc
    return tuple(sorted(set(found)))


def _root(path: str | None) -> tuple[signing.RootFile, ...]:
    """The Sigstore trusted root keyless signatures are verified against: `--trusted-root`,
    else the public-good root shipped (InputError naming the file when unreadable)."""
    if path is None:
        return (signing.RootFile.of(signing.public_good_root()),)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"--trusted-root {path}: cannot read: {exc}") from exc
    if len(data) > signing.MAX_TRUSTED_ROOT_BYTES:
        raise InputError(f"--trusted-root {path}: over {signing.MAX_TRUSTED_ROOT_BYTES} bytes")
    return (signing.RootFile.of(data),)


def _platform_line(p: PlatformFacts) -> str:
    """`7 layers, 70.0 MiB, user 1000, created 2026-01-01` (what is known of one platform)."""
    parts = []
    if p.layers is not None:
        parts.append(f"{p.layers} layer{'' if p.layers == 1 else 's'}")
    parts.append(units.format_size(p.size) if p.size is not None else "size -")
    parts.append(f"user {p.user if p.user else '(root)' if p.config_known else '-'}")
    if p.created is not None:
        created = p.created.astimezone(UTC) if p.created.tzinfo else p.created
        parts.append(f"created {created:%Y-%m-%d %H:%M} UTC")
    return ", ".join(parts)
