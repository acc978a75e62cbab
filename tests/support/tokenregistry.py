"""The real registry behind Bearer token auth, both behind counting latency relays: what a
cluster of replicas sharing one Redis must ask only once (tests and `bench shared`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import images
from tests.support.registry import RunningRegistry, seed_storage, start_registry
from tests.support.relay import LatencyRelay
from tests.support.tokenserver import TokenServer


@dataclass
class TokenRegistry:
    """`host` is the registry relay's `127.0.0.1:port` (what images are referenced by)."""

    registry: RunningRegistry
    relay: LatencyRelay
    tokens: TokenServer
    token_relay: LatencyRelay

    @property
    def host(self) -> str:
        return self.relay.host

    def counts(self) -> Counter[str]:
        """Requests since the last `reset()`: `GET manifest`, `HEAD manifest`, `GET blob`,
        `token`, and any other by method and path."""
        out = self.relay.kinds()
        out["token"] += self.token_relay.total()
        return out

    def reset(self) -> None:
        self.relay.reset()
        self.token_relay.reset()


def push(url: str, repository: str, tag: str) -> str:
    """A single-platform linux/amd64 image (2 small layers, user 1000); its digest."""
    return images.push_image(
        url,
        repository,
        tag,
        layers=[images.blob_bytes(f"{repository}/{tag}/{n}", 256) for n in range(2)],
        config=images.image_config("linux/amd64", user="1000", labels={"tag": tag}),
    )


@contextmanager
def token_registry(
    root: Path, seed: Callable[[str], object], *, latency: float = 0.05
) -> Iterator[TokenRegistry]:
    """Seed an open registry with `seed(url)`, then serve its storage behind token auth, the
    registry and its token realm each behind a relay adding `latency` per request."""
    with ExitStack() as stack:
        served = seed_storage(root, seed)
        tokens = stack.enter_context(TokenServer(root / "tokens"))
        token_relay = stack.enter_context(
            LatencyRelay(f"http://127.0.0.1:{tokens.port}", latency=latency)
        )
        auth = tokens.auth_config()
        auth["token"]["realm"] = f"{token_relay.url}/token"
        running = start_registry(served, auth=auth)
        stack.callback(running.stop)
        relay = stack.enter_context(LatencyRelay(running.url, latency=latency))
        yield TokenRegistry(running, relay, tokens, token_relay)
