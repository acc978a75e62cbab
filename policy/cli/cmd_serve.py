"""`image-policy serve`: run the admission webhook under gunicorn (which, with flask, only
loads for this command)."""

from __future__ import annotations

import argparse
from typing import IO

from policy import loader
from policy import settings as settings_mod
from policy.cli import options
from policy.cli.exits import EXIT_ALLOWED, EXIT_USAGE


def register(sub: options.Subcommands) -> None:
    """Add `serve` and its options to the command parser."""
    serve = sub.add_parser("serve", help="run the admission webhook under gunicorn")
    serve.add_argument("--rules", action="append", required=True, metavar="PATH")
    serve.add_argument("--config", metavar="FILE", help="settings file (registries, caches)")
    serve.add_argument("--tls-cert", metavar="FILE", help="serving certificate (PEM)")
    serve.add_argument("--tls-key", metavar="FILE", help="its private key (PEM)")
    serve.add_argument("--client-ca", metavar="FILE", help="require client certs from this CA")
    serve.add_argument("--host", help="address to listen on (default 0.0.0.0 with TLS)")
    serve.add_argument("--port", type=options.port, help="default 8443 with TLS, 8080 without")
    serve.add_argument(
        "--workers", type=options.positive_int, default=1, help="processes (default 1)"
    )
    serve.add_argument(
        "--threads", type=options.positive_int, default=16, help="threads per worker (16)"
    )
    serve.set_defaults(func=run)


def run(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    """Serve the webhook until stopped; exit 2 on bad options, rules or settings."""
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
