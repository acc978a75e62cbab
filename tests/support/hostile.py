"""A loopback registry that misbehaves on purpose, one scenario per repository name.

`GET /v2/<scenario>/manifests/<ref>` (and `/blobs/<digest>`, `HEAD`) answers as the
scenario says; `SCENARIOS` lists them. Run a second server on 127.0.0.2 as the "foreign"
host: redirects and Bearer realms point there, and it records every request (with its
`Authorization`) so tests can prove no credential reached it.
"""

from __future__ import annotations

import base64
import email.utils
import functools
import threading
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.support.httpserver import LoopbackServer, ServedInThread
from tests.support.images import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    blob_bytes,
    canonical,
    image_config,
    sha256,
)

SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
METADATA_REALM = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
LEAKY_MESSAGE = "internal-admin v3.2; db=postgres://10.0.0.7"
"""What the `leaky` scenario's 500 says: `X: internal-admin v3.2; db=postgres://10.0.0.7`."""

GOOD_CONFIG = canonical(image_config("linux/amd64", user="1000", labels={"team": "x"}))
GOOD_LAYER = blob_bytes("hostile-layer", 2048)
GOOD_MANIFEST = canonical(
    {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {
            "mediaType": DOCKER_CONFIG,
            "digest": sha256(GOOD_CONFIG),
            "size": len(GOOD_CONFIG),
        },
        "layers": [
            {"mediaType": DOCKER_LAYER, "digest": sha256(GOOD_LAYER), "size": len(GOOD_LAYER)}
        ],
    }
)
GOOD_DIGEST = sha256(GOOD_MANIFEST)
BLOBS = {sha256(GOOD_CONFIG): GOOD_CONFIG, sha256(GOOD_LAYER): GOOD_LAYER}

SCENARIOS = (
    "good",
    "digest-mismatch",
    "head-no-digest",
    "wrong-media-type",
    "oversized",
    "endless",
    "slow-drip",
    "redirect-foreign",
    "redirect-foreign-401",
    "redirect-loop",
    "redirect-file",
    "rate-limited",
    "retry-after",
    "retry-after-date",
    "retry-after-long",
    "malformed-json",
    "malformed-fields",
    "huge-index",
    "many-entries",
    "schema1",
    "flaky",
    "down",
    "unauthorized",
    "bearer-foreign-realm",
    "bearer-metadata-realm",
    "forbidden",
    "not-found",
    "teapot",
    "echo-auth",
    "stall",
    "leaky",
)


def index_body(entries: int, media_type: str = OCI_INDEX) -> bytes:
    """An index with `entries` linux/amd64 entries (distinct, valid digests), built fast."""
    entry = (
        '{"digest":"sha256:%064x","mediaType":"' + DOCKER_MANIFEST + '",'
        '"platform":{"architecture":"amd64","os":"linux"},"size":100}'
    )
    manifests = ",".join(entry % i for i in range(entries))
    return (
        '{"manifests":[' + manifests + '],"mediaType":"' + media_type + '","schemaVersion":2}'
    ).encode()


@functools.cache
def huge_index_body() -> bytes:
    """A 100,000-entry manifest list (about 20 MB), built once."""
    return index_body(100_000, DOCKER_LIST)


SCHEMA1_BODY = canonical(
    {"schemaVersion": 1, "name": "schema1", "tag": "latest", "fsLayers": [], "history": []}
)


@dataclass(frozen=True)
class Seen:
    """One request a server received."""

    method: str
    path: str
    authorization: str | None


class HostileServer(ServedInThread):
    """A misbehaving registry on `bind` (127.0.0.1 by default), `foreign` its other host."""

    def __init__(self, bind: str = "127.0.0.1", *, foreign: HostileServer | None = None) -> None:
        self.foreign = foreign
        self.stopping = threading.Event()
        self.hits: Counter[str] = Counter()
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        port = self._serve(_handler(self), bind=bind, server_class=_QuietServer)
        self.host = f"{bind}:{port}"
        self.url = f"http://{self.host}"

    def authorizations(self) -> list[str]:
        """Every Authorization header value this server received."""
        with self._lock:
            return [s.authorization for s in self.seen if s.authorization is not None]

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def record(self, seen: Seen, scenario: str) -> int:
        """Note a request; return how many times `scenario` was hit before this one."""
        with self._lock:
            self.seen.append(seen)
            before = self.hits[scenario]
            self.hits[scenario] += 1
            return before

    def close(self) -> None:
        self.stopping.set()
        super().close()


class _QuietServer(LoopbackServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up mid-body is the point of several scenarios: stay quiet."""


def _handler(server: HostileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        fixed_date: str | None = None

        def log_message(self, format: str, *args: object) -> None:
            return

        def date_time_string(self, timestamp: float | None = None) -> str:
            """The `Date` header: fixed when a scenario needs a known clock."""
            return self.fixed_date or super().date_time_string(timestamp)

        # --- plumbing ------------------------------------------------------------------

        def send(
            self,
            status: int,
            body: bytes = b"",
            headers: dict[str, str] | None = None,
            *,
            length: int | None = None,
        ) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def good_manifest(self, *, digest: str | None = GOOD_DIGEST) -> None:
            headers = {"Content-Type": DOCKER_MANIFEST}
            if digest is not None:
                headers["Docker-Content-Digest"] = digest
            self.send(200, GOOD_MANIFEST, headers)

        def good(self, kind: str, ref: str) -> None:
            if kind == "manifests":
                self.good_manifest()
            elif ref in BLOBS:
                self.send(200, BLOBS[ref], {"Content-Type": "application/octet-stream"})
            else:
                self.send(404, canonical({"errors": [{"code": "BLOB_UNKNOWN", "message": "?"}]}))

        def errors(self, status: int, code: str, message: str, **headers: str) -> None:
            body = canonical({"errors": [{"code": code, "message": message}]})
            self.send(status, body, {"Content-Type": "application/json", **headers})

        # --- dispatch ------------------------------------------------------------------

        def do_GET(self) -> None:
            self.route()

        def do_HEAD(self) -> None:
            self.route()

        def route(self) -> None:
            path = self.path.split("?", 1)[0]
            parts = path.split("/")
            scenario = parts[2] if len(parts) > 2 and parts[1] == "v2" else path
            before = server.record(
                Seen(self.command, path, self.headers.get("Authorization")), scenario
            )
            if path == "/v2/" or path == "/v2":
                self.send(200, b"{}", {"Content-Type": "application/json"})
                return
            if parts[1] == "storage" and len(parts) == 3:
                self.good("blobs", parts[2])
                return
            if parts[1] == "deny":
                challenge = f'Bearer realm="{server.url}/token",service="storage"'
                self.errors(401, "UNAUTHORIZED", "no", **{"WWW-Authenticate": challenge})
                return
            if parts[1] == "token":
                self.send(200, canonical({"token": "foreign-token"}))
                return
            if len(parts) != 5 or parts[1] != "v2" or parts[3] not in ("manifests", "blobs"):
                self.send(404)
                return
            method = getattr(self, "scenario_" + scenario.replace("-", "_"), None)
            if method is None:
                self.send(404)
                return
            method(parts[3], parts[4], before)

        # --- scenarios -----------------------------------------------------------------

        def scenario_good(self, kind: str, ref: str, before: int) -> None:
            self.good(kind, ref)

        def scenario_digest_mismatch(self, kind: str, ref: str, before: int) -> None:
            if kind == "blobs":
                self.send(200, b"not the blob you asked for")
            else:
                self.good_manifest(digest=sha256(b"something else"))

        def scenario_head_no_digest(self, kind: str, ref: str, before: int) -> None:
            self.good_manifest(digest=None if self.command == "HEAD" else GOOD_DIGEST)

        def scenario_wrong_media_type(self, kind: str, ref: str, before: int) -> None:
            self.send(200, GOOD_MANIFEST, {"Content-Type": OCI_INDEX})

        def scenario_oversized(self, kind: str, ref: str, before: int) -> None:
            headers = {"Content-Type": DOCKER_MANIFEST}
            self.send(200, b"{" * 16, headers, length=1 << 30)
            self.close_connection = True

        def scenario_endless(self, kind: str, ref: str, before: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", DOCKER_MANIFEST)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.close_connection = True
            chunk = b" " * 65536
            try:
                while not server.stopping.is_set():
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except OSError:
                return

        def scenario_slow_drip(self, kind: str, ref: str, before: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", DOCKER_MANIFEST)
            self.send_header("Content-Length", "10000")
            self.end_headers()
            self.close_connection = True
            try:
                for _ in range(10000):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    if server.stopping.wait(0.05):
                        return
            except OSError:
                return

        def scenario_redirect_foreign(self, kind: str, ref: str, before: int) -> None:
            assert server.foreign is not None, "redirect-foreign needs a foreign server"
            target = f"{server.foreign.url}/storage/{ref}"
            if kind == "manifests":
                target = f"{server.foreign.url}/v2/good/manifests/{ref}"
            self.send(307, b"", {"Location": target})

        def scenario_redirect_foreign_401(self, kind: str, ref: str, before: int) -> None:
            assert server.foreign is not None, "redirect-foreign-401 needs a foreign server"
            self.send(307, b"", {"Location": f"{server.foreign.url}/deny/{ref}"})

        def scenario_stall(self, kind: str, ref: str, before: int) -> None:
            server.stopping.wait(5.0)
            self.close_connection = True

        def scenario_redirect_loop(self, kind: str, ref: str, before: int) -> None:
            self.send(302, b"", {"Location": self.path})

        def scenario_redirect_file(self, kind: str, ref: str, before: int) -> None:
            self.send(302, b"", {"Location": "file:///etc/passwd"})

        def scenario_rate_limited(self, kind: str, ref: str, before: int) -> None:
            self.errors(
                429,
                "TOOMANYREQUESTS",
                "You have reached your pull rate limit.",
                **{"ratelimit-limit": "100;w=21600", "ratelimit-remaining": "0;w=21600"},
            )

        def scenario_retry_after(self, kind: str, ref: str, before: int) -> None:
            if before == 0:
                self.errors(429, "TOOMANYREQUESTS", "slow down", **{"Retry-After": "1"})
            else:
                self.good(kind, ref)

        def scenario_retry_after_date(self, kind: str, ref: str, before: int) -> None:
            if before == 0:
                self.fixed_date = "Wed, 01 May 2024 12:00:00 GMT"
                later = "Wed, 01 May 2024 12:00:01 GMT"
                self.errors(429, "TOOMANYREQUESTS", "slow", **{"Retry-After": later})
            else:
                self.good(kind, ref)

        def scenario_retry_after_long(self, kind: str, ref: str, before: int) -> None:
            self.errors(429, "TOOMANYREQUESTS", "come back later", **{"Retry-After": "3600"})

        def scenario_malformed_json(self, kind: str, ref: str, before: int) -> None:
            body = b'{"schemaVersion": 2, "mediaType": "' + DOCKER_MANIFEST.encode()
            self.send(200, body, {"Content-Type": DOCKER_MANIFEST})

        def scenario_deep_json(self, kind: str, ref: str, before: int) -> None:
            self.send(200, b"[" * 100_000 + b"]" * 100_000, {"Content-Type": DOCKER_MANIFEST})

        def scenario_deep_errors(self, kind: str, ref: str, before: int) -> None:
            body = b'{"errors": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
            self.send(404, body, {"Content-Type": "application/json"})

        def scenario_malformed_fields(self, kind: str, ref: str, before: int) -> None:
            body = canonical(
                {
                    "schemaVersion": 2,
                    "mediaType": DOCKER_MANIFEST,
                    "config": {"mediaType": DOCKER_CONFIG, "digest": 7, "size": "big"},
                    "layers": "none",
                }
            )
            self.send(200, body, {"Content-Type": DOCKER_MANIFEST})

        def scenario_huge_index(self, kind: str, ref: str, before: int) -> None:
            body = huge_index_body()
            self.send_response(200)
            self.send_header("Content-Type", DOCKER_LIST)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.close_connection = True
            try:
                for start in range(0, len(body), 65536):
                    chunk = body[start : start + 65536]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                return

        def scenario_many_entries(self, kind: str, ref: str, before: int) -> None:
            body = index_body(1001)
            self.send(200, body, {"Content-Type": OCI_INDEX, "Docker-Content-Digest": sha256(body)})

        def scenario_schema1(self, kind: str, ref: str, before: int) -> None:
            self.send(200, SCHEMA1_BODY, {"Content-Type": SCHEMA1_SIGNED})

        def scenario_flaky(self, kind: str, ref: str, before: int) -> None:
            if before == 0:
                self.errors(500, "UNKNOWN", "internal error")
            else:
                self.good(kind, ref)

        def scenario_down(self, kind: str, ref: str, before: int) -> None:
            self.errors(503, "UNAVAILABLE", "maintenance")

        def scenario_unauthorized(self, kind: str, ref: str, before: int) -> None:
            self.errors(
                401,
                "UNAUTHORIZED",
                "authentication required",
                **{"WWW-Authenticate": 'Basic realm="hostile"'},
            )

        def scenario_bearer_foreign_realm(self, kind: str, ref: str, before: int) -> None:
            assert server.foreign is not None, "bearer-foreign-realm needs a foreign server"
            challenge = (
                f'Bearer realm="{server.foreign.url}/token",service="hostile",'
                f'scope="repository:bearer-foreign-realm:pull"'
            )
            self.errors(401, "UNAUTHORIZED", "token needed", **{"WWW-Authenticate": challenge})

        def scenario_bearer_metadata_realm(self, kind: str, ref: str, before: int) -> None:
            challenge = f'Bearer realm="{METADATA_REALM}",service="hostile"'
            self.errors(401, "UNAUTHORIZED", "token needed", **{"WWW-Authenticate": challenge})

        def scenario_leaky(self, kind: str, ref: str, before: int) -> None:
            """A 500 whose error tells what runs inside (never to be shown to a pod author)."""
            self.errors(500, "X", LEAKY_MESSAGE)

        def scenario_forbidden(self, kind: str, ref: str, before: int) -> None:
            self.errors(403, "DENIED", "requested access to the resource is denied")

        def scenario_not_found(self, kind: str, ref: str, before: int) -> None:
            self.errors(404, "MANIFEST_UNKNOWN", "manifest unknown")

        def scenario_teapot(self, kind: str, ref: str, before: int) -> None:
            self.send(418, b"<html>\x00\xff not json", {"Content-Type": "text/html"})

        def scenario_echo_auth(self, kind: str, ref: str, before: int) -> None:
            sent = self.headers.get("Authorization", "")
            decoded = ""
            if sent.startswith("Basic "):
                decoded = base64.b64decode(sent[6:]).decode(errors="replace")
            message = f"bad credentials {sent} ({decoded}) at {email.utils.formatdate()}"
            self.errors(400, "DENIED", message)

    return Handler
