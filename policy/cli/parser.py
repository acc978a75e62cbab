"""The `image-policy` argument parser: one subcommand per `cmd_*` module, each adding its own
options, in the order `--help` lists them."""

from __future__ import annotations

import argparse
from typing import NoReturn

from policy.cli import (
    cmd_certs,
    cmd_check,
    cmd_pin,
    cmd_resolve,
    cmd_rules,
    cmd_serve,
    cmd_tiers,
)


class UsageError(Exception):
    """A command line argparse refused; the message says why."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing to sys.stderr, so `main(err=...)` gets it."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.format_usage()}{self.prog}: error: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each sets `func(args, out, err)` returning the exit code."""
    parser = _Parser(
        prog="image-policy",
        description="Decide whether container images may run, from rules written in YAML.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cmd_check.register(sub)
    cmd_resolve.register(sub)
    cmd_tiers.register(sub)
    cmd_rules.register_test(sub)
    cmd_pin.register(sub)
    cmd_rules.register_lint(sub)
    cmd_rules.register_schema(sub)
    cmd_serve.register(sub)
    cmd_certs.register(sub)
    return parser
