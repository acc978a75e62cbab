"""The commands about rule files themselves: `test` (rule tests: facts and expected verdicts),
`lint` (every error in rule files) and `schema` (their JSON Schema)."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import IO

from policy import loader, ruletests, schema
from policy.cli import options
from policy.cli.exits import EXIT_ALLOWED, EXIT_DENIED, EXIT_USAGE


def register_test(sub: options.Subcommands) -> None:
    """Add `test` to the command parser."""
    test = sub.add_parser("test", help="run rule tests: facts and expected verdicts in YAML")
    test.add_argument("rules", metavar="RULES", help="rule file or directory")
    test.add_argument("cases", nargs="+", metavar="CASES", help="rule test files or directories")
    test.set_defaults(func=run_test)


def register_lint(sub: options.Subcommands) -> None:
    """Add `lint` to the command parser."""
    lint = sub.add_parser("lint", help="report every error in rule files (exit 0 or 2)")
    lint.add_argument("paths", nargs="+", metavar="FILE|DIR")
    lint.set_defaults(func=run_lint)


def register_schema(sub: options.Subcommands) -> None:
    """Add `schema` to the command parser."""
    schema_cmd = sub.add_parser("schema", help="print the JSON Schema of rule files")
    schema_cmd.set_defaults(func=run_schema)


def run_test(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Run the rule tests; exit 1 when one fails, 2 when a test file is not valid."""
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


def run_lint(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Report every error in the rule files; exit 2 when there is one."""
    errors = loader.lint(args.paths)
    for e in errors:
        err.write(f"{e}\n")
    if errors:
        err.write(f"{len(errors)} error(s)\n")
        return EXIT_USAGE
    out.write("ok\n")
    return EXIT_ALLOWED


def run_schema(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Print the JSON Schema of rule files."""
    json.dump(schema.rules_schema(), out, indent=2)
    out.write("\n")
    return EXIT_ALLOWED
