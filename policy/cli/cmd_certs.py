"""`image-policy certs`: make the webhook's CA and serving certificate (filling `caBundle` in
its webhook configurations), or `--check` a directory of them. cryptography only loads for this
command."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from policy.cli import options
from policy.cli.exits import EXIT_ALLOWED, EXIT_DENIED, EXIT_USAGE
from policy.cli.inputs import read_file
from policy.errors import InputError


def register(sub: options.Subcommands) -> None:
    """Add `certs` and its options to the command parser."""
    certs_cmd = sub.add_parser(
        "certs", help="make the webhook's CA and serving certificate, or --check them"
    )
    certs_cmd.add_argument("--service", metavar="NAME", help="the webhook's Service name")
    certs_cmd.add_argument("--namespace", metavar="NS", help="the Service's namespace")
    certs_cmd.add_argument("--out", metavar="DIR", help="write ca.crt, tls.crt, tls.key here")
    certs_cmd.add_argument(
        "--days", type=options.positive_int, default=365, metavar="N", help="validity (default 365)"
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
    certs_cmd.set_defaults(func=run)


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Issue the certificates (or check them: exit 1 when they need renewing)."""
    from policy import certs  # cryptography only loads for this command

    now = datetime.now(UTC)
    if args.check is not None:
        if args.service or args.namespace or args.out:
            err.write("image-policy certs: --check DIR takes no --service, --namespace or --out\n")
            return EXIT_USAGE
        return _check(args.check, now, out)
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
    documents = _filled_webhooks(args, bundle.ca_pem, err)
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


def _check(directory: str, now: datetime, out: IO[str]) -> int:
    """Say what the certificates in `directory` are and when they expire; 1 if not ok."""
    from policy import certs

    status = certs.check(Path(directory), now=now)
    out.write(f"{directory}: {status.subject} ({', '.join(status.names) or 'no names'})\n")
    out.write(
        f"  valid until {status.not_after:%Y-%m-%d %H:%M} UTC: {status.days_left} days left\n"
    )
    for problem in status.problems:
        out.write(f"  \u2717 {problem}\n")
    return EXIT_ALLOWED if status.ok else EXIT_DENIED


def _filled_webhooks(args: argparse.Namespace, ca_pem: bytes, err: IO[str]) -> list[dict[str, Any]]:
    """The webhook configurations of `--webhooks` (default: the kustomize base's that exist)
    with `caBundle` filled; all are read before anything is written. A default file that
    cannot be filled is said and left out; one named with `--webhooks` is an error."""
    from policy import certs

    explicit = bool(args.webhooks)
    files = args.webhooks or [f for f in certs.DEFAULT_WEBHOOK_FILES if Path(f).is_file()]
    documents: list[dict[str, Any]] = []
    for name in files:
        text = read_file(name)  # unreadable is an error, even for a default file
        try:
            documents.extend(
                certs.fill_ca_bundle(
                    text, name, ca_pem, service=args.service, namespace=args.namespace
                )
            )
        except InputError as exc:
            if explicit:
                raise
            err.write(f"image-policy certs: not filled: {exc}\n")
    return documents
