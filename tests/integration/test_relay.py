"""tests/support/relay.LatencyRelay, the benchmarks' stand-in for network latency: what it
passes on, what it counts, and the latency it adds (loopback only)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
import requests

from tests.support.httpserver import ServedInThread
from tests.support.relay import LatencyRelay


class Echo(ServedInThread):
    """Answers every request with its method, path and body; remembers client ports."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        echo = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _answer(self) -> None:
                echo.ports.append(self.client_address[1])
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                data = f"{self.command} {self.path} ".encode() + body
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = _answer

        self.url = f"http://127.0.0.1:{self._serve(Handler)}"


@pytest.fixture
def echo() -> Iterator[Echo]:
    with Echo() as server:
        yield server


def test_requests_pass_through_in_order_and_are_counted(echo: Echo) -> None:
    with LatencyRelay(echo.url) as relay, requests.Session() as s:
        assert s.get(f"{relay.url}/v2/a/manifests/1?x=y").text == "GET /v2/a/manifests/1?x=y "
        head = s.head(f"{relay.url}/v2/a/manifests/1")
        assert head.status_code == 200 and head.headers["Content-Length"] == str(
            len("HEAD /v2/a/manifests/1 ")
        )
        big = b"z" * 200_000  # a body larger than one read
        assert s.post(f"{relay.url}/token", data=big).content == b"POST /token " + big
        assert s.put(f"{relay.url}/empty", data=b"").text == "PUT /empty "
        assert relay.counts() == {
            ("GET", "/v2/a/manifests/1"): 1,
            ("HEAD", "/v2/a/manifests/1"): 1,
            ("POST", "/token"): 1,
            ("PUT", "/empty"): 1,
        }
        assert relay.total() == 4
        relay.reset()
        assert relay.total() == 0
    # a keep-alive client connection is one upstream connection
    assert len(set(echo.ports)) == 1


def test_every_request_is_held_for_the_latency(echo: Echo) -> None:
    with LatencyRelay(echo.url, latency=0.05) as relay, requests.Session() as s:
        started = time.monotonic()
        for _ in range(4):
            s.get(f"{relay.url}/ping")
        elapsed = time.monotonic() - started
    assert 0.2 <= elapsed < 1.0


def test_a_closed_upstream_closes_the_client_connection() -> None:
    echo = Echo()
    relay = LatencyRelay(echo.url)
    try:
        with requests.Session() as s:
            assert s.get(f"{relay.url}/a").status_code == 200
        echo.close()
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{relay.url}/b", timeout=5)
    finally:
        relay.close()
