"""The registry session: proxies and the CA bundle from the environment, read once per host;
never ~/.netrc (whose Basic login `requests` would put over the client's Bearer token)."""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests
import requests.adapters

from policy.egress import EgressPolicy
from policy.registry.session import RegistrySession, new_session
from policy.registry.transport import Transport
from tests.support.httpserver import ServedInThread


def LOOPBACK() -> Transport:  # reads as a constant at the call sites
    """The CLI's egress defaults: these tests' registries and proxies are on loopback."""
    return Transport(EgressPolicy(mode="cli"))


class Recorder(ServedInThread):
    """Answers 200 to everything, recording (request line target, Authorization)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                recorder.seen.append((self.path, self.headers.get("Authorization")))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.port = self._serve(Handler)
        self.url = f"http://127.0.0.1:{self.port}"


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with Recorder() as server:
        yield server


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_a_netrc_entry_never_replaces_the_clients_authorization(
    recorder: Recorder, clean_env: Path
) -> None:
    (clean_env / ".netrc").write_text("machine 127.0.0.1 login someone password secret\n")
    (clean_env / ".netrc").chmod(0o600)
    bearer = {"Authorization": "Bearer the-registry-token"}
    with requests.Session() as plain:  # what trust_env does: the netrc login wins
        plain.get(f"{recorder.url}/v2/", headers=bearer, timeout=5).close()
    with new_session(LOOPBACK()) as session:
        session.get(f"{recorder.url}/v2/", headers=bearer, timeout=5).close()
    assert recorder.seen[0][1] is not None and recorder.seen[0][1].startswith("Basic ")
    assert recorder.seen[1] == ("/v2/", "Bearer the-registry-token")


def test_proxies_come_from_the_environment_and_no_proxy_is_honoured(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", recorder.url)
    monkeypatch.setenv("NO_PROXY", "direct.example")
    with Recorder() as direct, new_session(LOOPBACK()) as session:
        session.get("http://registry.example:5000/v2/", timeout=5).close()
        assert recorder.seen == [("http://registry.example:5000/v2/", None)]  # via the proxy
        assert session.proxies_for("http://direct.example/v2/") == {}
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        session.get(f"{direct.url}/v2/", timeout=5).close()
        assert direct.seen == [("/v2/", None)] and len(recorder.seen) == 1


def test_the_environment_is_read_once_per_host(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", recorder.url)
    with new_session(LOOPBACK()) as session:
        first = session.proxies_for("http://registry.example/v2/")
        monkeypatch.setenv("HTTP_PROXY", "http://elsewhere.example:3128")
        assert session.proxies_for("http://registry.example/v2/a") is first
        assert session.proxies_for("http://other.example/v2/")["http"] == (
            "http://elsewhere.example:3128"
        )


class VerifyRecorder(requests.adapters.BaseAdapter):
    """Records the `verify` each request is sent with (no network)."""

    def __init__(self) -> None:
        super().__init__()
        self.verify: list[object] = []

    def send(self, request: requests.PreparedRequest, **kwargs: object) -> requests.Response:
        self.verify.append(kwargs.get("verify"))
        response = requests.Response()
        response.status_code = 204
        response.request = request
        return response

    def close(self) -> None:
        return


def test_the_ca_bundle_variable_applies_to_default_verification_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bundle = tmp_path / "corp-ca.pem"
    bundle.write_text("not read by this test")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    session = RegistrySession()
    adapter = VerifyRecorder()
    session.mount("https://", adapter)
    session.get("https://registry.example/v2/")
    session.get("https://registry.example/v2/", verify="/etc/registry-ca.pem")
    session.get("https://registry.example/v2/", verify=False)
    assert adapter.verify == [str(bundle), "/etc/registry-ca.pem", False]
