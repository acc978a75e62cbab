"""`image-policy pin`: pin tag references to `tag@digest` in manifests, compose files and
Dockerfiles; shows the diff, or rewrites the files with `--write`."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from policy import pin, reference, walk
from policy import resolver as resolver_mod
from policy import settings as settings_mod
from policy.cli import options
from policy.cli.exits import EXIT_ALLOWED, EXIT_USAGE
from policy.cli.inputs import KINDS, ComposeEnv, in_chart, parse_build_args
from policy.deadline import Deadline
from policy.errors import InputError, InvalidReference
from policy.facts import Needs
from policy.scanners import FoundImage, detect

# A file read for pinning: its name as given, its path, its text and the images found in it.
_Scanned = tuple[str, Path, str, list[FoundImage]]


def register(sub: options.Subcommands) -> None:
    """Add `pin` and its options to the command parser."""
    pin_cmd = sub.add_parser(
        "pin", help="show the diff pinning tag references to tag@digest (--write applies it)"
    )
    pin_cmd.add_argument("files", nargs="+", metavar="FILE|DIR")
    pin_cmd.add_argument("--write", action="store_true", help="rewrite the files (default: diff)")
    pin_cmd.add_argument("--config", metavar="FILE", help="settings file (registries, caches)")
    pin_cmd.add_argument("--build-arg", action="append", default=[], metavar="NAME=VALUE")
    pin_cmd.add_argument("--cache-dir", metavar="DIR")
    pin_cmd.add_argument("--no-cache", action="store_true")
    pin_cmd.add_argument("--jobs", type=options.positive_int, default=16, metavar="N")
    pin_cmd.add_argument("--timeout", type=options.seconds, default=60.0)
    pin_cmd.set_defaults(func=run)


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Pin every tag reference the files hold; exit 2 when a digest could not be looked up."""
    build_args = parse_build_args(args.build_arg)
    if "-" in args.files:
        err.write("image-policy pin: give files (stdin cannot be rewritten)\n")
        return EXIT_USAGE
    scanned = _scan(args.files, build_args, err)
    digests, failed = _digests(args, _unpinned(scanned), err)
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


def _scan(files: Sequence[str], build_args: dict[str, str], err: IO[str]) -> list[_Scanned]:
    """Each file (directories walked) with the images found in it; a file named explicitly that
    is not an input is said to be skipped, one that cannot be read is an error."""
    scanned = []
    compose_env = ComposeEnv(os.environ, ())
    for source in walk.sources(files):
        assert source.path is not None  # "-" refused above
        try:
            text = walk.read_text(source)
        except InputError:
            if source.explicit:
                raise
            continue
        kind = detect.triage(source.name, text, chart_template=in_chart(source.path))
        if kind not in KINDS:
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
    return scanned


def _unpinned(scanned: Sequence[_Scanned]) -> dict[str, reference.Reference]:
    """The images written without a digest (nor a template), by the text written."""
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
    return wanted


def _digests(
    args: argparse.Namespace, wanted: dict[str, reference.Reference], err: IO[str]
) -> tuple[dict[str, str], int]:
    """The digest of each image `wanted` (by the text written), and how many lookups failed
    (each said on `err`)."""
    settings = settings_mod.load_settings(args.config)
    resolver = resolver_mod.build(
        settings, mode="cli", disk=options.disk_cache(args), max_workers=args.jobs
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
    return digests, failed
