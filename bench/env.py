"""Loopback services for the registry benchmarks: the real distribution registry, optionally
behind token auth, with counting relays (adding latency) in front of it and its token realm.

Uses the integration tests' support code (tests/support), so the benchmarks run against the
same registry and token server the tests do. The registry process is pinned to the server CPU.
"""

from __future__ import annotations

import ipaddress
import json
import multiprocessing
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import requests
import requests.adapters

from bench import common
from policy import resolver as resolver_mod
from policy.registry.client import RequestEvent
from policy.registry.session import new_session
from policy.resolver import RegistryResolver
from policy.settings import Settings
from tests.support import images
from tests.support.registry import RunningRegistry, registry_binary, seed_storage, start_registry
from tests.support.relay import LatencyRelay
from tests.support.tokenserver import TokenServer

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
Seeder = Callable[[str], object]


class Unavailable(RuntimeError):
    """A benchmark's prerequisite (the registry binary) is missing."""


class _Resolvers:
    """Cold resolvers wired to the benchmark registry, recording every request they make."""

    root: Path
    events: list[RequestEvent]
    sessions: list[requests.Session]

    def settings(self, **overrides: Any) -> Settings:
        """Settings with an empty docker config (hermetic: the user's credentials are not read)."""
        config = self.root / "docker-config.json"
        if not config.exists():
            config.write_text(json.dumps({"auths": {}}))
        overrides.setdefault("egress_allow", LOOPBACK)  # the benchmark's registry and relay
        return Settings(docker_config=str(config), **overrides)

    def resolver(self, settings: Settings | None = None, **kwargs: Any) -> RegistryResolver:
        """A cold resolver wired by `policy.resolver.build` (the real Authenticator), recording
        every registry request it makes into `events`."""
        session = new_session()  # the session the shipped resolver uses
        self.sessions.append(session)
        return resolver_mod.build(
            settings or self.settings(), session=session, on_request=self.events.append, **kwargs
        )

    def close(self, resolver: RegistryResolver) -> None:
        """Stop a resolver's threads and close the HTTP sessions handed out."""
        resolver.close()
        while self.sessions:
            self.sessions.pop().close()


@dataclass
class Env(_Resolvers):
    """A running registry (behind `proxy`), its token realm (behind `token_proxy`, if any)."""

    root: Path
    registry: RunningRegistry
    proxy: LatencyRelay
    tokens: TokenServer | None
    token_proxy: LatencyRelay | None
    events: list[RequestEvent] = field(default_factory=list)
    sessions: list[requests.Session] = field(default_factory=list)

    @property
    def host(self) -> str:
        """The registry name images are referenced by (the proxy's `127.0.0.1:port`)."""
        return self.proxy.host

    def reset(self) -> None:
        self.proxy.reset()
        if self.token_proxy is not None:
            self.token_proxy.reset()
        self.events.clear()

    def counts(self) -> Counter[str]:
        """Requests seen since the last reset, by kind: head/get manifest, get blob, token,
        and (from the client's own events) how many of them were answered 401."""
        out = self.proxy.kinds()
        if self.token_proxy is not None:
            out["token"] += self.token_proxy.total()
        out["401"] += sum(1 for e in self.events if e.status == 401)
        return out


@contextmanager
def registry_env(seed: Seeder, *, token_auth: bool, latency: float) -> Iterator[Env]:
    """Seed an open registry with `seed(url)`, then serve the same storage (with token auth if
    asked) behind a counting relay adding `latency` seconds to every request; the token realm
    gets its own relay with the same latency.

    The relay (`tests.support.relay.LatencyRelay`) reads request heads and copies bytes; the
    tests' HTTP-level `CountingProxy` spent ~3 ms of CPU per request on the core the registry
    runs on, which a real network does not, and it showed in benchmark 2's ratio (see
    BENCHMARKS.md). Both count the same (the integration tests run through each)."""
    if registry_binary() is None:
        raise Unavailable("docker-registry is not installed (apt-get install docker-registry)")
    with ExitStack() as stack:
        root = Path(stack.enter_context(_tempdir()))
        served = seed_storage(root, seed)
        tokens = token_proxy = None
        auth = None
        if token_auth:
            tokens = stack.enter_context(TokenServer(root / "tokens"))
            token_proxy = stack.enter_context(
                LatencyRelay(f"http://127.0.0.1:{tokens.port}", latency=latency)
            )
            auth = tokens.auth_config()
            auth["token"]["realm"] = f"{token_proxy.url}/token"
        running = start_registry(served, auth=auth, log_level="warn")
        stack.callback(running.stop)
        common.pin(running.process.pid, common.SERVER_CPU)
        proxy = stack.enter_context(LatencyRelay(running.url, latency=latency))
        yield Env(root, running, proxy, tokens, token_proxy)


def _tempdir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="image-policy-bench-")


def push_small_image(url: str, repository: str, tag: str, *, seed: str, layers: int = 2) -> str:
    """Push a single-platform linux/amd64 image (non-root user) with `layers` small layers."""
    return images.push_image(
        url,
        repository,
        tag,
        layers=[images.blob_bytes(f"{seed}/{n}", 256) for n in range(layers)],
        config=images.image_config("linux/amd64", user="1000", labels={"seed": seed}),
    )


# --- the server side in its own process --------------------------------------------------------


class RemoteEnv(_Resolvers):
    """`registry_env` run in a child process pinned to the server CPU, so the registry, the
    proxies and the token server never compete with the resolver under test (which runs here,
    on the load CPU) for a CPU or for this process's GIL.

    Same interface as `Env` for the benchmarks: `host`, `settings()`, `resolver()`, `close()`,
    `reset()`, `counts()`.
    """

    def __init__(self, seed: Seeder, *, token_auth: bool, latency: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, seed, token_auth, latency), daemon=True
        )
        self._process.start()
        answer = self._conn.recv()
        if isinstance(answer, BaseException):
            self._process.join(5)
            raise answer
        self.host: str = answer
        self.root = Path(tempfile.mkdtemp(prefix="image-policy-bench-client-"))
        self.events: list[RequestEvent] = []
        self.sessions: list[requests.Session] = []

    def _ask(self, command: str) -> Any:
        self._conn.send(command)
        return self._conn.recv()

    def reset(self) -> None:
        self._ask("reset")
        self.events.clear()

    def counts(self) -> Counter[str]:
        out: Counter[str] = Counter(self._ask("counts"))
        out["401"] += sum(1 for e in self.events if e.status == 401)
        return out

    def server_cpu_seconds(self) -> float:
        """CPU time used so far by the server process (proxies, token server) and the registry
        it started — everything on the server CPU."""
        return common.cpu_seconds(self._process.pid, children=True)

    def stop(self) -> None:
        self._ask("stop")
        self._process.join(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RemoteEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(conn: Connection, seed: Seeder, token_auth: bool, latency: float) -> None:
    """The child process: start the services, then answer commands until `stop`."""
    common.pin(0, common.SERVER_CPU)
    try:
        with registry_env(seed, token_auth=token_auth, latency=latency) as env:
            conn.send(env.host)
            while True:
                command = conn.recv()
                if command == "reset":
                    env.reset()
                    conn.send(None)
                elif command == "counts":
                    counts = env.counts()
                    del counts["401"]
                    conn.send(dict(counts))
                else:
                    conn.send(None)
                    return
    except Exception as exc:
        conn.send(exc)
