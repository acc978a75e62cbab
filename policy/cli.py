"""`image-policy` command line: check, lint, schema (and more as issues land).

Exit codes: 0 allowed (warnings allowed), 1 denied, 2 bad input, rules or usage.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, NoReturn

from policy import (
    __version__,
    diskcache,
    factsfile,
    loader,
    pin,
    reference,
    reports,
    ruletests,
    schema,
    signing,
    units,
    walk,
)
from policy import resolver as resolver_mod
from policy import settings as settings_mod
from policy import tiers as tiers_mod
from policy.deadline import Deadline
from policy.diskcache import DiskCache
from policy.errors import (
    ConfigError,
    InputError,
    InvalidReference,
    PolicyError,
    RegistryError,
    RuleErrors,
)
from policy.evaluate import ImageDecision
from policy.facts import TIERS, Needs, PlatformFacts, SignatureFacts
from policy.k8s import workloads
from policy.rules import RuleSet
from policy.scanners import FoundImage, Skipped, detect, dotenv
from policy.service import Item, Resolver, Service

EXIT_ALLOWED, EXIT_DENIED, EXIT_USAGE = 0, 1, 2


class _UsageError(Exception):
    """A command line argparse refused; the message says why."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing to sys.stderr, so `main(err=...)` gets it."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.format_usage()}{self.prog}: error: {message}")


_KINDS = ("kubernetes", "compose", "dockerfile", "images")


class _Inputs:
    """What the inputs hold: the images found, the files skipped, and how each file (and,
    for `--explain`, each Kubernetes kind) was read."""

    def __init__(self) -> None:
        self.found: list[FoundImage] = []
        self.skipped: list[Skipped] = []
        self.explained: list[str] = []


def _in_chart(path: Path) -> bool:
    """Whether `path` lies in a Helm chart's `templates/` tree (a `Chart.yaml` above it)."""
    parents = path.parents
    return any(
        parent.name == "templates" and (parent.parent / "Chart.yaml").is_file()
        for parent in list(parents)[:-1]
    )


def _env_files(names: Sequence[str]) -> dict[str, str]:
    texts = {}
    for name in names:
        texts[name] = _read_bounded(Path(name), dotenv.MAX_BYTES)
    return texts


def _read_bounded(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise InputError(f"{path}: larger than {limit // 1024} KiB; not read")
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read: {exc}") from exc


class _ComposeEnv:
    """Interpolation variables per compose project directory: the environment over the
    `--env-file` files, or over the project directory's `.env`, each read once."""

    def __init__(self, environ: Mapping[str, str], env_files: Sequence[str]) -> None:
        self.environ = environ
        self.given = dotenv.environment(_env_files(env_files), environ) if env_files else None
        self.by_dir: dict[Path, Mapping[str, str]] = {}

    def for_file(self, path: Path | None) -> Mapping[str, str]:
        if self.given is not None:
            return self.given
        directory = Path.cwd() if path is None else path.parent
        if directory not in self.by_dir:
            dot = directory / ".env"
            files = {str(dot): _read_bounded(dot, dotenv.MAX_BYTES)} if dot.is_file() else {}
            self.by_dir[directory] = (
                dotenv.environment(files, self.environ) if files else (self.environ)
            )
        return self.by_dir[directory]


def _read_inputs(
    paths: Sequence[str],
    stdin: IO[str],
    *,
    env: Mapping[str, str] | None = None,
    build_args: Mapping[str, str] | None = None,
    env_files: Sequence[str] = (),
    workload_table: workloads.Table | None = None,
) -> _Inputs:
    """Every image in the inputs, each file's kind told by `detect.triage` (standard input by
    `detect.kind_of`); files that are not inputs are skipped, those named explicitly that
    cannot be read are errors."""
    environment = os.environ if env is None else env
    compose_env = _ComposeEnv(environment, env_files)
    inputs = _Inputs()
    for source in walk.sources(paths):
        try:
            text = walk.read_text(source, stdin.read() if source.path is None else None)
        except InputError as exc:
            if source.explicit:
                raise
            inputs.skipped.append(Skipped(source.name, str(exc).removeprefix(f"{source.path}: ")))
            continue
        if source.path is None:
            kind: str = detect.kind_of(source.name, text)
        else:
            kind = detect.triage(source.name, text, chart_template=_in_chart(source.path))
        if kind not in _KINDS:
            inputs.skipped.append(Skipped(source.name, kind))
            inputs.explained.append(f"{source.name}: skipped: {kind}")
            continue
        found = detect.scan_as(
            kind,  # type: ignore[arg-type]
            source.name,
            text,
            env=compose_env.for_file(source.path) if kind == "compose" else environment,
            build_args=build_args or {},
            table=workload_table,
            explain=inputs.explained,
        )
        inputs.explained.append(f"{source.name}: {kind}, {len(found)} image(s)")
        inputs.found.extend(found)
    return inputs


def _images_from(files: Sequence[str], stdin: IO[str]) -> list[FoundImage]:
    found: list[FoundImage] = []
    for name in files:
        source = (
            walk.Source("<stdin>", None, True)
            if name == "-"
            else walk.Source(name, Path(name), True)
        )
        text = walk.read_text(source, stdin.read() if source.path is None else None)
        found.extend(detect.images_from(text, source.name))
    return found


def _build_args(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--build-arg {pair!r}: expected NAME=VALUE")
        out[key] = value
    return out


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


class _Progress:
    """A one-line progress bar on a terminal's stderr (nothing otherwise)."""

    def __init__(self, err: IO[str], total: int, *, enabled: bool) -> None:
        self._err = err
        self._total = total
        self._enabled = enabled and total > 0

    def update(self, done: int) -> None:
        if self._enabled:
            width = 30
            filled = width * done // self._total
            bar = "#" * filled + "-" * (width - filled)
            self._err.write(f"\rresolving [{bar}] {done}/{self._total} images")
            self._err.flush()

    def close(self) -> None:
        if self._enabled:
            self._err.write("\r" + " " * 60 + "\r")
            self._err.flush()


def _judge(
    ruleset: RuleSet,
    resolver: Resolver,
    found: Sequence[FoundImage],
    namespace: str | None,
    deadline: Deadline,
    *,
    chunk: int = 64,
    progress: _Progress | None = None,
) -> list[reports.Result]:
    """Judge every found image; each distinct reference is resolved once, `chunk` images at a
    time so a progress bar can move (lookups inside a chunk run in parallel)."""
    service = Service(ruleset, resolver)
    parsed: list[tuple[FoundImage, reference.Reference | None, str | None]] = []
    for item in found:
        try:
            parsed.append((item, reference.parse(item.image), None))
        except InvalidReference as exc:
            parsed.append((item, None, exc.problem))
    items = [Item(ref, namespace or item.namespace) for item, ref, _ in parsed if ref is not None]
    decided: list[ImageDecision] = []
    for start in range(0, len(items), chunk):
        decided.extend(service.decide(items[start : start + chunk], deadline=deadline))
        if progress is not None:
            progress.update(len(decided))
    if progress is not None:
        progress.close()
    decisions = iter(decided)
    return [
        reports.Result(item, next(decisions) if ref is not None else None, problem)
        for item, ref, problem in parsed
    ]


def _disk_cache(args: argparse.Namespace) -> DiskCache | None:
    if args.no_cache:
        return None
    return DiskCache(args.cache_dir or diskcache.default_dir())


def _cmd_check(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if not args.image and not args.inputs and not args.images_from:
        err.write("image-policy check: give manifest files, '-' for stdin, or --image REF\n")
        return EXIT_USAGE
    ruleset = loader.load_rules(args.rules)
    settings = settings_mod.load_settings(args.config)
    inputs = _read_inputs(
        args.inputs,
        sys.stdin,
        build_args=_build_args(args.build_arg),
        env_files=args.env_file,
        workload_table=settings.workload_table,
    )
    if args.explain:
        for line in inputs.explained:
            err.write(f"{line}\n")
    if args.strict and inputs.skipped:
        for skipped in inputs.skipped:
            err.write(f"image-policy check: {skipped.file}: {skipped.reason}\n")
        err.write(f"image-policy check: {len(inputs.skipped)} file(s) skipped (--strict)\n")
        return EXIT_USAGE
    found = _from_flags(args.image) + _images_from(args.images_from, sys.stdin) + inputs.found
    resolver: Resolver
    if args.facts is not None:
        resolver = factsfile.FactsResolver(factsfile.load_facts(args.facts))
    else:
        resolver = resolver_mod.build(
            settings,
            mode="cli",
            disk=_disk_cache(args),
            max_workers=args.jobs,
        )
    if not found:
        count = f" ({len(inputs.skipped)} file(s) skipped)" if inputs.skipped else ""
        err.write(f"image-policy check: no images found in the inputs{count}\n")
        if inputs.skipped and not args.quiet:
            for item in inputs.skipped:
                err.write(f"  skipped {item.file}: {item.reason}\n")
        return EXIT_ALLOWED
    distinct = len({f.image for f in found})
    progress = _Progress(err, len(found), enabled=err.isatty() and not args.quiet and distinct > 20)
    results = _judge(
        ruleset,
        resolver,
        found,
        args.namespace,
        Deadline(args.timeout),
        chunk=max(64, args.jobs * 4),
        progress=progress,
    )
    to_terminal = args.output is None and out.isatty()
    report = reports.render(
        args.format,
        results,
        ruleset,
        color=to_terminal and not os.environ.get("NO_COLOR"),
        quiet=args.quiet,
        tool_version=__version__,
        root=os.getcwd(),
        skipped=inputs.skipped,
    )
    _emit(report, args.output, out)
    return EXIT_ALLOWED if all(r.allowed for r in results) else EXIT_DENIED


def _emit(text: str, output: str | None, out: IO[str]) -> None:
    """Write a report to `--output FILE` (atomically) or to standard output."""
    if output is None:
        out.write(text)
        return
    path = Path(output)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise InputError(f"--output {output}: cannot write: {exc.strerror or exc}") from exc


def _cmd_test(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    ruleset = loader.load_rules(args.rules)
    try:
        report = ruletests.run_tests(
            ruleset, ruletests.read_case_files(args.cases), now=datetime.now(UTC)
        )
    except ruletests.RuleTestError as exc:
        for e in exc.errors:
            err.write(f"{e}\n")
        return EXIT_USAGE
    out.write(ruletests.format_report(report))
    return EXIT_ALLOWED if report.ok else EXIT_DENIED


def _cmd_pin(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    build_args = _build_args(args.build_arg)
    if "-" in args.files:
        err.write("image-policy pin: give files (stdin cannot be rewritten)\n")
        return EXIT_USAGE
    scanned = []
    compose_env = _ComposeEnv(os.environ, ())
    for source in walk.sources(args.files):
        assert source.path is not None  # "-" refused above
        try:
            text = walk.read_text(source)
        except InputError:
            if source.explicit:
                raise
            continue
        kind = detect.triage(source.name, text, chart_template=_in_chart(source.path))
        if kind not in _KINDS:
            if source.explicit:
                err.write(f"image-policy pin: {source.name}: skipped: {kind}\n")
            continue
        found = detect.scan_as(
            kind,  # type: ignore[arg-type]
            source.name,
            text,
            env=compose_env.for_file(source.path) if kind == "compose" else os.environ,
            build_args=build_args,
        )
        scanned.append((source.name, source.path, text, found))
    wanted = {}
    for *_, found in scanned:
        for f in found:
            if f.template is None:
                try:
                    ref = reference.parse(f.image)
                except InvalidReference:
                    continue
                if ref.digest is None:
                    wanted[f.image] = ref
    settings = settings_mod.load_settings(args.config)
    resolver = resolver_mod.build(
        settings, mode="cli", disk=_disk_cache(args), max_workers=args.jobs
    )
    texts = list(wanted)
    resolved = resolver.resolve(
        [(wanted[t], Needs(digest=True)) for t in texts], deadline=Deadline(args.timeout)
    )
    digests = {t: r.digest for t, r in zip(texts, resolved, strict=True) if r.digest}
    failed = 0
    for t, r in zip(texts, resolved, strict=True):
        if not r.digest:
            failed += 1
            reason = r.details.get("digest") or r.errors.get("digest", "no digest")
            # Registry errors start with the reference they are about: do not say it twice.
            said = reason.startswith((f"{wanted[t]}:", f"{t}:")) or f" {wanted[t]}" in reason
            err.write(f"image-policy pin: {reason if said else f'{t}: {reason}'}\n")
    changed = 0
    for name, path, text, found in scanned:
        result = pin.pin_file(name, text, found, digests)
        for skipped in result.skipped:
            if skipped.why not in ("pinned", "not-in-file", "no-digest"):
                err.write(f"image-policy pin: {skipped.found.location}: {skipped.reason}\n")
        if not result.changed:
            continue
        changed += 1
        if args.write:
            path.write_text(result.text, encoding="utf-8", newline="")
            err.write(f"pinned {len(result.edits)} image(s) in {name}\n")
        else:
            out.write(pin.unified_diff(name, text, result.text))
    if not changed and not failed:
        err.write("image-policy pin: nothing to pin\n")
    return EXIT_USAGE if failed else EXIT_ALLOWED


def _platform_json(p: PlatformFacts) -> dict[str, object]:
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
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--key {path}: cannot read: {exc}") from exc
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


def _cmd_resolve(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
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
    document = {
        "reference": str(ref),
        "written": args.reference,
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
    if args.json:
        json.dump(document, out, indent=2)
        out.write("\n")
    else:
        out.write(f"{ref}\n")
        if args.reference not in (str(ref), ref.familiar):
            out.write(f"  written:    {args.reference}\n")
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
    # Any fact the registry (or Docker Hub) could not give is a failed lookup: exit 2.
    return EXIT_USAGE if facts.errors else EXIT_ALLOWED


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
    found = _from_flags(images) + _read_inputs(files, sys.stdin).found
    if not found:
        err.write("image-policy tiers export: give images or manifest files\n")
        return EXIT_USAGE
    refs: dict[reference.Reference, None] = {}
    for item in found:
        try:
            refs[reference.parse(item.image)] = None
        except InvalidReference as exc:
            err.write(f"{item.location if item.line else item.file}: {exc}\n")
            return EXIT_USAGE
    settings = settings_mod.load_settings(args.config)
    # Live lookups only: the settings' own catalog is not consulted.
    tiers = tiers_mod.Tiers((), tiers_mod.from_settings(settings, mode="cli").hub)
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
    text = _catalog_yaml(entries)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{args.output}: cannot write: {exc}") from exc
        err.write(f"wrote {len(entries)} catalog entries to {args.output}\n")
    else:
        out.write(text)
    if failed:
        # The known tiers are written all the same; the exit code says the catalog is partial.
        err.write(
            f"image-policy tiers export: {failed} tier(s) unknown, left out of the catalog; "
            "run again when Docker Hub answers\n"
        )
        return EXIT_USAGE
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
    explicit = bool(args.webhooks)
    files = args.webhooks or [f for f in certs.DEFAULT_WEBHOOK_FILES if Path(f).is_file()]
    documents = []
    for name in files:  # read every webhook file before writing anything
        try:
            text = Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{name}: cannot read: {exc}") from exc
        try:
            documents.extend(
                certs.fill_ca_bundle(
                    text, name, bundle.ca_pem, service=args.service, namespace=args.namespace
                )
            )
        except InputError as exc:
            if explicit:
                raise
            err.write(f"image-policy certs: not filled: {exc}\n")
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


_MAX_SECONDS = 24 * 3600.0


def _seconds(text: str) -> float:
    """A positive, finite number of seconds, at most a day (`--timeout`)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value <= _MAX_SECONDS):  # also refuses nan and inf
        raise argparse.ArgumentTypeError(
            f"expected a number of seconds above 0 and at most {_MAX_SECONDS:.0f}, got {text!r}"
        )
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer (at most 1000000), got {text!r}"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="image-policy",
        description="Decide whether container images may run, from rules written in YAML.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = sub.add_parser(
        "check",
        help="judge the images in manifests, compose files, Dockerfiles or given with --image",
        description=(
            "Judge every image in Kubernetes manifests (any kind with a pod template, and the "
            "kinds of the workloads table), compose files (with their .env) and Dockerfiles, "
            "or given with --image. Directories are walked: VCS, node_modules and vendored "
            "trees and git-ignored files are left out; YAML/JSON files that are not manifests "
            "and Helm templates are skipped and listed (--strict makes them errors)."
        ),
    )
    check.add_argument(
        "inputs",
        nargs="*",
        metavar="FILE",
        help="Kubernetes YAML or JSON, compose files, Dockerfiles, directories (walked), -",
    )
    check.add_argument("--rules", action="append", required=True, metavar="PATH")
    check.add_argument("--facts", metavar="FILE", help="judge with recorded facts (offline)")
    check.add_argument("--config", metavar="FILE", help="settings file (registries, caches)")
    check.add_argument("--image", action="append", default=[], metavar="REF")
    check.add_argument(
        "--images-from", action="append", default=[], metavar="FILE", help="one reference a line"
    )
    check.add_argument(
        "--build-arg", action="append", default=[], metavar="NAME=VALUE", help="for Dockerfiles"
    )
    check.add_argument(
        "--env-file",
        action="append",
        default=[],
        metavar="FILE",
        help="compose variables, instead of the .env beside each compose file",
    )
    check.add_argument(
        "--strict",
        action="store_true",
        help="skipped files (not manifests, Helm templates) are errors (exit 2)",
    )
    check.add_argument(
        "--explain",
        action="store_true",
        help="say how each file and Kubernetes kind was read (to stderr)",
    )
    check.add_argument("--namespace", metavar="NS", help="the namespace the images will run in")
    check.add_argument("--format", choices=reports.FORMATS, default="text")
    check.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE")
    check.add_argument(
        "--quiet", "-q", action="store_true", help="no progress; text lists only findings"
    )
    check.add_argument("--timeout", type=_seconds, default=60.0, help="seconds for all lookups")
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
    resolve.add_argument("--timeout", type=_seconds, default=None, help="seconds (default 8)")
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
    export.add_argument("--timeout", type=_seconds, default=60.0, help="seconds for all lookups")
    export.set_defaults(func=_cmd_tiers_export)

    test = sub.add_parser("test", help="run rule tests: facts and expected verdicts in YAML")
    test.add_argument("rules", metavar="RULES", help="rule file or directory")
    test.add_argument("cases", nargs="+", metavar="CASES", help="rule test files or directories")
    test.set_defaults(func=_cmd_test)

    pin_cmd = sub.add_parser(
        "pin", help="show the diff pinning tag references to tag@digest (--write applies it)"
    )
    pin_cmd.add_argument("files", nargs="+", metavar="FILE|DIR")
    pin_cmd.add_argument("--write", action="store_true", help="rewrite the files (default: diff)")
    pin_cmd.add_argument("--config", metavar="FILE", help="settings file (registries, caches)")
    pin_cmd.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE")
    pin_cmd.add_argument("--cache-dir", metavar="DIR")
    pin_cmd.add_argument("--no-cache", action="store_true")
    pin_cmd.add_argument("--jobs", type=_positive_int, default=16, metavar="N")
    pin_cmd.add_argument("--timeout", type=_seconds, default=60.0)
    pin_cmd.set_defaults(func=_cmd_pin)

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
    serve.add_argument("--port", type=_port, help="default 8443 with TLS, 8080 without")
    serve.add_argument("--workers", type=_positive_int, default=1, help="processes (default 1)")
    serve.add_argument("--threads", type=_positive_int, default=16, help="threads per worker (16)")
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
            # A located error starts with file:line:col (editors jump to it); others say who.
            located = isinstance(e, ConfigError) and e.location is not None
            err.write(f"{e}\n" if located else f"image-policy {args.command}: {e}\n")
        return EXIT_USAGE
    except PolicyError as exc:
        err.write(f"image-policy {args.command}: {exc}\n")
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_USAGE
    return code
