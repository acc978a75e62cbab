"""Token authentication end to end: a real distribution registry (`auth: token`) trusting the
loopback token server of tests/support/tokenserver.py, driven through RegistryClient and the
real Authenticator."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from policy.deadline import Deadline
from policy.errors import RegistryAuthError
from policy.registry import auth
from policy.registry.client import RegistryClient
from policy.registry.credentials import Credential, CredentialStore
from tests.support import images
from tests.support.clock import FakeClock
from tests.support.registry import RunningRegistry, require_registry, start_registry
from tests.support.tokenserver import TokenServer

pytestmark = pytest.mark.registry

USER = "alice"
PASSWORD = "t0ken-auth-password-91c2"
REPO = "private/app"
TAG = "1.0"
SCOPE = f"repository:{REPO}:pull"


@dataclass(frozen=True)
class TokenRegistry:
    """A registry with token auth, its token server, and the image pushed to it."""

    running: RunningRegistry
    tokens: TokenServer
    digest: str

    @property
    def host(self) -> str:
        return self.running.host


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    """Seed an image in an open registry, then serve the same storage behind token auth."""
    require_registry()
    root = tmp_path_factory.mktemp("token-registry")
    seeding = start_registry(root / "seed")
    try:
        digest = images.push_image(
            seeding.url,
            REPO,
            TAG,
            layers=[images.blob_bytes("token-auth", 300)],
            config=images.image_config("linux/amd64"),
        )
    finally:
        seeding.stop()
    shutil.copytree(root / "seed" / "storage", root / "served" / "storage")
    with TokenServer(root / "tokens", users={USER: PASSWORD}, expires_in=300) as tokens:
        running = start_registry(root / "served", auth=tokens.auth_config())
        try:
            yield TokenRegistry(running, tokens, digest)
        finally:
            running.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def store_for(host: str, credential: Credential) -> CredentialStore:
    return CredentialStore(explicit={host: credential})


def claims_of(header: str) -> dict[str, Any]:
    token = header.removeprefix("Bearer ")
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def head(client: RegistryClient, registry: TokenRegistry) -> str:
    return client.head_manifest(registry.host, REPO, TAG, deadline=Deadline(10.0)).digest


def test_registry_challenges_with_the_token_realm(
    token_registry: TokenRegistry, session: requests.Session
) -> None:
    """Without a token the registry answers 401 with a Bearer challenge for our token server."""
    url = f"{token_registry.running.url}/v2/{REPO}/manifests/{TAG}"
    with session.get(url, timeout=5) as response:
        assert response.status_code == 401
        [challenge] = auth.parse_challenges(response.headers["WWW-Authenticate"])
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": token_registry.tokens.url,
        "service": token_registry.tokens.service,
        "scope": SCOPE,
    }


@pytest.mark.parametrize("credential", [None, Credential(USER, PASSWORD)], ids=["anon", "alice"])
def test_jwt_accepted_for_manifest_get(
    token_registry: TokenRegistry, session: requests.Session, credential: Credential | None
) -> None:
    """The Authenticator's JWT (anonymous or as alice) opens GET /v2/<repo>/manifests/<tag>."""
    credentials = store_for(token_registry.host, credential) if credential else CredentialStore()
    authenticator = auth.Authenticator(session, credentials)
    url = f"{token_registry.running.url}/v2/{REPO}/manifests/{TAG}"
    accept = {"Accept": images.DOCKER_MANIFEST}
    before = len(token_registry.tokens.token_requests())
    with session.get(url, headers=accept, timeout=5) as response:
        assert response.status_code == 401
        www = response.headers["WWW-Authenticate"]
    value = authenticator.challenge(token_registry.host, token_registry.host, www, SCOPE, timeout=5)
    with session.get(url, headers={**accept, "Authorization": value}, timeout=5) as response:
        assert response.status_code == 200, response.text
        assert response.headers["Docker-Content-Digest"] == token_registry.digest
    [request] = token_registry.tokens.token_requests()[before:]
    assert request.username == (credential.username if credential else None)
    claims = claims_of(value)
    assert claims["sub"] == (USER if credential else "")
    assert claims["access"] == [{"type": "repository", "name": REPO, "actions": ["pull"]}]


def test_client_anonymous_pull(token_registry: TokenRegistry, session: requests.Session) -> None:
    """RegistryClient + Authenticator resolve a digest through an anonymous token."""
    client = RegistryClient(session, authenticator=auth.Authenticator(session, CredentialStore()))
    before = len(token_registry.tokens.token_requests())
    assert head(client, token_registry) == token_registry.digest
    [request] = token_registry.tokens.token_requests()[before:]
    assert request.authorization is None
    assert request.scopes == [SCOPE]


def test_client_credentialed_pull_and_cache(
    token_registry: TokenRegistry, session: requests.Session
) -> None:
    """With credentials the token is fetched once with Basic auth, then served from cache."""
    clock = FakeClock()
    authenticator = auth.Authenticator(
        session, store_for(token_registry.host, Credential(USER, PASSWORD)), clock=clock
    )
    client = RegistryClient(session, authenticator=authenticator)
    before = len(token_registry.tokens.token_requests())
    assert head(client, token_registry) == token_registry.digest
    assert head(client, token_registry) == token_registry.digest
    manifest = client.get_manifest(token_registry.host, REPO, TAG, deadline=Deadline(10.0))
    assert manifest.digest == token_registry.digest
    fetched = token_registry.tokens.token_requests()[before:]
    assert [(r.username, r.password) for r in fetched] == [(USER, PASSWORD)]


def test_expired_token_is_refetched(
    token_registry: TokenRegistry, session: requests.Session
) -> None:
    """Past expires_in (on the injected clock) a new token is fetched, and it works."""
    clock = FakeClock()
    authenticator = auth.Authenticator(session, CredentialStore(), clock=clock)
    client = RegistryClient(session, authenticator=authenticator)
    before = len(token_registry.tokens.token_requests())
    assert head(client, token_registry) == token_registry.digest
    clock.now += 299 - auth.EXPIRY_MARGIN
    assert head(client, token_registry) == token_registry.digest
    assert len(token_registry.tokens.token_requests()) - before == 1
    clock.now += 2
    assert head(client, token_registry) == token_registry.digest
    assert len(token_registry.tokens.token_requests()) - before == 2


def test_wrong_password_is_a_clear_error(
    token_registry: TokenRegistry, session: requests.Session
) -> None:
    """A wrong password: RegistryAuthError naming the user and the registry, no secret."""
    wrong = "not-the-password-5521"
    authenticator = auth.Authenticator(
        session, store_for(token_registry.host, Credential(USER, wrong))
    )
    client = RegistryClient(session, authenticator=authenticator)
    with pytest.raises(RegistryAuthError) as caught:
        head(client, token_registry)
    message = str(caught.value)
    assert f"rejected the credentials for user '{USER}'" in message
    assert "incorrect username or password" in message
    assert token_registry.host in message
    assert wrong not in message
    assert base64.b64encode(f"{USER}:{wrong}".encode()).decode() not in message


def test_realm_not_trusted_for_another_host(
    token_registry: TokenRegistry, session: requests.Session
) -> None:
    """The same challenge seen from a registry on another host is refused, nothing is sent."""
    url = f"{token_registry.running.url}/v2/{REPO}/manifests/{TAG}"
    with session.get(url, timeout=5) as response:
        www = response.headers["WWW-Authenticate"]
    authenticator = auth.Authenticator(
        session, store_for("registry.example.com", Credential(USER, PASSWORD))
    )
    before = len(token_registry.tokens.requests)
    with pytest.raises(RegistryAuthError, match=r"refusing token realm 127\.0\.0\.1"):
        authenticator.challenge(
            "registry.example.com", "registry.example.com", www, SCOPE, timeout=5
        )
    assert len(token_registry.tokens.requests) == before
