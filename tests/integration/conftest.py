"""Fixtures for tests against a real distribution registry on loopback.

`registry` is session-scoped and seeded once; `registry_basic` requires htpasswd Basic
auth; `counting_proxy` sits in front of `registry` and counts requests (both the tests' proxy
and the benchmarks' relay), `proxy` is the tests' proxy alone and `referrers_proxy` adds the
OCI referrers API; `resolver` is an uncached resolver without credentials (modules that need
another define their own), `clock` a clock that moves only when told to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import bcrypt
import pytest
import requests

from policy.registry.auth import Authenticator
from policy.registry.client import AuthProvider, RegistryClient
from policy.registry.credentials import Credential, CredentialStore
from policy.resolver import RegistryResolver
from tests.support import images
from tests.support.clock import FakeClock
from tests.support.proxy import CountingProxy
from tests.support.referrers import ReferrersProxy
from tests.support.registry import (
    AMD64,
    BASIC_PASSWORD,
    BASIC_USER,
    BasicAuthenticator,
    BasicRegistry,
    SeededRegistry,
    seed,
    start_registry,
)
from tests.support.relay import LatencyRelay


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededRegistry]:
    """An anonymous registry seeded with Docker and OCI images and indexes."""
    running = start_registry(tmp_path_factory.mktemp("registry"))
    try:
        yield seed(running)
    finally:
        running.stop()


@pytest.fixture(scope="session")
def registry_basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BasicRegistry]:
    """A registry requiring Basic auth (bcrypt htpasswd)."""
    root = tmp_path_factory.mktemp("registry-basic")
    htpasswd = Path(root) / "htpasswd"
    hashed = bcrypt.hashpw(BASIC_PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"{BASIC_USER}:{hashed}\n")
    running = start_registry(
        root, auth={"htpasswd": {"realm": "image-policy-tests", "path": str(htpasswd)}}
    )
    try:
        pushed = images.build_image(
            running.url,
            "private/app",
            "1.0",
            layers=[images.blob_bytes("private", 400)],
            config=images.image_config(AMD64),
            auth=(BASIC_USER, BASIC_PASSWORD),
        )
        yield BasicRegistry(running.url, running.host, BASIC_USER, BASIC_PASSWORD, pushed)
    finally:
        running.stop()


@pytest.fixture(params=["http-proxy", "tcp-relay"])
def counting_proxy(
    request: pytest.FixtureRequest, registry: SeededRegistry
) -> Iterator[CountingProxy | LatencyRelay]:
    """A request-counting reverse proxy in front of `registry` (registry name: proxy.host):
    the tests' HTTP-level proxy, and the benchmarks' TCP relay — every test counting requests
    through it shows both count the same."""
    kind = CountingProxy if request.param == "http-proxy" else LatencyRelay
    with kind(registry.url) as proxy:
        yield proxy


@pytest.fixture
def proxy(registry: SeededRegistry) -> Iterator[CountingProxy]:
    with CountingProxy(registry.url) as counting:
        yield counting


@pytest.fixture
def referrers_proxy(registry: SeededRegistry) -> Iterator[ReferrersProxy]:
    with ReferrersProxy(registry.url) as counting:
        yield counting


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def resolver() -> Iterator[RegistryResolver]:
    r = RegistryResolver(RegistryClient(requests.Session(), authenticator=None), tag_ttl=300)
    yield r
    r.close()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


AuthFactory = Callable[[str, str, str], AuthProvider]


@pytest.fixture(params=["test-double", "real"])
def basic_authenticator(request: pytest.FixtureRequest, session: requests.Session) -> AuthFactory:
    """Build an authenticator from (registry, user, password): the Basic-only test double,
    and the real `policy.registry.auth.Authenticator` over a CredentialStore."""
    if request.param == "test-double":
        return lambda registry, user, password: BasicAuthenticator(user, password)

    def real(registry: str, user: str, password: str) -> AuthProvider:
        store = CredentialStore(explicit={registry: Credential(user, password)}, env={})
        return Authenticator(session, store)

    return real
