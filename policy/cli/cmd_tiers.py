"""`image-policy tiers export`: a `tiers:` catalog for the settings file, from live Docker Hub
lookups of the images given or found in manifests."""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from policy import reference
from policy import settings as settings_mod
from policy import tiers as tiers_mod
from policy.cli import options
from policy.cli.exits import EXIT_ALLOWED, EXIT_USAGE
from policy.cli.inputs import from_flags, read_inputs
from policy.deadline import Deadline
from policy.errors import InputError, InvalidReference, RegistryError
from policy.facts import TIERS


def register(sub: options.Subcommands) -> None:
    """Add `tiers` and its one command, `tiers export`, to the command parser."""
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
    export.add_argument(
        "--timeout", type=options.seconds, default=60.0, help="seconds for all lookups"
    )
    export.set_defaults(func=run_export)


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


def run_export(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Write the catalog of the tiers found; exit 2 when a tier could not be looked up."""
    images = list(args.image)
    files: list[str] = []
    for item in args.inputs:
        (files if item == "-" or Path(item).exists() else images).append(item)
    found = from_flags(images) + read_inputs(files, sys.stdin).found
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
