"""A loopback stand-in for the Docker Hub API, answering the documented response shapes.

- `GET /api/search/v4?query=NS/NAME&type=image` answers `{"total", "results": [...]}`, each
  result shaped like Docker Hub's (`id`, `name`, `slug`, `type`, `publisher`, `badge`, ...).
  The exact repository (when `badges` knows it) is never first: decoys with better badges come
  before it (`NS/NAME-operator`, a bare `NAME` official image, `NS-fork/NAME`).
- `GET /v2/orgs/NS/` answers `{"orgname", "badge", ...}` when `orgs` knows NS, else 404.
- `search_modes` / `org_modes` make a namespace misbehave on either endpoint: `"500"`, `"404"`,
  `"429"`, `"malformed"` (not JSON), `"wrong-shape"` (JSON, not the documented object),
  `"redirect"` (302 to `/elsewhere`), `"huge"` (a 3 MiB body), `"deep"` (100,000 nested
  brackets), `"hang"` (answers only after `hang` seconds or at close).
- `delay` seconds are slept before every answer (to hold requests in flight).

Every request is recorded (method, path, query, headers) so tests can count them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.httpserver import LoopbackServer, ServedInThread

MISSING = object()  # a badge value that leaves the `badge` key out of the result


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


def search_result(repository: str, badge: object) -> dict[str, Any]:
    """One search result in Docker Hub's shape (`badge` MISSING leaves the key out)."""
    namespace, _, name = repository.rpartition("/")
    result: dict[str, Any] = {
        "id": repository,
        "name": repository,
        "slug": repository,
        "type": "image",
        "publisher": {"id": namespace or "docker", "name": namespace or "Docker"},
        "created_at": "2020-01-01T00:00:00.000000Z",
        "updated_at": "2026-01-01T00:00:00.000000Z",
        "short_description": f"{name} image",
        "star_count": 7,
        "pull_count": "10K+",
        "logo_url": {},
        "categories": [],
        "operating_systems": [{"name": "linux", "label": "Linux"}],
        "architectures": [{"name": "amd64", "label": "x86-64"}],
        "media_types": ["application/vnd.oci.image.index.v1+json"],
        "content_types": ["image"],
    }
    if badge is not MISSING:
        result["badge"] = badge
    return result


class _Server(LoopbackServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client that gave up (timeout tests) is expected: stay quiet."""


class HubServer(ServedInThread):
    """The fake Docker Hub API on 127.0.0.1 (see the module docstring)."""

    def __init__(self, *, hang: float = 5.0) -> None:
        self.badges: dict[str, object] = {}  # repository ("acme/app") -> badge
        self.orgs: dict[str, object] = {}  # namespace -> badge
        self.search_modes: dict[str, str] = {}  # namespace -> failure mode
        self.org_modes: dict[str, str] = {}
        self.delay = 0.0
        self.hang = hang
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._requests: list[Recorded] = []
        self.url = f"http://127.0.0.1:{self._serve(self._handler(), server_class=_Server)}"

    # --- what tests read --------------------------------------------------------------------

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._requests)

    def count(self, prefix: str = "/") -> int:
        """Requests whose path starts with `prefix`."""
        return sum(1 for r in self.requests if r.path.startswith(prefix))

    @property
    def searches(self) -> int:
        return self.count("/api/search/v4")

    @property
    def org_lookups(self) -> int:
        return self.count("/v2/orgs/")

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()

    # --- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        self._release.set()
        super().close()

    # --- answers ----------------------------------------------------------------------------

    def _search(self, query: str) -> tuple[int, object]:
        namespace, _, name = query.partition("/")
        results = [
            search_result(f"{query}-operator", "verified_publisher"),
            search_result(name or query, "official"),
            search_result(f"{namespace}-fork/{name or query}", "open_source"),
        ]
        if query in self.badges:
            results.append(search_result(query, self.badges[query]))
        results.append(search_result(f"{namespace}x/{name}", None))
        return 200, {"total": len(results), "results": results}

    def _org(self, namespace: str) -> tuple[int, object]:
        if namespace not in self.orgs:
            return 404, {"detail": "Not found", "message": "Not found"}
        return 200, {
            "id": f"id-{namespace}",
            "orgname": namespace,
            "full_name": namespace.title(),
            "location": "",
            "company": namespace.title(),
            "profile_url": "",
            "date_joined": "2018-01-01T00:00:00Z",
            "gravatar_url": "",
            "gravatar_email": "",
            "type": "Organization",
            "badge": self.orgs[namespace],
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                with hub._lock:
                    hub._requests.append(
                        Recorded("GET", parts.path, query, {k: v for k, v in self.headers.items()})
                    )
                if hub.delay:
                    time.sleep(hub.delay)
                if parts.path == "/api/search/v4":
                    repository = query.get("query", "")
                    mode = hub.search_modes.get(repository.partition("/")[0])
                    answer: Callable[[], tuple[int, object]] = partial(hub._search, repository)
                elif parts.path.startswith("/v2/orgs/") and parts.path.endswith("/"):
                    namespace = parts.path.removeprefix("/v2/orgs/").rstrip("/")
                    mode = hub.org_modes.get(namespace)
                    answer = partial(hub._org, namespace)
                else:
                    self._send(404, b'{"detail": "Not found"}')
                    return
                if mode == "hang":
                    hub._release.wait(hub.hang)
                    mode = None
                if mode is None:
                    status, document = answer()
                    self._send(status, json.dumps(document).encode())
                elif mode in ("500", "404"):
                    self._send(int(mode), b'{"message": "failure"}')
                elif mode == "429":
                    self._send(429, b'{"message": "too many"}', {"Retry-After": "30"})
                elif mode == "malformed":
                    self._send(200, b'{"results": [{"id": ')
                elif mode == "deep":
                    self._send(200, b"[" * 100_000 + b"]" * 100_000)
                elif mode == "huge":
                    self._send(200, b'{"results": [' + b" " * (3 * 1024 * 1024) + b"]}")
                elif mode == "wrong-shape":
                    self._send(200, b'["not", "an", "object"]')
                elif mode == "redirect":
                    self._send(302, b"", {"Location": f"{hub.url}/elsewhere"})
                else:
                    raise AssertionError(f"unknown mode {mode!r}")

            def _send(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

        return Handler
