"""End-to-end fixtures: certificates from a throwaway CA (tests/support/tlsca.py), the real
distribution registry seeded with images, and the webhook run by `image-policy serve` (real
gunicorn over TLS)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import images, procs
from tests.support.registry import RunningRegistry, free_port, start_registry
from tests.support.tlsca import CA

ROOT = Path(__file__).resolve().parents[2]
AMD64 = "linux/amd64"


@pytest.fixture(scope="session")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CA:
    return CA.create(tmp_path_factory.mktemp("ca"))


# --- the registry ------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    """The registry and its images: `small` (2 layers), `big` (8 layers), `tools` (1 layer)."""

    host: str
    small: images.PushedImage
    big: images.PushedImage
    tools: images.PushedImage
    multi: images.PushedIndex

    def ref(self, repo: str, tag: str = "1.0") -> str:
        return f"{self.host}/{repo}:{tag}"


def _image(url: str, repo: str, tag: str, layers: int) -> images.PushedImage:
    return images.build_image(
        url,
        repo,
        tag,
        layers=[images.blob_bytes(f"{repo}/{tag}/{i}", 300) for i in range(layers)],
        config=images.image_config(AMD64, user="1000"),
    )


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    running: RunningRegistry = start_registry(tmp_path_factory.mktemp("e2e-registry"))
    try:
        url = running.url
        amd = _image(url, "team/multi", "amd64", 2)
        arm = images.build_image(
            url,
            "team/multi",
            "arm64",
            layers=[images.blob_bytes("arm", 300)],
            config=images.image_config("linux/arm64"),
        )
        yield Seeded(
            host=running.host,
            small=_image(url, "team/app", "1.0", 2),
            big=_image(url, "team/big", "1.0", 8),
            tools=_image(url, "team/tools", "1.0", 1),
            multi=images.push_index(
                url, "team/multi", "1.0", [(amd.digest, AMD64), (arm.digest, "linux/arm64")]
            ),
        )
    finally:
        running.stop()


OPEN_RULES = """\
apiVersion: image-policy/v1
kind: RuleSet
defaults: {onResolveError: deny, unmatched: deny}
rules:
  - id: small
    match: {images: ["**"]}
    require: {maxLayers: 5}
"""
"""Any image of at most 5 layers, from any registry: no allow-list, so the resolver contacts
whatever registry an image names (the egress and attack tests need that)."""


def rules_text(host: str, *, max_layers: int = 5, name: str = "e2e") -> str:
    return f"""\
apiVersion: image-policy/v1
kind: RuleSet
metadata: {{name: {name}}}
defaults: {{action: deny, onResolveError: deny, unmatched: deny, platforms: ["linux/amd64"]}}
rules:
  - id: trusted-registries
    match: {{images: ["**"]}}
    require: {{registries: ["{host}"]}}
  - id: few-layers
    match: {{images: ["**"]}}
    require: {{maxLayers: {max_layers}}}
  - id: no-latest
    match: {{images: ["**"]}}
    require: {{denyTags: ["latest"]}}
    action: warn
  - id: prod-pinned
    match: {{images: ["**"], namespaces: ["prod"]}}
    require: {{digest: true}}
    action: audit
"""


# --- the webhook -------------------------------------------------------------------------


@dataclass
class Webhook:
    """A running `image-policy serve`: `url`, the CA to verify it, its files and log."""

    url: str
    ca: CA
    directory: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    client_cert: tuple[str, str] | None = None

    @property
    def rules(self) -> Path:
        return self.directory / "rules" / "rules.yaml"

    @property
    def cert(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def key(self) -> Path:
        return self.directory / "tls.key"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def decision_line(self, uid: str, seconds: float = 5.0) -> dict[str, Any]:
        """The decision log line of the review `uid` (written in batches: waits for it)."""
        end = time.monotonic() + seconds
        while True:
            for text in self.log().splitlines():
                if not text.startswith("{") or uid not in text:
                    continue
                line = json.loads(text)
                if line.get("event") == "decision" and line.get("uid") == uid:
                    return dict(line)
            if time.monotonic() > end:
                raise AssertionError(f"no decision line for uid {uid} in:\n{self.log()}")
            time.sleep(0.05)

    def session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # else $REQUESTS_CA_BUNDLE silently replaces `verify`
        s.verify = str(self.ca.path)
        s.cert = self.client_cert
        return s

    def post(self, path: str, doc: object, *, session: requests.Session | None = None) -> Any:
        """POST a review; the parsed JSON answer (asserting HTTP 200)."""
        s = session or self.session()
        try:
            with s.post(f"{self.url}{path}", json=doc, timeout=20) as reply:
                assert reply.status_code == 200, f"{reply.status_code} {reply.text}\n{self.log()}"
                return reply.json()
        finally:
            if session is None:
                s.close()

    def stop(self) -> None:
        stop_process(self.process)


def spawn_serve(args: Sequence[str], *, cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m policy serve ARGS` from this checkout, output to `log_path`, settings only
    from ARGS (never from the environment)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("IMAGE_POLICY_CONFIG", None)
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "policy", "serve", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (gunicorn's graceful stop), then SIGKILL after 10 s."""
    procs.stop(process, grace=10)


LOOPBACK_EGRESS = 'egress: {allow: ["127.0.0.0/8", "::1"]}\n'


def with_loopback_egress(settings: str) -> str:
    """`settings` allowing the tests' loopback registries (the webhook refuses loopback unless
    told), unless they say something about egress themselves."""
    if "egress" in settings:
        return settings
    if not settings.strip() or settings.strip() == "{}":
        return LOOPBACK_EGRESS
    return settings.rstrip("\n") + "\n" + LOOPBACK_EGRESS


def start_webhook(
    directory: Path,
    ca: CA,
    rules: str,
    *,
    settings: str = "",
    extra: Sequence[str] = (),
    workers: int = 2,
    threads: int = 16,
    client_ca: Path | None = None,
    loopback_egress: bool = True,
) -> Webhook:
    """Run `python -m policy serve` over TLS on a free loopback port; ready when /readyz is."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "rules").mkdir(exist_ok=True)
    (directory / "rules" / "rules.yaml").write_text(rules)
    (directory / "settings.yaml").write_text(
        with_loopback_egress(settings) if loopback_egress else settings or "{}\n"
    )
    issued = ca.issue("image-policy.test.svc")
    (directory / "tls.crt").write_bytes(issued.cert)
    (directory / "tls.key").write_bytes(issued.key)
    client_cert = None
    client_args: list[str] = []
    if client_ca is not None:
        client = ca.issue("kube-apiserver", server=False)
        (directory / "client.crt").write_bytes(client.cert)
        (directory / "client.key").write_bytes(client.key)
        client_cert = (str(directory / "client.crt"), str(directory / "client.key"))
        client_args = ["--client-ca", str(client_ca)]
    port = free_port()
    log_path = directory / "webhook.log"
    process = spawn_serve(
        [
            "--rules",
            str(directory / "rules"),
            "--config",
            str(directory / "settings.yaml"),
            "--tls-cert",
            str(directory / "tls.crt"),
            "--tls-key",
            str(directory / "tls.key"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            *client_args,
            *extra,
        ],
        cwd=directory,
        log_path=log_path,
    )
    hook = Webhook(f"https://127.0.0.1:{port}", ca, directory, process, log_path, client_cert)
    try:
        _wait_ready(hook)
    except BaseException:
        hook.stop()
        raise
    return hook


def _wait_ready(hook: Webhook, seconds: float = 15.0) -> None:
    with hook.session() as s:
        procs.wait_ready(
            hook.process, s, f"{hook.url}/readyz", name="webhook", log=hook.log, seconds=seconds
        )


@pytest.fixture(scope="module")
def webhook(
    tmp_path_factory: pytest.TempPathFactory, ca: CA, registry: Seeded
) -> Iterator[Webhook]:
    """The webhook with pinning and break-glass on, judging images of the test registry."""
    hook = start_webhook(
        tmp_path_factory.mktemp("webhook"),
        ca,
        rules_text(registry.host),
        settings="mutate: {pin: true}\nbreakGlass: true\nexcludeNamespaces: [kube-system]\n",
    )
    try:
        yield hook
    finally:
        hook.stop()


class HangingRegistry:
    """A listening socket that never accepts: connections complete (the kernel's backlog)
    and requests are sent, but no answer ever comes."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def hanging_registry() -> Iterator[HangingRegistry]:
    hanging = HangingRegistry()
    try:
        yield hanging
    finally:
        hanging.close()
