"""The webhook as shipped, with the registry it judges: what benchmark 1, 1b, the soak and the
attack run against.

`webhook_stack` starts the real distribution registry on loopback (seeded with IMAGES), a
fresh CA and serving certificate (`image-policy certs`' own `issue`), and the webhook under
`gunicorn -c deploy/gunicorn.conf.py` (the settings of `policy.server.gunicorn_settings`: one
gthread worker with 16 threads, TLS), configured by the IMAGE_POLICY_* environment with the
benchmark's rules (`{host}` in them stands for the registry) and settings; optionally also
`bench/trivial_app.py` under the same gunicorn config, the ceiling of the stack. `counters`
reads the webhook's own Prometheus counters.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import requests

from bench import common
from policy import certs
from tests.support import images, procs
from tests.support.registry import RunningRegistry, free_port, start_registry

GUNICORN_CONF = common.ROOT / "deploy" / "gunicorn.conf.py"
TRIVIAL_APP = "bench.trivial_app:create_app()"

# (repository, layers) of the images the reviewed workloads use
IMAGES = (("shop/web", 4), ("shop/sidecar", 2), ("shop/tools", 1))

# --- gunicorn --------------------------------------------------------------------------------


def session(ca: Path) -> requests.Session:
    """A session trusting `ca` (the stack's servers), ignoring proxies from the environment."""
    s = requests.Session()
    s.trust_env = False
    s.verify = str(ca)
    return s


@dataclass
class Gunicorn:
    """A gunicorn arbiter started with the shipped config file."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ca: Path

    def session(self) -> requests.Session:
        return session(self.ca)

    def workers(self) -> list[int]:
        return procs.child_pids(self.process.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL after 15 s."""
        procs.stop(self.process, grace=15)


def start_gunicorn(
    name: str,
    directory: Path,
    env: Mapping[str, str],
    *,
    ca: Path,
    app: str | None = None,
    cpu: int | None = common.SERVER_CPU,
    wrapper: Sequence[str] = (),
    ready_seconds: float = 20.0,
) -> Gunicorn:
    """Run `gunicorn -c deploy/gunicorn.conf.py [app]` with `env` added to the environment
    (IMAGE_POLICY_*), pinned to `cpu`; return once `/readyz` answers 200 over TLS."""
    port = free_port()
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IMAGE_POLICY_")},
        "PYTHONPATH": str(common.ROOT),
        "IMAGE_POLICY_HOST": "127.0.0.1",
        "IMAGE_POLICY_PORT": str(port),
        **env,
    }
    command = [*wrapper, sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)]
    if app is not None:
        command.append(app)
    if cpu is not None:
        command = common.pinned(command, cpu)
    log_path = directory / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=common.ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Gunicorn(name, f"https://127.0.0.1:{port}", process, log_path, ca)
    try:
        with server.session() as s:
            procs.wait_ready(
                process, s, f"{server.url}/readyz", name=name, log=server.log, seconds=ready_seconds
            )
    except BaseException:
        server.stop()
        raise
    return server


def counters(server: Gunicorn, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of Prometheus counter `name` (`name_total`) from the server's /metrics,
    by label set."""
    with server.session() as s, s.get(f"{server.url}/metrics", timeout=5) as reply:
        reply.raise_for_status()
        text = reply.text
    out: dict[tuple[tuple[str, str], ...], float] = {}
    pattern = re.compile(rf"^{re.escape(name)}_total(?:\{{(.*)\}})? (\S+)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")))
            out[labels] = float(match.group(2))
    return out


# --- the stack -------------------------------------------------------------------------------


@dataclass
class Stack:
    """The registry with the benchmark's images, the webhook, and (optionally) the trivial app."""

    directory: Path
    registry: RunningRegistry
    refs: tuple[str, ...]
    webhook: Gunicorn
    trivial: Gunicorn | None
    ca: Path


def seed(url: str) -> None:
    """Push IMAGES (linux/amd64, non-root) as tag 1.0."""
    for repository, layers in IMAGES:
        images.push_image(
            url,
            repository,
            "1.0",
            layers=[images.blob_bytes(f"{repository}/{n}", 512) for n in range(layers)],
            config=images.image_config("linux/amd64", user="1000"),
        )


@contextmanager
def webhook_stack(
    *,
    rules: str,
    settings: str,
    trivial: bool = True,
    wrapper: Sequence[str] = (),
    ready_seconds: float = 20.0,
) -> Iterator[Stack]:
    """Start the registry (seeded), the webhook and optionally the trivial app, with a fresh
    CA and serving certificate (`image-policy certs`' own `issue`); stop all on exit.
    `wrapper` prefixes both gunicorn commands (benchmark 1b runs them under callgrind)."""
    with ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-hook-")))
        registry = start_registry(directory / "registry")
        stack.callback(registry.stop)
        common.pin(registry.process.pid, common.SERVER_CPU)
        seed(registry.url)
        bundle = certs.issue(
            "image-policy",
            "image-policy",
            now=datetime.now(UTC),
            days=1,
            extra_names=["127.0.0.1", "localhost"],
        )
        ca, cert, key = certs.write(bundle, directory / "tls")
        (directory / "rules").mkdir()
        (directory / "rules" / "rules.yaml").write_text(rules.format(host=registry.host))
        (directory / "settings.yaml").write_text(settings)
        tls = {"IMAGE_POLICY_TLS_CERT": str(cert), "IMAGE_POLICY_TLS_KEY": str(key)}
        webhook = start_gunicorn(
            "webhook",
            directory,
            {
                **tls,
                "IMAGE_POLICY_RULES": str(directory / "rules"),
                "IMAGE_POLICY_CONFIG": str(directory / "settings.yaml"),
            },
            ca=ca,
            wrapper=wrapper,
            ready_seconds=ready_seconds,
        )
        stack.callback(webhook.stop)
        ceiling = None
        if trivial:
            ceiling = start_gunicorn(
                "trivial",
                directory,
                tls,
                ca=ca,
                app=TRIVIAL_APP,
                wrapper=wrapper,
                ready_seconds=ready_seconds,
            )
            stack.callback(ceiling.stop)
        refs = tuple(f"{registry.host}/{repository}:1.0" for repository, _ in IMAGES)
        yield Stack(directory, registry, refs, webhook, ceiling, ca)
