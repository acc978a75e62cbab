"""`image-policy` command line: check, lint, schema (and more as issues land).

Exit codes: 0 allowed (warnings allowed), 1 denied, 2 bad input, rules or usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from policy import factsfile, loader, reference, schema
from policy.deadline import Deadline
from policy.errors import InputError, InvalidReference, PolicyError, RuleErrors
from policy.evaluate import ImageDecision
from policy.rules import RuleSet
from policy.scanners import FoundImage
from policy.scanners import kubernetes as k8s_scanner
from policy.service import Item, Resolver, Service

EXIT_ALLOWED, EXIT_DENIED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that exits with 2 and a one-line message (its default is 2 as well)."""


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


def _cmd_check(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if not args.image and not args.inputs:
        err.write("image-policy check: give manifest files, '-' for stdin, or --image REF\n")
        return EXIT_USAGE
    ruleset = loader.load_rules(args.rules)
    if args.facts is None:
        err.write(
            "image-policy check: --facts FILE is required (live registry resolution is "
            "not available in this build)\n"
        )
        return EXIT_USAGE
    resolver: Resolver = factsfile.FactsResolver(factsfile.load_facts(args.facts))
    found = _from_flags(args.image) + _read_inputs(args.inputs, sys.stdin)
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
    check.add_argument("--image", action="append", default=[], metavar="REF")
    check.add_argument("--namespace", metavar="NS", help="the namespace the images will run in")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument("--timeout", type=float, default=60.0, help="seconds for all lookups")
    check.set_defaults(func=_cmd_check)

    lint = sub.add_parser("lint", help="report every error in rule files (exit 0 or 2)")
    lint.add_argument("paths", nargs="+", metavar="FILE|DIR")
    lint.set_defaults(func=_cmd_lint)

    schema_cmd = sub.add_parser("schema", help="print the JSON Schema of rule files")
    schema_cmd.set_defaults(func=_cmd_schema)
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
    except SystemExit as exc:
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
