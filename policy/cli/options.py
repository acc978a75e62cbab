"""What the commands' options share: argparse types for seconds, ports and counts, the disk
cache `--cache-dir` / `--no-cache` choose, and the type each command module registers with."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any, TypeAlias

from policy import diskcache
from policy.diskcache import DiskCache

if TYPE_CHECKING:
    # What `add_subparsers` returns, to which each command module adds its command.
    Subcommands: TypeAlias = argparse._SubParsersAction[Any]

_MAX_SECONDS = 24 * 3600.0


def seconds(text: str) -> float:
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


def port(text: str) -> int:
    """A TCP port, 1 to 65535 (`--port`)."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number from 1 to 1,000,000 (`--jobs`, `--days`, `--workers`, `--threads`)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1_000_000:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer (at most 1000000), got {text!r}"
        )
    return value


def disk_cache(args: argparse.Namespace) -> DiskCache | None:
    """The disk cache in `--cache-dir` (default: the XDG cache dir); none with `--no-cache`."""
    if args.no_cache:
        return None
    return DiskCache(args.cache_dir or diskcache.default_dir())
