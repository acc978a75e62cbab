"""A loopback Docker registry token server for tests.

Issues ES256 JWTs the way distribution 2.8's token access controller verifies them: the header
carries `kid`, the libtrust key ID of the signing key (SHA-256 of the DER public key, truncated
to 240 bits, base32 without padding, grouped by four with ':'), and the registry finds that key
among the certificates of its `rootcertbundle` (a self-signed certificate written here).
Claims: `iss`, `sub`, `aud` (= service), `exp`, `nbf`, `iat`, `jti` and `access`.

Speaks both forms of the token spec: `GET realm?service=&scope=` (Basic auth optional) and the
OAuth2 `POST` (`grant_type=refresh_token` or `password`). Every request is recorded, so tests
can count token fetches. `auth_config()` gives the registry's `auth:` section.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from tests.support.httpserver import LoopbackServer
from tests.support.tlsca import self_signed

Reply = tuple[int, dict[str, str], bytes]


@dataclass(frozen=True)
class RecordedRequest:
    """One request the token server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    authorization: str | None = field(default=None, repr=False)

    @property
    def scopes(self) -> list[str]:
        """The scopes asked for, from the query (GET) or the space-separated form field (POST)."""
        if self.method == "POST":
            return " ".join(self.form.get("scope", [])).split()
        return self.query.get("scope", [])


def b64url(data: bytes) -> str:
    """Base64url without padding (JOSE)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The libtrust key ID distribution uses to look up a `kid`."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashlib.sha256(der).digest()[:30]
    text = base64.b32encode(digest).decode("ascii").rstrip("=")
    return ":".join(text[i : i + 4] for i in range(0, len(text), 4))


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """`type:name:actions` → (type, name, actions); None when it is not of that shape."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    return kind, name, [a for a in actions.split(",") if a]


class TokenServer:
    """A threaded token server on 127.0.0.1; use as a context manager or start()/stop().

    - `users`: username → password accepted with Basic auth or `grant_type=password`.
    - `refresh_tokens`: refresh token → username accepted with `grant_type=refresh_token`.
    - `anonymous`: whether requests without credentials get a token.
    - `actions`: the actions ever granted (requested ∩ these), per scope.
    - `expires_in`: sent as `expires_in` (None: omitted); `token_field`: `token`,
      `access_token` or `both`.
    - `respond`: a hook that may return its own (status, headers, body) for a request.
    """

    def __init__(
        self,
        directory: Path,
        *,
        service: str = "image-policy-test",
        issuer: str = "image-policy-test-issuer",
        users: Mapping[str, str] | None = None,
        refresh_tokens: Mapping[str, str] | None = None,
        anonymous: bool = True,
        actions: Sequence[str] = ("pull",),
        expires_in: int | None = 300,
        token_field: str = "token",
        respond: Callable[[RecordedRequest], Reply | None] | None = None,
    ) -> None:
        self.service = service
        self.issuer = issuer
        self.users = dict(users or {})
        self.refresh_tokens = dict(refresh_tokens or {})
        self.anonymous = anonymous
        self.actions = tuple(actions)
        self.expires_in = expires_in
        self.token_field = token_field
        self.respond = respond
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.key_id = libtrust_key_id(self._key.public_key())
        directory.mkdir(parents=True, exist_ok=True)
        self.cert_path = directory / "token-signer.pem"
        self.cert_path.write_bytes(self._certificate())
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> TokenServer:
        """Listen on an ephemeral loopback port, serving from a daemon thread."""
        server = LoopbackServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TokenServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "token server not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The realm: `http://127.0.0.1:<port>/token`."""
        return f"http://127.0.0.1:{self.port}/token"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the requests received so far."""
        with self._lock:
            return list(self._requests)

    def token_requests(self) -> list[RecordedRequest]:
        """The requests made to `/token`."""
        return [r for r in self.requests if r.path == "/token"]

    def auth_config(self) -> dict[str, Any]:
        """The registry configuration's `auth:` section for this server."""
        return {
            "token": {
                "realm": self.url,
                "service": self.service,
                "issuer": self.issuer,
                "rootcertbundle": str(self.cert_path),
            }
        }

    # -- tokens ---------------------------------------------------------------------------

    def issue(self, subject: str, access: Sequence[Mapping[str, Any]], lifetime: int) -> str:
        """A signed JWT for `subject` granting `access`, valid for `lifetime` seconds."""
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256", "kid": self.key_id}
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": now + lifetime,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": [dict(a) for a in access],
        }
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return signing_input + "." + b64url(signature)

    def _certificate(self) -> bytes:
        yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
        cert = (
            self_signed(self._key, "image-policy token signer", not_before=yesterday)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    def _answer(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self._requests.append(request)
        if self.respond is not None:
            custom = self.respond(request)
            if custom is not None:
                return custom
        if request.path != "/token":
            return _json(404, {"details": "not found"})
        fields = request.form if request.method == "POST" else request.query
        service = (fields.get("service") or [""])[0]
        if service != self.service:
            return _json(400, {"details": f"unknown service {service!r}"})
        subject = self._subject(request)
        if subject is None:
            return _json(
                401,
                {"details": "incorrect username or password"},
                {"WWW-Authenticate": 'Basic realm="token"'},
            )
        access = []
        for scope in request.scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                return _json(400, {"details": f"invalid scope {scope!r}"})
            kind, name, actions = parsed
            granted = [a for a in actions if a in self.actions]
            access.append({"type": kind, "name": name, "actions": granted})
        lifetime = self.expires_in if self.expires_in is not None else 60
        token = self.issue(subject, access, max(lifetime, 60))
        body: dict[str, Any] = {}
        if self.token_field in ("token", "both"):
            body["token"] = token
        if self.token_field in ("access_token", "both"):
            body["access_token"] = token
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        body["issued_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return _json(200, body)

    def _subject(self, request: RecordedRequest) -> str | None:
        """Who is asking ("" for anonymous), or None when the credentials are not accepted."""
        if request.method == "POST":
            grant = (request.form.get("grant_type") or [""])[0]
            if grant == "refresh_token":
                return self.refresh_tokens.get((request.form.get("refresh_token") or [""])[0])
            if grant == "password":
                user = (request.form.get("username") or [""])[0]
                password = (request.form.get("password") or [""])[0]
                return user if user in self.users and self.users[user] == password else None
            return None
        if request.username is not None:
            ok = self.users.get(request.username) == request.password
            return request.username if ok else None
        return "" if self.anonymous else None


def _json(status: int, body: object, headers: Mapping[str, str] | None = None) -> Reply:
    return (
        status,
        {"Content-Type": "application/json", **(headers or {})},
        json.dumps(body).encode(),
    )


def _handler_for(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: requests are recorded instead of logged."""

        def _handle(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            form = parse_qs(raw.decode("utf-8", "replace")) if self.command == "POST" else {}
            authorization = self.headers.get("Authorization")
            username = password = None
            if authorization and authorization.lower().startswith("basic "):
                try:
                    decoded = base64.b64decode(authorization[6:], validate=True).decode()
                    username, _, password = decoded.partition(":")
                except ValueError:
                    username, password = "", None
            recorded = RecordedRequest(
                self.command,
                url.path,
                parse_qs(url.query),
                form,
                username,
                password,
                authorization,
            )
            status, headers, body = server._answer(recorded)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = _handle
        do_POST = _handle

    return Handler


def scripted_server(replies: Callable[[RecordedRequest], Reply], directory: Path) -> TokenServer:
    """A TokenServer whose every answer comes from `replies` (for malformed-response tests)."""
    return TokenServer(directory, respond=replies)
