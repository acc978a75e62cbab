"""`image-policy` command line: check, lint, schema (and more as issues land).

Exit codes: 0 allowed (warnings allowed), 1 denied, 2 bad input, rules or usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn

from policy import diskcache, factsfile, loader, reference, schema, units
from policy import resolver as resolver_mod
from policy import settings as settings_mod
from policy import tiers as tiers_mod
from policy.deadline import Deadline
from policy.diskcache import DiskCache
from policy.errors import InputError, InvalidReference, PolicyError, RegistryError, RuleErrors
from policy.evaluate import ImageDecision
from policy.facts import TIERS, Needs, PlatformFacts
from policy.rules import RuleSet
from policy.scanners import FoundImage
from policy.scanners import kubernetes as k8s_scanner
from policy.service import Item, Resolver, Service

EXIT_ALLOWED, EXIT_DENIED, EXIT_USAGE = 0, 1, 2


class _UsageError(Exception):
    """A command line argparse refused; the message says why."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing to sys.stderr, so `main(err=...)` gets it."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.format_usage()}{self.prog}: error: {message}")


@dataclass(frozen=True)
class _Result:
    """One image as found in the input, with its decision (None: invalid reference)."""

    found: FoundImage
    decision: ImageDecision | None
    invalid: str | None = None

    @property
    def allowed(self) -> bool:
        return self.decision is not None and self.decision.allowed


def _read_inputs(paths: Sequence[str], stdin: IO[str]) -> list[FoundImage]:
    found: list[FoundImage] = []
    for name in paths:
        if name == "-":
            found.extend(k8s_scanner.scan(stdin.read(), "<stdin>"))
            continue
        path = Path(name)
        files = (
            sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
            if path.is_dir()
            else [path]
        )
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"{file}: cannot read: {exc}") from exc
            found.extend(k8s_scanner.scan(text, str(file)))
    return found


def _from_flags(images: Sequence[str]) -> list[FoundImage]:
    return [
        FoundImage(
            image=text,
            file="--image",
            line=0,
            column=0,
            kind="",
            name="",
            namespace=None,
            container="",
            field="",
        )
        for text in images
    ]


def _judge(
    ruleset: RuleSet,
    resolver: Resolver,
    found: Sequence[FoundImage],
    namespace: str | None,
    deadline: Deadline,
) -> list[_Result]:
    service = Service(ruleset, resolver)
    parsed: list[tuple[FoundImage, reference.Reference | None, str | None]] = []
    for item in found:
        try:
            parsed.append((item, reference.parse(item.image), None))
        except InvalidReference as exc:
            parsed.append((item, None, exc.problem))
    items = [Item(ref, namespace or item.namespace) for item, ref, _ in parsed if ref is not None]
    decisions = iter(service.decide(items, deadline=deadline))
    return [
        _Result(item, next(decisions) if ref is not None else None, problem)
        for item, ref, problem in parsed
    ]


def _source(found: FoundImage) -> str:
    return found.location if found.line else found.file


def _json_report(results: Sequence[_Result]) -> dict[str, object]:
    out = []
    for r in results:
        d = r.decision
        violations = (
            [
                {"rule": v.rule, "check": v.check, "action": v.action, "message": v.message}
                for v in d.violations
            ]
            if d is not None
            else [
                {
                    "rule": "(reference)",
                    "check": "reference",
                    "action": "deny",
                    "message": f"invalid image reference {r.found.image!r}: {r.invalid}",
                }
            ]
        )
        out.append(
            {
                "image": r.found.image,
                "reference": str(d.reference) if d is not None else None,
                "digest": (d.facts.digest or d.reference.digest) if d is not None else None,
                "source": _source(r.found),
                "allowed": r.allowed,
                "violations": violations,
                "warnings": list(d.warnings) if d is not None else [],
            }
        )
    denied = sum(1 for r in results if not r.allowed)
    summary = {
        "images": len(results),
        "allowed": len(results) - denied,
        "denied": denied,
        "warnings": sum(
            len(r.decision.by_action("warn")) + len(r.decision.warnings)
            for r in results
            if r.decision is not None
        ),
        "audits": sum(len(r.decision.by_action("audit")) for r in results if r.decision),
    }
    return {"allowed": denied == 0, "results": out, "summary": summary}


def _text_report(results: Sequence[_Result], out: IO[str]) -> None:
    by_file: dict[str, list[_Result]] = {}
    for r in results:
        by_file.setdefault(r.found.file, []).append(r)
    for file, items in by_file.items():
        out.write(f"{file}\n")
        for r in items:
            where = f"{r.found.line}:{r.found.column} " if r.found.line else ""
            verdict = "allowed" if r.allowed else "DENIED"
            out.write(f"  {where}{r.found.image}  {verdict}\n")
            if r.decision is None:
                out.write(f"    ✗ invalid image reference: {r.invalid}\n")
                continue
            marks = {"deny": "✗", "warn": "!", "audit": "·"}
            for v in r.decision.violations:
                out.write(f"    {marks[v.action]} {v.action} {v.rule}: {v.message}\n")
            for w in r.decision.warnings:
                out.write(f"    ! warn: {w}\n")
    denied = sum(1 for r in results if not r.allowed)
    out.write(f"{len(results)} images, {len(results) - denied} allowed, {denied} denied\n")


def _disk_cache(args: argparse.Namespace) -> DiskCache | None:
    if args.no_cache:
        return None
    return DiskCache(args.cache_dir or diskcache.default_dir())


def _cmd_check(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if not args.image and not args.inputs:
        err.write("image-policy check: give manifest files, '-' for stdin, or --image REF\n")
        return EXIT_USAGE
    ruleset = loader.load_rules(args.rules)
    found = _from_flags(args.image) + _read_inputs(args.inputs, sys.stdin)
    resolver: Resolver
    if args.facts is not None:
        resolver = factsfile.FactsResolver(factsfile.load_facts(args.facts))
    else:
        resolver = resolver_mod.build(
            settings_mod.load_settings(args.config),
            disk=_disk_cache(args),
            max_workers=args.jobs,
        )
    if not found:
        err.write("image-policy check: no images found in the inputs\n")
        return EXIT_ALLOWED
    results = _judge(ruleset, resolver, found, args.namespace, Deadline(args.timeout))
    if args.format == "json":
        json.dump(_json_report(results), out, indent=2)
        out.write("\n")
    else:
        _text_report(results, out)
    return EXIT_ALLOWED if all(r.allowed for r in results) else EXIT_DENIED


def _platform_json(p: PlatformFacts) -> dict[str, object]:
    return {
        "platform": p.platform,
        "digest": p.digest,
        "layers": p.layers,
        "size": p.size,
        "user": p.user,
        "created": p.created.isoformat() if p.created else None,
        "labels": dict(p.labels) if p.labels is not None else None,
    }


def _cmd_resolve(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    ref = reference.parse(args.reference)
    settings = settings_mod.load_settings(args.config)
    resolver = resolver_mod.build(settings)
    needs = Needs(
        tier=True,
        digest=True,
        platforms=True,
        manifest=True,
        config=True,
        select=tuple(args.platform) or ("*",),
    )
    deadline = Deadline(args.timeout if args.timeout is not None else settings.decision_timeout)
    facts = resolver.resolve([(ref, needs)], deadline=deadline)[0]
    rate = resolver.rate_limit(ref.registry)
    shown = [p for p in facts.platforms if p.layers is not None or not facts.index]
    document = {
        "reference": str(ref),
        "digest": facts.digest,
        "mediaType": facts.media_type,
        "tier": facts.tier,
        "tierSource": facts.tier_source,
        "platforms": [_platform_json(p) for p in shown],
        "rateLimit": (
            {"limit": rate.limit, "remaining": rate.remaining, "window": rate.window}
            if rate is not None
            else None
        ),
        "errors": dict(facts.errors),
    }
    if args.json:
        json.dump(document, out, indent=2)
        out.write("\n")
    else:
        out.write(f"{ref}\n  digest:     {facts.digest or '-'}\n")
        out.write(f"  mediaType:  {facts.media_type or '-'}\n")
        source = f" ({facts.tier_source})" if facts.tier_source else ""
        out.write(f"  tier:       {facts.tier or 'unknown'}{source}\n")
        for p in shown:
            size = units.format_size(p.size) if p.size is not None else "-"
            user = p.user if p.user else "(root)" if p.config_known else "-"
            out.write(f"  {p.platform or '?':<16} {p.layers} layers, {size}, user {user}\n")
        if rate is not None:
            out.write(f"  rate limit: {rate.describe()}\n")
        for fact, reason in facts.errors.items():
            out.write(f"  error ({fact}): {reason}\n")
    return EXIT_USAGE if facts.errors and facts.digest is None else EXIT_ALLOWED


def _catalog_entry(ref: reference.Reference, source: str) -> str:
    """The catalog pattern an answer covers: a whole Docker Hub namespace when Docker Hub
    answered (its programs are granted per namespace), else the repository itself."""
    namespace = tiers_mod.hub_namespace(ref)
    if namespace is not None and source in (tiers_mod.SOURCE_SEARCH, tiers_mod.SOURCE_ORG):
        return f"docker.io/{namespace}/**"
    return ref.name


def _catalog_yaml(entries: dict[str, tuple[str, str, str]]) -> str:
    """`tiers:` YAML (tiers in TIERS order, patterns sorted), each entry commented with where
    its tier came from. Strings are JSON-quoted, which YAML reads as the same strings."""
    lines = [
        "# Trusted-content tier catalog written by `image-policy tiers export`.",
        "# Put it in the settings file (--config); the first matching entry wins, in file order.",
        "tiers:",
    ]
    for tier in TIERS:
        patterns = sorted(p for p, (t, _, _) in entries.items() if t == tier)
        if not patterns:
            continue
        lines.append(f"  {tier}:")
        for pattern in patterns:
            _, source, example = entries[pattern]
            lines.append(f"    - {json.dumps(pattern)}  # {source}: {example}")
    if len(lines) == 3:
        lines[-1] = "tiers: {}"
    return "\n".join(lines) + "\n"


def _cmd_tiers_export(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    images = list(args.image)
    files: list[str] = []
    for item in args.inputs:
        (files if item == "-" or Path(item).exists() else images).append(item)
    found = _from_flags(images) + _read_inputs(files, sys.stdin)
    if not found:
        err.write("image-policy tiers export: give images or manifest files\n")
        return EXIT_USAGE
    refs: dict[reference.Reference, None] = {}
    for item in found:
        try:
            refs[reference.parse(item.image)] = None
        except InvalidReference as exc:
            err.write(f"{_source(item)}: {exc}\n")
            return EXIT_USAGE
    settings = settings_mod.load_settings(args.config)
    # Live lookups only: the settings' own catalog is not consulted.
    tiers = tiers_mod.Tiers((), tiers_mod.from_settings(settings).hub)
    deadline = Deadline(args.timeout)

    def lookup(ref: reference.Reference) -> tuple[str, str] | RegistryError:
        try:
            return tiers.tier(ref, deadline=deadline)
        except RegistryError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lookup, refs))
    entries: dict[str, tuple[str, str, str]] = {}
    failed = 0
    for ref, answer in zip(refs, answers, strict=True):
        if isinstance(answer, RegistryError):
            err.write(f"image-policy tiers export: {answer}\n")
            failed += 1
            continue
        tier, source = answer
        entries.setdefault(_catalog_entry(ref, source), (tier, source, ref.name))
    if failed:
        err.write(f"image-policy tiers export: {failed} tier(s) unknown; no catalog written\n")
        return EXIT_USAGE
    text = _catalog_yaml(entries)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{args.output}: cannot write: {exc}") from exc
        err.write(f"wrote {len(entries)} catalog entries to {args.output}\n")
    else:
        out.write(text)
    return EXIT_ALLOWED


def _cmd_lint(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    errors = loader.lint(args.paths)
    for e in errors:
        err.write(f"{e}\n")
    if errors:
        err.write(f"{len(errors)} error(s)\n")
        return EXIT_USAGE
    out.write("ok\n")
    return EXIT_ALLOWED


def _cmd_schema(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    json.dump(schema.rules_schema(), out, indent=2)
    out.write("\n")
    return EXIT_ALLOWED


def _cmd_serve(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from policy import server  # gunicorn and flask only load for this command

    options = server.ServeOptions(
        rules=tuple(args.rules),
        config=args.config,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        client_ca=args.client_ca,
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
    )
    try:
        options.check()
    except ValueError as exc:
        err.write(f"image-policy serve: {exc}\n")
        return EXIT_USAGE
    # Refuse to start on broken files: the errors are shown here, not in a worker's log.
    loader.load_rules(args.rules)
    settings_mod.load_settings(args.config)
    server.serve(options)
    return EXIT_ALLOWED


def _cmd_certs(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from datetime import UTC, datetime

    from policy import certs  # cryptography only loads for this command

    now = datetime.now(UTC)
    if args.check is not None:
        if args.service or args.namespace or args.out:
            err.write("image-policy certs: --check DIR takes no --service, --namespace or --out\n")
            return EXIT_USAGE
        status = certs.check(Path(args.check), now=now)
        out.write(f"{args.check}: {status.subject} ({', '.join(status.names) or 'no names'})\n")
        out.write(
            f"  valid until {status.not_after:%Y-%m-%d %H:%M} UTC: {status.days_left} days left\n"
        )
        for problem in status.problems:
            out.write(f"  \u2717 {problem}\n")
        return EXIT_ALLOWED if status.ok else EXIT_DENIED
    missing = [
        flag
        for flag, value in (
            ("--service", args.service),
            ("--namespace", args.namespace),
            ("--out", args.out),
        )
        if not value
    ]
    if missing:
        err.write(f"image-policy certs: give {', '.join(missing)} (or --check DIR)\n")
        return EXIT_USAGE
    bundle = certs.issue(
        args.service, args.namespace, now=now, days=args.days, extra_names=args.san
    )
    files = args.webhooks or [f for f in certs.DEFAULT_WEBHOOK_FILES if Path(f).is_file()]
    documents = []
    for name in files:  # read every webhook file before writing anything
        try:
            text = Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{name}: cannot read: {exc}") from exc
        documents.extend(
            certs.fill_ca_bundle(
                text, name, bundle.ca_pem, service=args.service, namespace=args.namespace
            )
        )
    directory = Path(args.out)
    written = [str(p) for p in certs.write(bundle, directory)]
    if documents:
        target = directory / certs.WEBHOOKS_FILE
        try:
            target.write_text(certs.render(documents), encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{target}: cannot write: {exc}") from exc
        written.append(str(target))
    else:
        err.write(
            "image-policy certs: no webhook configurations to fill (run it from a checkout or "
            "give --webhooks FILE); caBundle is ca.crt, base64-encoded\n"
        )
    out.write(f"wrote {', '.join(written)} (valid {args.days} days)\n")
    return EXIT_ALLOWED


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="image-policy",
        description="Decide whether container images may run, from rules written in YAML.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser("check", help="judge the images in manifests or given with --image")
    check.add_argument("inputs", nargs="*", metavar="FILE", help="Kubernetes YAML files, dirs, -")
    check.add_argument("--rules", action="append", required=True, metavar="PATH")
    check.add_argument("--facts", metavar="FILE", help="judge with recorded facts (offline)")
    check.add_argument("--config", metavar="FILE", help="settings file (registries, caches)")
    check.add_argument("--image", action="append", default=[], metavar="REF")
    check.add_argument("--namespace", metavar="NS", help="the namespace the images will run in")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument("--timeout", type=float, default=60.0, help="seconds for all lookups")
    check.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="disk cache of manifests, configs and tier answers (default: XDG cache dir)",
    )
    check.add_argument(
        "--no-cache", action="store_true", help="do not read or write the disk cache"
    )
    check.add_argument(
        "--jobs", type=_positive_int, default=16, metavar="N", help="images resolved at once"
    )
    check.set_defaults(func=_cmd_check)

    resolve = sub.add_parser("resolve", help="show what the registry says about an image")
    resolve.add_argument("reference", metavar="REF")
    resolve.add_argument("--platform", action="append", default=[], metavar="OS/ARCH")
    resolve.add_argument("--json", action="store_true")
    resolve.add_argument("--config", metavar="FILE", help="settings file (registries, caches)")
    resolve.add_argument("--timeout", type=float, default=None, help="seconds (default 8)")
    resolve.set_defaults(func=_cmd_resolve)

    tiers = sub.add_parser("tiers", help="Docker Hub trusted-content tiers")
    tiers_sub = tiers.add_subparsers(dest="tiers_command", required=True, metavar="COMMAND")
    export = tiers_sub.add_parser(
        "export", help="write a `tiers:` catalog from live lookups of images or manifests"
    )
    export.add_argument(
        "inputs", nargs="*", metavar="IMAGE|FILE", help="image references, manifest files, dirs, -"
    )
    export.add_argument("--image", action="append", default=[], metavar="REF")
    export.add_argument("--output", "-o", metavar="FILE", help="write here (default: stdout)")
    export.add_argument("--config", metavar="FILE", help="settings file (dockerHub.api)")
    export.add_argument("--timeout", type=float, default=60.0, help="seconds for all lookups")
    export.set_defaults(func=_cmd_tiers_export)

    lint = sub.add_parser("lint", help="report every error in rule files (exit 0 or 2)")
    lint.add_argument("paths", nargs="+", metavar="FILE|DIR")
    lint.set_defaults(func=_cmd_lint)

    schema_cmd = sub.add_parser("schema", help="print the JSON Schema of rule files")
    schema_cmd.set_defaults(func=_cmd_schema)

    serve = sub.add_parser("serve", help="run the admission webhook under gunicorn")
    serve.add_argument("--rules", action="append", required=True, metavar="PATH")
    serve.add_argument("--config", metavar="FILE", help="settings file (registries, caches)")
    serve.add_argument("--tls-cert", metavar="FILE", help="serving certificate (PEM)")
    serve.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")
    serve.add_argument("--client-ca", metavar="FILE", help="require client certs from this CA")
    serve.add_argument("--host", help="address to listen on (default 0.0.0.0 with TLS)")
    serve.add_argument("--port", type=int, help="default 8443 with TLS, 8080 without")
    serve.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    serve.add_argument("--threads", type=int, default=16, help="threads per worker (16)")
    serve.set_defaults(func=_cmd_serve)

    certs_cmd = sub.add_parser(
        "certs", help="make the webhook's CA and serving certificate, or --check them"
    )
    certs_cmd.add_argument("--service", metavar="NAME", help="the webhook's Service name")
    certs_cmd.add_argument("--namespace", metavar="NS", help="the Service's namespace")
    certs_cmd.add_argument("--out", metavar="DIR", help="write ca.crt, tls.crt, tls.key here")
    certs_cmd.add_argument(
        "--days", type=_positive_int, default=365, metavar="N", help="validity (default 365)"
    )
    certs_cmd.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="NAME|IP",
        help="another DNS name or IP address for the serving certificate",
    )
    certs_cmd.add_argument(
        "--webhooks",
        action="append",
        default=[],
        metavar="FILE",
        help="webhook configuration YAML to fill caBundle in (default: the kustomize base's)",
    )
    certs_cmd.add_argument(
        "--check", metavar="DIR", help="report validity and days left; exit 1 under 30 days"
    )
    certs_cmd.set_defaults(func=_cmd_certs)
    return parser


def main(
    argv: Sequence[str] | None = None, *, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    """Run the command line; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        err.write(f"{exc}\n")
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code: int = args.func(args, out, err)
    except RuleErrors as exc:
        for e in exc.errors:
            err.write(f"{e}\n")
        return EXIT_USAGE
    except PolicyError as exc:
        err.write(f"image-policy {args.command}: {exc}\n")
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_USAGE
    return code
