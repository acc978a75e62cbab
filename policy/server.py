"""Run the webhook under gunicorn: `image-policy serve`, and the settings `deploy/gunicorn.conf.py`
ships for `gunicorn -c deploy/gunicorn.conf.py 'policy.web:create_app()'`.

- threaded workers (`gthread`): reviews wait on registries, so threads, not processes, scale;
- the worker heartbeat file in `/dev/shm` when it exists, so a read-only root filesystem works;
- graceful shutdown: on SIGTERM gunicorn stops accepting and lets in-flight reviews finish
  (`graceful_timeout` covers the 8 s decision deadline);
- keep-alive longer than the API server's 90 s idle timeout, so the server never closes a
  connection the client is about to reuse (a POST on such a connection is not retried);
- TLS whose certificate and key are re-read when the files change (cert-manager rotation),
  through gunicorn's `ssl_context` hook: every new connection gets a context built from the
  current files; a half-written pair (certificate and key not matching yet) keeps the previous
  context, so no connection fails during a rotation. An optional client CA requires client
  certificates (mutual TLS).
Without TLS files the server listens on 127.0.0.1 only, for local trials; the `on_starting` and
`when_ready` hooks hold that for the final gunicorn configuration, whatever set it (a
`--bind` flag, `GUNICORN_CMD_ARGS`, sockets handed over by systemd).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gunicorn.app.base import Application
from gunicorn.util import parse_address

from policy import settings as settings_mod
from policy import web

PLAIN_HOST = "127.0.0.1"
TLS_HOST = "0.0.0.0"
TLS_PORT = 8443
PLAIN_PORT = 8080
DEFAULT_WORKERS = 1
DEFAULT_THREADS = 16
SHM = "/dev/shm"

ENV_PREFIX = "IMAGE_POLICY_"

log = logging.getLogger("policy.server")


@dataclass(frozen=True)
class ServeOptions:
    """What `image-policy serve` (or the environment, for the gunicorn config file) asks for."""

    rules: tuple[str, ...] = ()
    config: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca: str | None = None
    host: str | None = None
    port: int | None = None
    workers: int = DEFAULT_WORKERS
    threads: int = DEFAULT_THREADS

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def bind(self) -> str:
        host = self.host or (TLS_HOST if self.tls else PLAIN_HOST)
        port = self.port if self.port is not None else (TLS_PORT if self.tls else PLAIN_PORT)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def check(self) -> None:
        """ValueError when the options cannot work together."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both --tls-cert and --tls-key, or neither")
        if self.client_ca is not None and not self.tls:
            raise ValueError("--client-ca needs --tls-cert and --tls-key")
        if not self.tls and self.host not in (None, PLAIN_HOST, "localhost", "::1"):
            raise ValueError("without TLS the webhook listens on loopback only")
        for path in (self.tls_cert, self.tls_key, self.client_ca):
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{path}: no such file")
        if self.workers < 1 or self.threads < 1:
            raise ValueError("--workers and --threads must be at least 1")


def options_from_env(env: Mapping[str, str] | None = None) -> ServeOptions:
    """Options from `IMAGE_POLICY_TLS_CERT`, `_TLS_KEY`, `_CLIENT_CA`, `_HOST`, `_PORT`,
    `_WORKERS`, `_THREADS` (rules and settings come from `IMAGE_POLICY_RULES`/`_CONFIG`)."""
    env = os.environ if env is None else env

    def get(name: str) -> str | None:
        return env.get(ENV_PREFIX + name) or None

    def number(name: str, default: int | None) -> int | None:
        text = get(name)
        if text is None:
            return default
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"${ENV_PREFIX}{name} must be a number, got {text!r}") from None

    rules = tuple(p for p in (get("RULES") or "").split(os.pathsep) if p)
    return ServeOptions(
        rules=rules,
        config=get("CONFIG"),
        tls_cert=get("TLS_CERT"),
        tls_key=get("TLS_KEY"),
        client_ca=get("CLIENT_CA"),
        host=get("HOST"),
        port=number("PORT", None),
        workers=number("WORKERS", DEFAULT_WORKERS) or DEFAULT_WORKERS,
        threads=number("THREADS", DEFAULT_THREADS) or DEFAULT_THREADS,
    )


def is_loopback(address: object) -> bool:
    """Whether a listening address (gunicorn's parsed bind, or a socket's name) is reachable
    only from this host: a unix socket, or a loopback host (`localhost`, 127.0.0.0/8, ::1).
    Anything else (all interfaces, another name, an inherited descriptor) is not."""
    if isinstance(address, str | bytes):
        return True  # a unix socket path
    if not isinstance(address, tuple) or not address or not isinstance(address[0], str):
        return False
    host = address[0].split("%", 1)[0]
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _bind_address(bind: str) -> object:
    try:
        return parse_address(bind)
    except (RuntimeError, ValueError):
        return None


def refuse_plain_http_beyond_loopback(server: Any) -> None:
    """gunicorn's `on_starting` and `when_ready` hook: without TLS, refuse (RuntimeError, which
    gunicorn prints before exiting 1) any bind or listening socket that is not loopback.

    `on_starting` runs before gunicorn binds, so a refused address is never listened on;
    `when_ready` runs after binding and before any worker exists, and checks the sockets
    actually bound (systemd's, an inherited descriptor's) by their names."""
    cfg = server.cfg
    if cfg.certfile:
        return
    found = [(bind, _bind_address(bind)) for bind in cfg.bind]
    found += [(str(lnr), lnr.sock.getsockname()) for lnr in getattr(server, "LISTENERS", [])]
    for shown, address in found:
        if not is_loopback(address):
            raise RuntimeError(
                f"image-policy: refusing to serve plain HTTP on {shown}: without TLS the webhook "
                "listens on loopback only (127.0.0.1, ::1, localhost or a unix socket). Give it "
                "a certificate (IMAGE_POLICY_TLS_CERT and IMAGE_POLICY_TLS_KEY, or --tls-cert "
                "and --tls-key) to listen on other addresses."
            )


def worker_tmp_dir() -> str | None:
    """`/dev/shm` when it is a writable directory (a tmpfs: the heartbeat never blocks on disk)."""
    return SHM if os.path.isdir(SHM) and os.access(SHM, os.W_OK) else None


FileState = tuple[tuple[int, int, int] | None, ...]


def _state(paths: Sequence[str | None]) -> FileState:
    out: list[tuple[int, int, int] | None] = []
    for path in paths:
        if path is None:
            out.append(None)
            continue
        try:
            st = os.stat(path)
        except OSError:
            out.append((-1, -1, -1))
            continue
        out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


class CertificateReloader:
    """gunicorn's `ssl_context` hook, giving every connection a context built from the current
    certificate, key and client CA files.

    The files are stat'ed per connection (cheap); when they changed, a new context is built by
    gunicorn's own factory (so ciphers, ALPN and `cert_reqs` settings still apply). If that
    fails (cert-manager wrote the certificate but not yet the key) the previous context is kept
    and the build is retried on the next connection.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._state: FileState = ()
        self.reloads = 0
        self.failures = 0

    def __call__(self, conf: Any, factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        state = _state([conf.certfile, conf.keyfile, conf.ca_certs])
        with self._lock:
            if self._context is not None and state == self._state:
                return self._context
            try:
                context = factory()
            except (OSError, ssl.SSLError) as exc:
                self.failures += 1
                if self._context is None:
                    raise
                log.warning("TLS files changed but do not load yet (%s); keeping the old ones", exc)
                return self._context
            if self._context is not None:
                self.reloads += 1
                log.info("TLS certificate reloaded from %s", conf.certfile)
            self._context, self._state = context, state
            return context


def gunicorn_settings(options: ServeOptions) -> dict[str, object]:
    """The gunicorn settings for these options (the one place they are decided)."""
    out: dict[str, object] = {
        "bind": [options.bind],
        "workers": options.workers,
        "worker_class": "gthread",
        "threads": options.threads,
        "timeout": 30,
        "graceful_timeout": 20,
        "keepalive": 120,
        "worker_connections": 1000,
        "max_requests": 0,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "image-policy",
        "forwarded_allow_ips": "",
        "limit_request_line": 8190,
        "limit_request_fields": 100,
        # gunicorn >= 25.1 opens a control socket under $HOME: not on a read-only filesystem.
        "control_socket_disable": True,
        # Plain HTTP on loopback only, however the bind was given (see the module docstring).
        "on_starting": refuse_plain_http_beyond_loopback,
        "when_ready": refuse_plain_http_beyond_loopback,
    }
    tmp = worker_tmp_dir()
    if tmp is not None:
        out["worker_tmp_dir"] = tmp
    if options.tls:
        out["certfile"] = options.tls_cert
        out["keyfile"] = options.tls_key
        out["ssl_context"] = CertificateReloader()
        if options.client_ca is not None:
            out["ca_certs"] = options.client_ca
            out["cert_reqs"] = ssl.CERT_REQUIRED
    return out


class WebhookApplication(Application):  # type: ignore[misc]
    """gunicorn running `policy.web.create_app` with the given rules and settings files."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        super().__init__(usage=None, prog="image-policy serve")

    def init(self, parser: object, opts: object, args: object) -> None:
        return None

    def load_config(self) -> None:
        for key, value in gunicorn_settings(self.options).items():
            if key in self.cfg.settings:  # settings this gunicorn version does not know are moot
                self.cfg.set(key, value)

    def load(self) -> Callable[..., object]:
        settings = settings_mod.load_settings(self.options.config)
        app: Callable[..., object] = web.create_app(settings, rules=list(self.options.rules))
        return app


def serve(options: ServeOptions) -> None:
    """Run gunicorn in the foreground until it is stopped (SIGTERM: graceful)."""
    options.check()
    WebhookApplication(options).run()
