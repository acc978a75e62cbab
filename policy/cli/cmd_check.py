"""`image-policy check`: judge every image in manifests, compose files, Dockerfiles and
`--image` references, and write a report (text, json, sarif, junit or github)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from policy import __version__, factsfile, loader, reference, reports
from policy import resolver as resolver_mod
from policy import settings as settings_mod
from policy.cli import inputs as inputs_mod
from policy.cli import options
from policy.cli.exits import EXIT_ALLOWED, EXIT_DENIED, EXIT_USAGE
from policy.deadline import Deadline
from policy.errors import InputError, InvalidReference
from policy.evaluate import ImageDecision
from policy.rules import RuleSet
from policy.scanners import FoundImage, Skipped
from policy.service import Item, Resolver, Service


def register(sub: options.Subcommands) -> None:
    """Add `check` and its options to the command parser."""
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
    _lookup_and_report_options(check)
    check.set_defaults(func=run)


def _lookup_and_report_options(parser: argparse.ArgumentParser) -> None:
    """`check`'s options after those saying what to read: namespace, report, lookups."""
    parser.add_argument("--namespace", metavar="NS", help="the namespace the images will run in")
    parser.add_argument("--format", choices=reports.FORMATS, default="text")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE")
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="no progress; text lists only findings"
    )
    parser.add_argument(
        "--timeout", type=options.seconds, default=60.0, help="seconds for all lookups"
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="disk cache of manifests, configs and tier answers (default: XDG cache dir)",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="do not read or write the disk cache"
    )
    parser.add_argument(
        "--jobs", type=options.positive_int, default=16, metavar="N", help="images resolved at once"
    )


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


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Judge the images the inputs name; exit 0 when every one is allowed, 1 when one is not."""
    if not args.image and not args.inputs and not args.images_from:
        err.write("image-policy check: give manifest files, '-' for stdin, or --image REF\n")
        return EXIT_USAGE
    ruleset = loader.load_rules(args.rules)
    settings = settings_mod.load_settings(args.config)
    inputs = inputs_mod.read_inputs(
        args.inputs,
        sys.stdin,
        build_args=inputs_mod.parse_build_args(args.build_arg),
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
    found = (
        inputs_mod.from_flags(args.image)
        + inputs_mod.images_from(args.images_from, sys.stdin)
        + inputs.found
    )
    resolver = _resolver(args, settings)
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
    _emit(_report(args, out, results, ruleset, inputs.skipped), args.output, out)
    return EXIT_ALLOWED if all(r.allowed for r in results) else EXIT_DENIED


def _resolver(args: argparse.Namespace, settings: settings_mod.Settings) -> Resolver:
    """The recorded facts of `--facts FILE`, else the registries the settings describe."""
    if args.facts is not None:
        return factsfile.FactsResolver(factsfile.load_facts(args.facts))
    return resolver_mod.build(
        settings,
        mode="cli",
        disk=options.disk_cache(args),
        max_workers=args.jobs,
    )


def _report(
    args: argparse.Namespace,
    out: IO[str],
    results: Sequence[reports.Result],
    ruleset: RuleSet,
    skipped: Sequence[Skipped],
) -> str:
    """The report in `--format`, coloured only for a terminal (and not under NO_COLOR)."""
    to_terminal = args.output is None and out.isatty()
    return reports.render(
        args.format,
        results,
        ruleset,
        color=to_terminal and not os.environ.get("NO_COLOR"),
        quiet=args.quiet,
        tool_version=__version__,
        root=os.getcwd(),
        skipped=skipped,
    )


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
