"""Who can reach the webhook, with real gunicorn run as `gunicorn -c deploy/gunicorn.conf.py`:

- plain HTTP is refused beyond loopback however the bind is asked for (a `--bind` flag that
  overrides the config file, `GUNICORN_CMD_ARGS`): gunicorn exits 1 with the reason and never
  accepts a connection; loopback plain HTTP and TLS on every interface still start;
- with a client CA (mutual TLS, as the `mtls` overlay runs it) a client presenting a certificate
  signed by that CA gets answers; no certificate, one from another CA, or a server certificate
  of the client CA are refused in the TLS handshake, before any HTTP is read;
- the same for `image-policy serve` run with the arguments, ConfigMaps and client CA Secret of
  the rendered `mtls` overlay.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import CA, spawn_serve, stop_process
from tests.support.registry import free_port

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "gunicorn.conf.py"
DIGEST = "sha256:" + "ab" * 32

# Judged from the reference alone: no registry is contacted.
RULES = """\
apiVersion: image-policy/v1
kind: RuleSet
metadata: {name: exposure}
defaults: {action: deny, onResolveError: deny, unmatched: deny}
rules:
  - id: pinned
    match: {images: ["**"]}
    require: {digest: true}
"""


@dataclass
class Gunicorn:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _spawn(directory: Path, args: Sequence[str], env: Mapping[str, str] | None = None) -> Gunicorn:
    """`gunicorn -c deploy/gunicorn.conf.py ARGS`, configured only by `env` (plus the rules)."""
    (directory / "rules.yaml").write_text(RULES)
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("IMAGE_POLICY_", "GUNICORN_")) and k != "REQUESTS_CA_BUNDLE"
    }
    full = {
        **base,
        "PYTHONPATH": str(ROOT),
        "IMAGE_POLICY_RULES": str(directory / "rules.yaml"),
        "IMAGE_POLICY_THREADS": "4",
        **(env or {}),
    }
    log = directory / "gunicorn.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(CONF), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=directory,
            env=full,
        )
    return Gunicorn(process, log)


@pytest.fixture
def spawned() -> Iterator[list[Gunicorn]]:
    started: list[Gunicorn] = []
    yield started
    for running in started:
        stop_process(running.process)


def _http_get(port: int, path: str, context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        conn: socket.socket = raw
        if context is not None:
            conn = context.wrap_socket(raw, server_hostname="localhost")  # raw is detached
        with conn:
            conn.sendall(
                f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _wait_answering(
    running: Gunicorn, port: int, context: ssl.SSLContext | None = None, seconds: float = 20
) -> tuple[int, bytes]:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if running.process.poll() is not None:
            code = running.process.returncode
            raise AssertionError(f"gunicorn exited {code}:\n{running.output()}")
        try:
            return _http_get(port, "/healthz", context)
        except (OSError, IndexError, ValueError):
            time.sleep(0.05)
    raise AssertionError(f"gunicorn did not answer within {seconds} s:\n{running.output()}")


# --- plain HTTP beyond loopback -------------------------------------------------------------


class _Knocker:
    """Tries to connect to 127.0.0.1:port every 10 ms until stopped; counts successes."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.attempts = 0
        self.connected = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.attempts += 1
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    self.connected += 1
            except OSError:
                pass
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.mark.parametrize(
    "how",
    ["--bind 0.0.0.0", "--bind :PORT", "GUNICORN_CMD_ARGS", "a second --bind"],
)
def test_plain_http_beyond_loopback_is_refused_however_asked(
    tmp_path: Path, spawned: list[Gunicorn], how: str
) -> None:
    port = free_port()
    args: list[str] = []
    env: dict[str, str] = {}
    if how == "--bind 0.0.0.0":
        args = ["--bind", f"0.0.0.0:{port}"]
    elif how == "--bind :PORT":
        args = ["--bind", f":{port}"]
    elif how == "GUNICORN_CMD_ARGS":
        env = {"GUNICORN_CMD_ARGS": f"--bind=0.0.0.0:{port}"}
    else:
        args = ["--bind", f"127.0.0.1:{free_port()}", "--bind", f"0.0.0.0:{port}"]
    knocker = _Knocker(port)
    try:
        running = _spawn(tmp_path, args, env)
        spawned.append(running)
        code = running.process.wait(timeout=30)
    finally:
        knocker.stop()
    output = running.output()
    assert code != 0, output
    assert "refusing to serve plain HTTP on " in output
    assert "listens on loopback only" in output
    assert "Listening at" not in output and "Booting worker" not in output
    assert knocker.attempts > 0 and knocker.connected == 0


def test_plain_http_on_loopback_still_starts(tmp_path: Path, spawned: list[Gunicorn]) -> None:
    port = free_port()
    running = _spawn(tmp_path, ["--bind", f"127.0.0.1:{port}"])
    spawned.append(running)
    status, body = _wait_answering(running, port)
    assert (status, json.loads(body)) == (200, {"status": "ok"})


def _server_files(directory: Path, ca: CA) -> dict[str, str]:
    issued = ca.issue("localhost")
    (directory / "tls.crt").write_bytes(issued.cert)
    (directory / "tls.key").write_bytes(issued.key)
    return {
        "IMAGE_POLICY_TLS_CERT": str(directory / "tls.crt"),
        "IMAGE_POLICY_TLS_KEY": str(directory / "tls.key"),
    }


def _client_context(ca: CA, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.path))
    if cert is not None:
        context.load_cert_chain(*cert)
    return context


def test_tls_on_every_interface_still_starts(
    tmp_path: Path, spawned: list[Gunicorn], ca: CA
) -> None:
    """A `--bind 0.0.0.0` flag with a certificate: TLS on any interface is allowed (reached
    here over loopback only)."""
    port = free_port()
    running = _spawn(tmp_path, ["--bind", f"0.0.0.0:{port}"], _server_files(tmp_path, ca))
    spawned.append(running)
    status, _ = _wait_answering(running, port, _client_context(ca))
    assert status == 200
    assert f"Listening at: https://0.0.0.0:{port}" in running.output()


# --- mutual TLS ----------------------------------------------------------------------------


@dataclass
class _Mutual:
    port: int
    server_ca: CA
    client_ca: CA
    other_ca: CA
    directory: Path
    running: Gunicorn

    def client(self, issuer: CA, name: str, *, server: bool = False) -> tuple[Path, Path]:
        issued = issuer.issue(name, server=server)
        cert, key = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        cert.write_bytes(issued.cert)
        key.write_bytes(issued.key)
        return cert, key


@pytest.fixture(scope="module")
def mutual(tmp_path_factory: pytest.TempPathFactory, ca: CA) -> Iterator[_Mutual]:
    """gunicorn -c deploy/gunicorn.conf.py with IMAGE_POLICY_CLIENT_CA, as the mtls overlay
    runs the webhook (there with --client-ca): the server's certificate from `ca`, clients'
    from a CA of their own."""
    directory = tmp_path_factory.mktemp("mtls")
    (directory / "client-ca").mkdir()
    (directory / "other-ca").mkdir()
    client_ca = CA.create(directory / "client-ca")
    other_ca = CA.create(directory / "other-ca")
    port = free_port()
    env = {
        **_server_files(directory, ca),
        "IMAGE_POLICY_CLIENT_CA": str(client_ca.path),
        "IMAGE_POLICY_HOST": "127.0.0.1",
        "IMAGE_POLICY_PORT": str(port),
    }
    running = _spawn(directory, [], env)
    mutual = _Mutual(port, ca, client_ca, other_ca, directory, running)
    try:
        _wait_answering(
            running, port, _client_context(ca, mutual.client(client_ca, "kube-apiserver"))
        )
        yield mutual
    finally:
        stop_process(running.process)


def _review(image: str) -> bytes:
    pod = {"kind": "Pod", "spec": {"containers": [{"name": "c", "image": image}]}}
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "uid-mtls",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "namespace": "dev",
                "operation": "CREATE",
                "object": pod,
            },
        }
    ).encode()


def _post(port: int, context: ssl.SSLContext, path: str, body: bytes) -> bytes:
    """One HTTP exchange over TLS; whatever came back (raises on a refused handshake)."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(
            f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return data


def test_a_client_certificate_from_the_client_ca_gets_answers(mutual: _Mutual) -> None:
    context = _client_context(mutual.server_ca, mutual.client(mutual.client_ca, "apiserver"))
    for image, allowed in ((f"ghcr.io/acme/app@{DIGEST}", True), ("ghcr.io/acme/app:1", False)):
        data = _post(mutual.port, context, "/validate", _review(image))
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), data
        response = json.loads(body)["response"]
        assert (response["uid"], response["allowed"]) == ("uid-mtls", allowed)


@pytest.mark.parametrize("client", ["none", "another CA", "a server certificate"])
def test_other_clients_are_refused_in_the_handshake(mutual: _Mutual, client: str) -> None:
    cert = {
        "none": None,
        "another CA": mutual.client(mutual.other_ca, "intruder"),
        # The client CA's own issue, but for serving, not for client authentication.
        "a server certificate": mutual.client(mutual.client_ca, "localhost", server=True),
    }[client]
    context = _client_context(mutual.server_ca, cert)
    received = b""
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)) as info:
        received = _post(mutual.port, context, "/validate", _review(f"ghcr.io/a/b@{DIGEST}"))
    assert received == b""
    if isinstance(info.value, ssl.SSLError):
        assert any(
            reason in str(info.value)
            for reason in ("CERTIFICATE_REQUIRED", "UNKNOWN_CA", "BAD_CERTIFICATE", "UNSUPPORTED")
        ), info.value
    # A TCP connection still opens, as for the mtls overlay's tcpSocket probes: the kubelet's
    # HTTPS probes present no client certificate and would be refused like this one.
    with socket.create_connection(("127.0.0.1", mutual.port), timeout=5):
        pass
    assert mutual.running.process.poll() is None


# --- the mtls overlay, as rendered -----------------------------------------------------------


def _render(overlay: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        message = "kubectl not installed: the mtls overlay is NOT run (apt-get install kubectl)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    done = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


@pytest.fixture(scope="module")
def overlay_webhook(tmp_path_factory: pytest.TempPathFactory, ca: CA) -> Iterator[_Mutual]:
    """`image-policy serve` with the very arguments, files and client CA Secret of the rendered
    mtls overlay: its /etc/image-policy/... paths mapped into a directory here, its port a
    free one on loopback."""
    directory = tmp_path_factory.mktemp("mtls-overlay")
    tree = directory / "kubernetes"
    shutil.copytree(ROOT / "deploy" / "kubernetes", tree)
    (directory / "client-ca").mkdir()
    client_ca = CA.create(directory / "client-ca")
    shutil.copy(client_ca.path, tree / "overlays/mtls/client-ca/ca.crt")
    docs = _render(tree / "overlays" / "mtls")
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    root = directory / "fs"
    for mount in container["volumeMounts"]:  # what the kubelet would put at each mount
        volume = volumes[mount["name"]]
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        if "configMap" in volume:
            data = by_name[("ConfigMap", volume["configMap"]["name"])]["data"]
            for key, text in data.items():
                (target / key).write_text(text)
        elif volume.get("secret", {}).get("secretName") == "image-policy-client-ca":
            data = by_name[("Secret", "image-policy-client-ca")]["data"]
            for key, encoded in data.items():
                (target / key).write_bytes(base64.b64decode(encoded))
        elif "secret" in volume:  # the serving certificate cert-manager would write
            issued = ca.issue("localhost")
            (target / "tls.crt").write_bytes(issued.cert)
            (target / "tls.key").write_bytes(issued.key)
    port = free_port()
    args = [
        a.replace("/etc/image-policy/", f"{root}/etc/image-policy/")
        for a in container["args"]
        if not a.startswith("--port=")
    ]
    assert any(a.startswith("--client-ca=") for a in args)
    log = directory / "serve.log"
    process = spawn_serve(
        [*args, f"--port={port}", "--host=127.0.0.1", "--threads=4"], cwd=directory, log_path=log
    )
    mutual = _Mutual(port, ca, client_ca, CA.create(directory), directory, Gunicorn(process, log))
    try:
        context = _client_context(ca, mutual.client(client_ca, "kube-apiserver"))
        _wait_answering(mutual.running, port, context)
        yield mutual
    finally:
        stop_process(process)


def test_the_mtls_overlay_answers_the_api_servers_certificate_only(
    overlay_webhook: _Mutual,
) -> None:
    hook = overlay_webhook
    apiserver = _client_context(hook.server_ca, hook.client(hook.client_ca, "apiserver"))
    review = json.loads(_review(f"ghcr.io/acme/app@{DIGEST}"))
    review["request"]["namespace"] = "kube-system"  # excluded: answered without lookups
    data = _post(hook.port, apiserver, "/validate", json.dumps(review).encode())
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data
    assert json.loads(body)["response"] == {"uid": "uid-mtls", "allowed": True}
    status, ready = _http_get(hook.port, "/readyz", apiserver)
    assert status == 200 and json.loads(ready)["rules"] == "default"
    for cert in (None, hook.client(hook.other_ca, "intruder")):
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            _post(hook.port, _client_context(hook.server_ca, cert), "/validate", b"{}")
    # The overlay's tcpSocket probes: the port accepts connections.
    with socket.create_connection(("127.0.0.1", hook.port), timeout=5):
        pass
