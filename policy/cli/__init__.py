"""`image-policy` command line: check, resolve, tiers export, test, pin, lint, schema, serve,
certs.

Exit codes: 0 allowed (warnings allowed), 1 denied, 2 bad input, rules or usage.

The package, one room a concern:
- `parser` builds the argument parser from each command module's `register`;
- `cmd_check`, `cmd_resolve`, `cmd_tiers`, `cmd_pin`, `cmd_rules` (test, lint, schema),
  `cmd_serve`, `cmd_certs`: one command (group) each, its options and its `run`;
- `inputs` reads what `check`, `pin` and `tiers export` are given (files, directories, stdin,
  `--image`, `--build-arg`, compose `.env`); `options` holds the shared option types and the
  disk cache; `exits` the exit codes.
`main` (here) runs a command and turns a `PolicyError` into a message and exit 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import IO

from policy.cli.exits import EXIT_ALLOWED, EXIT_DENIED, EXIT_USAGE
from policy.cli.inputs import KINDS as _KINDS  # the old names, which bench/walk.py reads
from policy.cli.inputs import in_chart as _in_chart
from policy.cli.parser import UsageError, build_parser
from policy.errors import ConfigError, PolicyError, RuleErrors

__all__ = [
    "EXIT_ALLOWED",
    "EXIT_DENIED",
    "EXIT_USAGE",
    "_KINDS",
    "_in_chart",
    "build_parser",
    "main",
]


def main(
    argv: Sequence[str] | None = None, *, out: IO[str] | None = None, err: IO[str] | None = None
) -> int:
    """Run the command line; returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
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
