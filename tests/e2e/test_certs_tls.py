"""Certificates made by `image-policy certs` work in a real TLS handshake, the way the API
server makes it: trusting only ca.crt (the caBundle) and checking the Service's DNS name.
First against a bare `ssl` server, then against `image-policy serve` (gunicorn) itself."""

from __future__ import annotations

import io
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from policy import certs
from policy.cli import main
from tests.e2e.conftest import spawn_serve, stop_process
from tests.support.registry import free_port

ROOT = Path(__file__).resolve().parents[2]
SERVICE, NAMESPACE = "image-policy", "image-policy"
NAMES = certs.service_names(SERVICE, NAMESPACE)


def _make(out: Path, *extra: str) -> Path:
    buffer = io.StringIO()
    code = main(
        ["certs", f"--service={SERVICE}", f"--namespace={NAMESPACE}", f"--out={out}", *extra],
        out=buffer,
        err=buffer,
    )
    assert code == 0, buffer.getvalue()
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make(tmp_path_factory.mktemp("other")) / "ca.crt"


def _client(ca: Path) -> ssl.SSLContext:
    """What the API server does: trust the caBundle only, verify the host name."""
    context = ssl.create_default_context(cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    return context


@dataclass
class _TLSServer:
    port: int
    thread: threading.Thread
    listener: socket.socket


@pytest.fixture
def ssl_server(made: Path) -> Iterator[_TLSServer]:
    """A one-thread TLS server with tls.crt/tls.key that answers each connection `ok`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(made / "tls.crt", made / "tls.key")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)  # accept() wakes up to see `stop`
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            raw.settimeout(5)
            try:
                with context.wrap_socket(raw, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError):
                continue  # a client that refused our certificate

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield _TLSServer(listener.getsockname()[1], thread, listener)
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def _handshake(port: int, ca: Path, name: str) -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        _client(ca).wrap_socket(raw, server_hostname=name) as tls,
    ):
        return tls.recv(16)


@pytest.mark.parametrize("name", NAMES)
def test_handshake_verifies_every_service_name(
    ssl_server: _TLSServer, made: Path, name: str
) -> None:
    assert _handshake(ssl_server.port, made / "ca.crt", name) == b"ok"


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("image-policy.other.svc", "Hostname mismatch"),
        ("127.0.0.1", "IP address mismatch"),
    ],
)
def test_handshake_refuses_other_names(
    ssl_server: _TLSServer, made: Path, name: str, match: str
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match=match):
        _handshake(ssl_server.port, made / "ca.crt", name)


def test_handshake_refuses_a_client_trusting_another_ca(
    ssl_server: _TLSServer, other_ca: Path
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(ssl_server.port, other_ca, NAMES[2])


def test_extra_ip_name_verifies(tmp_path: Path) -> None:
    directory = _make(tmp_path / "ip", "--san=127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "tls.crt", directory / "tls.key")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept_one() -> None:
            raw, _ = listener.accept()
            with context.wrap_socket(raw, server_side=True) as tls:
                tls.sendall(b"ok")

        thread = threading.Thread(target=accept_one, daemon=True)
        thread.start()
        assert _handshake(port, directory / "ca.crt", "127.0.0.1") == b"ok"
        thread.join(timeout=5)


# --- the real server -----------------------------------------------------------------------


@dataclass
class _Served:
    port: int
    process: subprocess.Popen[bytes]
    log: Path


@pytest.fixture(scope="module")
def served(made: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Served]:
    """`image-policy serve` with the made certificate and the default rules, on loopback."""
    directory = tmp_path_factory.mktemp("serve")
    (directory / "settings.yaml").write_text("{}\n")
    port = free_port()
    log = directory / "serve.log"
    process = spawn_serve(
        [
            f"--rules={ROOT / 'rules' / 'default.yaml'}",
            f"--config={directory / 'settings.yaml'}",
            f"--tls-cert={made / 'tls.crt'}",
            f"--tls-key={made / 'tls.key'}",
            "--host=127.0.0.1",
            f"--port={port}",
            "--threads=4",
        ],
        cwd=directory,
        log_path=log,
    )
    running = _Served(port, process, log)
    try:
        _wait_listening(running)
        yield running
    finally:
        stop_process(process)


def _wait_listening(running: _Served, seconds: float = 15.0) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if running.process.poll() is not None:
            raise RuntimeError(f"server exited:\n{running.log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", running.port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server not listening:\n{running.log.read_text(errors='replace')}")


def _get(port: int, ca: Path, name: str, path: str) -> tuple[int, bytes]:
    """GET over a TLS connection verified as `name`, as the API server's client would."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        _client(ca).wrap_socket(raw, server_hostname=name) as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_served_endpoint_verifies_as_the_service(served: _Served, made: Path, path: str) -> None:
    status, _ = _get(served.port, made / "ca.crt", NAMES[2], path)
    assert status == 200


def test_served_endpoint_refuses_a_client_trusting_another_ca(
    served: _Served, other_ca: Path
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _get(served.port, other_ca, NAMES[2], "/healthz")


def test_check_of_the_served_certificate(made: Path) -> None:
    out = io.StringIO()
    assert main(["certs", f"--check={made}"], out=out, err=out) == 0
    assert "364 days left" in out.getvalue()
