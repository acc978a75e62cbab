"""Run Debian's `docker-registry` (distribution 2.x) on loopback for integration tests."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from policy.errors import RegistryAuthError
from tests.support import binaries, images, procs

BINARY = "/usr/bin/docker-registry"
MISSING = (
    "docker-registry not installed: apt-get install docker-registry; these tests are required in CI"
)


def registry_binary() -> str | None:
    """Path of the distribution registry binary, or None when it is not installed."""
    return binaries.find(BINARY, "docker-registry")


def require_registry() -> str:
    """The registry binary; skip loudly when missing (fail when CI=true)."""
    return binaries.require(BINARY, "docker-registry", MISSING)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class RunningRegistry:
    """A registry process: `url` is its base URL, `host` the `127.0.0.1:port` registry name."""

    url: str
    host: str
    process: subprocess.Popen[bytes]
    log_path: Path
    config_path: Path

    def log(self) -> str:
        """The registry's log so far (for failure messages)."""
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Terminate the process and wait for it."""
        procs.stop(self.process)


def start_registry(
    tmp_path: Path,
    *,
    auth: dict[str, Any] | None = None,
    tls: tuple[Path, Path] | None = None,
    proxy_remoteurl: str | None = None,
    log_level: str = "info",
) -> RunningRegistry:
    """Start a registry storing under `tmp_path` on 127.0.0.1:<free port>.

    `auth` is the config's `auth` section as is (htpasswd or token), `tls` a
    (certificate, key) pair, `proxy_remoteurl` makes it a pull-through cache, `log_level` the
    registry's own (the tests keep "info" for failure messages; the benchmarks say "warn": a
    log line per request costs the registry ~0.8 ms of CPU here, on the core it shares with
    the benchmark's servers). Returns once `/v2/` answers (at most 10 s).
    """
    binary = require_registry()
    port = free_port()
    storage = tmp_path / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    config = _config(
        storage, port, auth=auth, tls=tls, proxy_remoteurl=proxy_remoteurl, log_level=log_level
    )
    config_path = tmp_path / "config.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = tmp_path / "registry.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "serve", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    scheme = "https" if tls is not None else "http"
    running = RunningRegistry(
        url=f"{scheme}://127.0.0.1:{port}",
        host=f"127.0.0.1:{port}",
        process=process,
        log_path=log_path,
        config_path=config_path,
    )
    try:
        _wait_healthy(running, verify=str(tls[0]) if tls else True)
    except BaseException:
        running.stop()
        raise
    return running


def _config(
    storage: Path,
    port: int,
    *,
    auth: dict[str, Any] | None,
    tls: tuple[Path, Path] | None,
    proxy_remoteurl: str | None,
    log_level: str,
) -> dict[str, Any]:
    """The registry's config.yml (see `start_registry`)."""
    http: dict[str, Any] = {
        "addr": f"127.0.0.1:{port}",
        "secret": "image-policy-tests",
        "headers": {"X-Content-Type-Options": ["nosniff"]},
    }
    if tls is not None:
        http["tls"] = {"certificate": str(tls[0]), "key": str(tls[1])}
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": log_level, "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": http,
    }
    if auth is not None:
        config["auth"] = auth
    if proxy_remoteurl is not None:
        config["proxy"] = {"remoteurl": proxy_remoteurl}
    return config


def seed_storage(root: Path, seed: Callable[[str], object]) -> Path:
    """Run an open registry on `root`/seed, `seed(url)` it, stop it, and copy its storage to
    `root`/served; return that directory, for a registry (with auth, say) to serve."""
    seeding = start_registry(root / "seed")
    try:
        seed(seeding.url)
    finally:
        seeding.stop()
    shutil.copytree(root / "seed" / "storage", root / "served" / "storage")
    return root / "served"


def _wait_healthy(running: RunningRegistry, *, verify: bool | str, seconds: float = 10.0) -> None:
    end = time.monotonic() + seconds
    with requests.Session() as session:
        while time.monotonic() < end:
            if running.process.poll() is not None:
                raise RuntimeError(f"docker-registry exited early:\n{running.log()}")
            try:
                with session.get(f"{running.url}/v2/", timeout=1, verify=verify) as response:
                    if response.status_code in (200, 401):
                        return
            except requests.RequestException:
                pass
            time.sleep(0.05)
    raise RuntimeError(f"docker-registry did not answer /v2/ within {seconds} s:\n{running.log()}")


# --- seeded registries and a Basic-auth test double ------------------------------------

AMD64 = "linux/amd64"
ARM64 = "linux/arm64/v8"
BASIC_USER = "alice"
BASIC_PASSWORD = "s3cret-basic-password-7f3a"


@dataclass(frozen=True)
class SeededRegistry:
    """The anonymous test registry and what was pushed to it.

    `docker/app:single` and `oci/app:single` are single-platform linux/amd64 images;
    `docker/app:multi` (a Docker manifest list) and `oci/app:multi` (an OCI index) hold
    linux/amd64 + linux/arm64/v8 and one attestation entry per platform.
    """

    url: str
    host: str
    docker_image: images.PushedImage
    oci_image: images.PushedImage
    docker_platforms: dict[str, images.PushedImage]
    oci_platforms: dict[str, images.PushedImage]
    docker_list: images.PushedIndex
    oci_index: images.PushedIndex


def seed(running: RunningRegistry) -> SeededRegistry:
    """Push the images SeededRegistry describes."""
    url = running.url

    def image(repo: str, tag: str, platform: str, media: images.Media) -> images.PushedImage:
        seed = f"{repo}/{tag}/{platform}"
        return images.build_image(
            url,
            repo,
            tag,
            layers=[images.blob_bytes(seed + "/0", 700), images.blob_bytes(seed + "/1", 300)],
            config=images.image_config(platform, user="1000", labels={"seed": seed}),
            media=media,
        )

    docker_platforms = {
        p: image("docker/app", p.replace("/", "-"), p, "docker") for p in (AMD64, ARM64)
    }
    oci_platforms = {p: image("oci/app", p.replace("/", "-"), p, "oci") for p in (AMD64, ARM64)}
    return SeededRegistry(
        url=url,
        host=running.host,
        docker_image=image("docker/app", "single", AMD64, "docker"),
        oci_image=image("oci/app", "single", AMD64, "oci"),
        docker_platforms=docker_platforms,
        oci_platforms=oci_platforms,
        docker_list=images.push_index(
            url, "docker/app", "multi", [(i.digest, p) for p, i in docker_platforms.items()]
        ),
        oci_index=images.push_index(
            url,
            "oci/app",
            "multi",
            [(i.digest, p) for p, i in oci_platforms.items()],
            media="oci",
        ),
    )


@dataclass(frozen=True)
class BasicRegistry:
    """A registry behind htpasswd Basic auth holding `private/app:1.0`."""

    url: str
    host: str
    user: str
    password: str
    image: images.PushedImage


class BasicAuthenticator:
    """Test double for policy.registry.auth.Authenticator answering only Basic challenges.

    Counts calls so tests can check the client's use of the interface.
    """

    def __init__(self, user: str, password: str) -> None:
        self._value = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._known: set[tuple[str, str]] = set()
        self.challenges = 0

    def header(
        self, registry: str, host: str, scope: str, *, timeout: float | None = None
    ) -> str | None:
        return self._value if (registry, host) in self._known else None

    def challenge(
        self, registry: str, host: str, www_authenticate: str, scope: str, *, timeout: float
    ) -> str:
        self.challenges += 1
        if not www_authenticate.lower().startswith("basic"):
            raise RegistryAuthError("test authenticator answers Basic only", registry=registry)
        self._known.add((registry, host))
        return self._value
