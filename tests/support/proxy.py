"""A loopback reverse proxy that counts requests by (method, path) and can add latency."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

from tests.support.httpserver import ServedInThread

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


class RequestCounts:
    """What `CountingProxy` and `relay.LatencyRelay` share: the plain-http loopback `upstream`
    they forward to, the `latency` added to each request, and the requests seen, by (method,
    path without query), thread-safe."""

    def __init__(self, upstream: str, latency: float) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"{type(self).__name__} forwards to a plain-http loopback upstream")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port or 80
        self.latency = latency
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def counts(self) -> dict[tuple[str, str], int]:
        """Requests seen so far, by (method, path without query)."""
        with self._lock:
            return dict(self._counts)

    def kinds(self) -> Counter[str]:
        """Requests seen so far, by kind: `GET manifest`, `HEAD manifest`, `GET blob`, and any
        other by method and path."""
        out: Counter[str] = Counter()
        for (method, path), n in self.counts().items():
            if "/manifests/" in path:
                out[f"{method} manifest"] += n
            elif "/blobs/" in path:
                out[f"{method} blob"] += n
            else:
                out[f"{method} {path}"] += n
        return out

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()

    def _record(self, method: str, path: str) -> None:
        with self._lock:
            self._counts[(method, urlsplit(path).path)] += 1


class CountingProxy(RequestCounts, ServedInThread):
    """Forward every request to `upstream` (an http:// base URL), counting it first.

    `latency` seconds are slept before forwarding each request. The `Host` header is
    passed through, so the registry's absolute URLs point back at the proxy.
    """

    def __init__(self, upstream: str, *, latency: float = 0.0) -> None:
        super().__init__(upstream, latency)
        self.host = f"127.0.0.1:{self._serve(self._handler())}"
        self.url = f"http://{self.host}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _forward(self) -> None:
                proxy._record(self.command, self.path)
                if proxy.latency:
                    time.sleep(proxy.latency)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=30
                )
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                            self.send_header(key, value)
                    if self.command == "HEAD":
                        length_header = response.getheader("Content-Length")
                        if length_header is not None:
                            self.send_header("Content-Length", length_header)
                    else:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        return Handler
