"""Authentication costs the protocol's minimum number of requests, against the real registry.

N images in R repositories behind Bearer token auth cost 2N + R + 1 requests (registry and
token realm together): per image GET manifest by tag + GET config (what the resolver asks of a
tag it has never seen), one token per repository scope, and one 401 per registry to learn the
realm. The registry's requests are counted by a
proxy in front of it, the token realm's by the token server's own records, and the 401s from
the client's request events.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
import requests

from policy.deadline import Deadline
from policy.errors import ManifestNotFound, RegistryAuthError
from policy.registry import media
from policy.registry.auth import Authenticator
from policy.registry.client import RegistryClient, RequestEvent
from policy.registry.credentials import Credential, CredentialStore
from tests.support import images
from tests.support.proxy import CountingProxy
from tests.support.registry import (
    BasicRegistry,
    RunningRegistry,
    require_registry,
    start_registry,
)
from tests.support.tokenserver import RecordedRequest, Reply, TokenServer

pytestmark = pytest.mark.registry

IMAGES = 6
LATENCY = 0.05  # per proxied request, so that concurrent requests really overlap
APP = "economy/app{}"  # IMAGES repositories, tag 1.0
SHARED = "economy/shared"  # one repository, tags v0..v{IMAGES-1}


def scope_of(repository: str) -> str:
    return f"repository:{repository}:pull"


@dataclass
class Rejections:
    """Token server hook: the next `pending[scope]` tokens for a scope are already expired.

    The JSON still says `expires_in: 300`, so the client caches the token; the registry then
    rejects it (401, invalid_token) — a cached token rejected later, as after a key rotation.
    """

    server: TokenServer | None = None
    pending: dict[str, int] = field(default_factory=dict)

    def __call__(self, request: RecordedRequest) -> Reply | None:
        [scope] = request.scopes or [""]
        if self.server is None or self.pending.get(scope, 0) <= 0:
            return None
        self.pending[scope] -= 1
        token = self.server.issue("", [], lifetime=-120)
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        return 200, {"Content-Type": "application/json"}, body


@dataclass(frozen=True)
class Registries:
    """The same images served openly and behind token auth (with its token server)."""

    open: RunningRegistry
    token: RunningRegistry
    tokens: TokenServer
    rejections: Rejections


@pytest.fixture(scope="module")
def registries(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registries]:
    """Seed single-platform images in an open registry, then serve a copy behind token auth."""
    require_registry()
    root = tmp_path_factory.mktemp("auth-economy")
    opened = start_registry(root / "open")
    try:
        for i in range(IMAGES):
            for repository, tag in ((APP.format(i), "1.0"), (SHARED, f"v{i}")):
                images.push_image(
                    opened.url,
                    repository,
                    tag,
                    layers=[images.blob_bytes(f"economy/{repository}/{tag}", 200)],
                    config=images.image_config("linux/amd64", labels={"tag": tag}),
                )
        shutil.copytree(root / "open" / "storage", root / "token" / "storage")
        rejections = Rejections()
        with TokenServer(root / "tokens", respond=rejections) as tokens:
            rejections.server = tokens
            token = start_registry(root / "token", auth=tokens.auth_config())
            try:
                yield Registries(opened, token, tokens, rejections)
            finally:
                token.stop()
    finally:
        opened.stop()


@dataclass
class Counted:
    """A fresh client (empty token cache) to a registry behind a counting proxy."""

    client: RegistryClient
    proxy: CountingProxy
    tokens: TokenServer | None
    events: list[RequestEvent]
    tokens_before: int

    @property
    def host(self) -> str:
        return self.proxy.host

    def token_requests(self) -> list[RecordedRequest]:
        if self.tokens is None:
            return []
        return self.tokens.token_requests()[self.tokens_before :]

    def unauthorized(self) -> int:
        return sum(1 for e in self.events if e.status == 401)

    def total(self) -> int:
        """Requests the registry and the token realm received."""
        return self.proxy.total() + len(self.token_requests())


CountedFactory = Callable[[RunningRegistry], Counted]


@pytest.fixture
def counted(registries: Registries) -> Iterator[CountedFactory]:
    """Build a Counted for one of the registries; proxies are closed afterwards."""
    proxies: list[CountingProxy] = []
    session = requests.Session()
    registries.rejections.pending.clear()

    def build(running: RunningRegistry) -> Counted:
        proxy = CountingProxy(running.url, latency=LATENCY)
        proxies.append(proxy)
        events: list[RequestEvent] = []
        authenticator = Authenticator(session, CredentialStore(env={}))
        client = RegistryClient(session, authenticator=authenticator, on_request=events.append)
        tokens = registries.tokens if running is registries.token else None
        before = len(tokens.token_requests()) if tokens is not None else 0
        return Counted(client, proxy, tokens, events, before)

    yield build
    for proxy in proxies:
        proxy.close()
    session.close()


def resolve(counted: Counted, repository: str, tag: str) -> None:
    """What a rule reading layers and the user costs for a new tag: GET by tag, GET config."""
    deadline = Deadline(20.0)
    manifest = counted.client.get_manifest(counted.host, repository, tag, deadline=deadline)
    assert isinstance(manifest.document, media.ImageManifest)
    counted.client.get_config(counted.host, repository, manifest.document.config, deadline=deadline)


def run_concurrently(jobs: list[Callable[[], None]]) -> None:
    """Start every job at once (a barrier) and re-raise the first failure."""
    barrier = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def work(job: Callable[[], None]) -> None:
        try:
            barrier.wait(timeout=10)
            job()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    if errors:
        raise errors[0]


def layout(repositories: int) -> list[tuple[str, str]]:
    """IMAGES references spread over `repositories` repositories (1 or IMAGES)."""
    if repositories == 1:
        return [(SHARED, f"v{i}") for i in range(IMAGES)]
    return [(APP.format(i), "1.0") for i in range(repositories)]


@pytest.mark.parametrize("concurrent", [True, False], ids=["concurrent", "one-by-one"])
@pytest.mark.parametrize("repositories", [1, IMAGES], ids=["1-repository", "6-repositories"])
def test_token_auth_costs_the_protocol_minimum(
    registries: Registries, counted: CountedFactory, repositories: int, concurrent: bool
) -> None:
    """N images in R repositories cost exactly 2N + R + 1 requests, of which one 401."""
    target = counted(registries.token)
    refs = layout(repositories)
    jobs = [lambda r=r, t=t: resolve(target, r, t) for r, t in refs]
    if concurrent:
        run_concurrently(jobs)
    else:
        for job in jobs:
            job()
    n = len(refs)
    counts = target.proxy.counts()
    by_tag = sum(v for (method, path), v in counts.items() if "/manifests/" in path)
    assert by_tag == n + 1  # the first one answered 401, then asked again with a token
    assert target.unauthorized() == 1
    assert sorted(s for r in target.token_requests() for s in r.scopes) == sorted(
        {scope_of(r) for r, _ in refs}
    )
    assert target.total() == 2 * n + repositories + 1


def test_concurrent_first_contact_meets_one_401(
    registries: Registries, counted: CountedFactory
) -> None:
    """Requests racing to a registry not contacted yet: one learns the challenge, none else
    is answered 401, each new scope gets its token before its request."""
    target = counted(registries.token)
    repositories = [APP.format(i) for i in range(IMAGES)]
    run_concurrently(
        [
            lambda r=r: (
                target.client.head_manifest(target.host, r, "1.0", deadline=Deadline(20.0)).digest
            )
            for r in repositories
        ]
    )
    assert target.unauthorized() == 1
    assert sorted(s for r in target.token_requests() for s in r.scopes) == sorted(
        scope_of(r) for r in repositories
    )
    assert target.proxy.total() == IMAGES + 1


@pytest.mark.parametrize("concurrent", [True, False], ids=["concurrent", "one-by-one"])
def test_open_registry_sees_no_extra_requests(
    registries: Registries, counted: CountedFactory, concurrent: bool
) -> None:
    """Without auth the first-contact gate and the authenticator add no request at all."""
    target = counted(registries.open)
    refs = layout(IMAGES)
    jobs = [lambda r=r, t=t: resolve(target, r, t) for r, t in refs]
    if concurrent:
        run_concurrently(jobs)
    else:
        for job in jobs:
            job()
    counts = target.proxy.counts()
    assert sum(v for (_, path), v in counts.items() if "/manifests/" in path) == IMAGES
    assert target.proxy.total() == 2 * IMAGES
    assert target.unauthorized() == 0


def test_rejected_cached_token_is_refetched_once(
    registries: Registries, counted: CountedFactory
) -> None:
    """A cached token the registry rejects is fetched once more, and the request succeeds."""
    target = counted(registries.token)
    first, second = APP.format(0), APP.format(1)
    resolve(target, first, "1.0")  # learns the realm
    registries.rejections.pending[scope_of(second)] = 1
    before_tokens = len(target.token_requests())
    before_gets = target.proxy.counts().get(("GET", f"/v2/{second}/manifests/1.0"), 0)
    resolve(target, second, "1.0")
    assert [r.scopes for r in target.token_requests()[before_tokens:]] == [
        [scope_of(second)],  # fetched before the request, then rejected by the registry
        [scope_of(second)],  # the one refetch
    ]
    assert target.proxy.counts()[("GET", f"/v2/{second}/manifests/1.0")] - before_gets == 2
    assert target.unauthorized() == 2  # first contact, and the rejected token


def test_rejected_refetch_is_not_fetched_again(
    registries: Registries, counted: CountedFactory
) -> None:
    """When the refetched token is rejected too, the request fails: no third token, no loop."""
    target = counted(registries.token)
    first, second = APP.format(0), APP.format(1)
    resolve(target, first, "1.0")
    registries.rejections.pending[scope_of(second)] = 2
    before_tokens = len(target.token_requests())
    with pytest.raises(RegistryAuthError, match="refused the credentials"):
        target.client.head_manifest(target.host, second, "1.0", deadline=Deadline(20.0))
    assert len(target.token_requests()) - before_tokens == 2
    assert target.unauthorized() == 3


def test_proactive_token_needs_a_known_challenge(registries: Registries) -> None:
    """`header(timeout=)` fetches a token for a new scope only once the host's Bearer challenge
    is known; without `timeout` it hands out only what is cached."""
    tokens = registries.tokens
    host = registries.token.host
    challenge = f'Bearer realm="{tokens.url}",service="{tokens.service}",scope="{scope_of(SHARED)}"'
    with requests.Session() as session:
        authenticator = Authenticator(session, CredentialStore(env={}))
        before = len(tokens.token_requests())
        assert authenticator.header(host, host, scope_of(SHARED), timeout=5) is None
        assert len(tokens.token_requests()) == before
        answered = authenticator.challenge(host, host, challenge, scope_of(SHARED), timeout=5)
        other = scope_of(APP.format(0))
        assert authenticator.header(host, host, other) is None  # cache only
        fetched = authenticator.header(host, host, other, timeout=5)
        assert fetched is not None and fetched != answered
        assert authenticator.header(host, host, other, timeout=5) == fetched
        assert authenticator.header(host, "127.0.0.1:1", other, timeout=5) is None  # other host
        assert [r.scopes for r in tokens.token_requests()[before:]] == [
            [scope_of(SHARED)],
            [other],
        ]


def test_refused_realm_is_never_contacted_proactively(registries: Registries) -> None:
    """A challenge whose realm is refused is not remembered: nothing goes to that realm later."""
    tokens = registries.tokens
    challenge = f'Bearer realm="{tokens.url}",service="{tokens.service}"'
    foreign = "registry.example.com"
    with requests.Session() as session:
        authenticator = Authenticator(session, CredentialStore(env={}))
        before = len(tokens.requests)
        with pytest.raises(RegistryAuthError, match="refusing token realm"):
            authenticator.challenge(foreign, foreign, challenge, scope_of(SHARED), timeout=5)
        assert authenticator.header(foreign, foreign, scope_of(SHARED), timeout=5) is None
        assert len(tokens.requests) == before


def test_basic_credentials_are_sent_proactively_after_one_challenge(
    registry_basic: BasicRegistry,
) -> None:
    """Once a host asked for Basic, a request for another repository carries the credentials
    from the start (here a 404, not a 401)."""
    events: list[RequestEvent] = []
    store = CredentialStore(
        explicit={registry_basic.host: Credential(registry_basic.user, registry_basic.password)},
        env={},
    )
    with requests.Session() as session:
        client = RegistryClient(
            session, authenticator=Authenticator(session, store), on_request=events.append
        )
        deadline = Deadline(10.0)
        client.head_manifest(registry_basic.host, "private/app", "1.0", deadline=deadline)
        with pytest.raises(ManifestNotFound):
            client.head_manifest(registry_basic.host, "private/other", "1.0", deadline=deadline)
    assert [(e.path.split("/")[3], e.status) for e in events] == [
        ("app", 401),
        ("app", 200),
        ("other", 404),
    ]
