"""RegistryClient against a registry that misbehaves on purpose (tests/support/hostile.py).

Every case must end with an error of the right class, fast, and without a credential in
any message or reaching the foreign host.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest
import requests

from policy.deadline import Deadline
from policy.errors import (
    IntegrityError,
    ManifestNotFound,
    RateLimited,
    RegistryAuthError,
    RegistryError,
    RegistryUnavailable,
    UnsupportedManifest,
)
from policy.registry import media
from policy.registry.client import Limits, RateLimit, RegistryClient, RegistryConfig, RequestEvent
from tests.support.hostile import GOOD_DIGEST, GOOD_LAYER, HostileServer
from tests.support.registry import free_port

SECRET = "hunter2-very-secret-token-5be1"
BASIC_PASSWORD = "pa55-word-never-shown-0c7d"


class StaticAuthenticator:
    """Test double for policy.registry.auth.Authenticator that always holds a credential."""

    def __init__(self, value: str) -> None:
        self.value = value
        self.challenged: list[str] = []

    def header(
        self, registry: str, host: str, scope: str, *, timeout: float | None = None
    ) -> str | None:
        return self.value

    def challenge(
        self, registry: str, host: str, www_authenticate: str, scope: str, *, timeout: float
    ) -> str:
        self.challenged.append(www_authenticate)
        return self.value


BEARER = f"Bearer {SECRET}"
BASIC = "Basic " + base64.b64encode(f"bob:{BASIC_PASSWORD}".encode()).decode()


@pytest.fixture
def foreign() -> Iterator[HostileServer]:
    with HostileServer("127.0.0.2") as server:
        yield server


@pytest.fixture
def hostile(foreign: HostileServer) -> Iterator[HostileServer]:
    """The misbehaving registry; after each test no Authorization reached the foreign host."""
    started = time.monotonic()
    with HostileServer("127.0.0.1", foreign=foreign) as server:
        yield server
    assert foreign.authorizations() == []
    assert time.monotonic() - started < 3.0


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.trust_env = False
        yield s


class Sleeps(list[float]):
    """An injected sleep that records the pauses instead of taking them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client(
    session: requests.Session,
    *,
    auth: str | None = BEARER,
    sleeps: Sleeps | None = None,
    events: list[RequestEvent] | None = None,
    **options: object,
) -> RegistryClient:
    return RegistryClient(
        session,
        authenticator=StaticAuthenticator(auth) if auth else None,
        sleep=sleeps if sleeps is not None else Sleeps(),
        request_timeout=1.0,
        on_request=events.append if events is not None else None,
        **options,  # type: ignore[arg-type]
    )


def short() -> Deadline:
    return Deadline(1.5)


def assert_no_secret(error: BaseException) -> None:
    text = str(error)
    for secret in (SECRET, BASIC_PASSWORD, BASIC, BEARER, BASIC.split(" ")[1]):
        assert secret not in text


# --- integrity ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "reference", "error", "message"),
    [
        ("digest-mismatch", "latest", IntegrityError, "digest mismatch: expected sha256:"),
        ("good", "sha256:" + "a" * 64, IntegrityError, "digest mismatch: expected sha256:a{64}"),
        ("wrong-media-type", "latest", IntegrityError, "media type mismatch: Content-Type is"),
        ("oversized", "latest", IntegrityError, "body of 1073741824 bytes is over the limit"),
        ("endless", "latest", IntegrityError, "body is over the limit of 4194304 bytes"),
        ("huge-index", "latest", IntegrityError, "body is over the limit of 4194304 bytes"),
        ("many-entries", "latest", IntegrityError, "index has 1001 entries, more than the limit"),
        ("malformed-json", "latest", IntegrityError, "malformed manifest: not JSON"),
        ("deep-json", "latest", IntegrityError, "manifest: JSON nested 100000 levels deep, more"),
        ("deep-errors", "latest", ManifestNotFound, r"manifest unknown: \S*/deep-errors:latest$"),
        ("malformed-fields", "latest", IntegrityError, "malformed manifest: .*config.digest"),
        ("schema1", "latest", UnsupportedManifest, "unsupported \\(deprecated schema1\\)"),
        ("not-found", "latest", ManifestNotFound, "manifest unknown: .*MANIFEST_UNKNOWN"),
        ("forbidden", "latest", RegistryAuthError, "access denied .*DENIED"),
        ("teapot", "latest", RegistryError, "answered HTTP 418$"),
        ("redirect-loop", "latest", RegistryError, "more than 5 redirects"),
        ("redirect-file", "latest", RegistryError, "refusing redirect to a non-http"),
        ("retry-after-long", "latest", RateLimited, "pull rate limit reached"),
    ],
)
def test_hostile_manifest_answers_raise_the_right_error(
    hostile: HostileServer,
    session: requests.Session,
    scenario: str,
    reference: str,
    error: type[RegistryError],
    message: str,
) -> None:
    with pytest.raises(error, match=message) as caught:
        client(session).get_manifest(hostile.host, scenario, reference, deadline=short())
    assert type(caught.value) is error
    assert caught.value.registry == hostile.host
    assert_no_secret(caught.value)


def test_blob_digest_mismatch(hostile: HostileServer, session: requests.Session) -> None:
    digest = media.compute_digest(GOOD_LAYER)
    with pytest.raises(IntegrityError, match=f"digest mismatch: expected {digest}, content has"):
        client(session).get_blob(
            hostile.host, "digest-mismatch", digest, deadline=short(), max_bytes=4096
        )


def test_head_without_digest_falls_back_to_get(
    hostile: HostileServer, session: requests.Session
) -> None:
    head = client(session).head_manifest(hostile.host, "head-no-digest", "v1", deadline=short())
    assert head == media_head()
    assert [(s.method, s.path) for s in hostile.requests()] == [
        ("HEAD", "/v2/head-no-digest/manifests/v1"),
        ("GET", "/v2/head-no-digest/manifests/v1"),
    ]


def media_head() -> object:
    from policy.registry.client import ManifestHead
    from tests.support.hostile import GOOD_MANIFEST

    return ManifestHead(GOOD_DIGEST, media.DOCKER_MANIFEST, len(GOOD_MANIFEST))


def test_head_digest_must_match_the_digest_asked_for(
    hostile: HostileServer, session: requests.Session
) -> None:
    asked = "sha256:" + "b" * 64
    with pytest.raises(IntegrityError, match=f"asked for {asked}, registry answered {GOOD_DIGEST}"):
        client(session).head_manifest(hostile.host, "good", asked, deadline=short())


def test_slow_drip_is_stopped_by_the_deadline(
    hostile: HostileServer, session: requests.Session
) -> None:
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match="deadline passed while reading"):
        client(session).get_manifest(hostile.host, "slow-drip", "latest", deadline=Deadline(0.5))
    assert time.monotonic() - started < 1.5


# --- redirects ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["blob", "manifest"])
def test_redirect_to_another_host_drops_authorization(
    hostile: HostileServer, foreign: HostileServer, session: requests.Session, kind: str
) -> None:
    events: list[RequestEvent] = []
    registry = client(session, events=events)
    if kind == "blob":
        digest = media.compute_digest(GOOD_LAYER)
        body = registry.get_blob(
            hostile.host, "redirect-foreign", digest, deadline=short(), max_bytes=4096
        )
        assert body == GOOD_LAYER
    else:
        got = registry.get_manifest(hostile.host, "redirect-foreign", GOOD_DIGEST, deadline=short())
        assert got.digest == GOOD_DIGEST
    assert hostile.authorizations() == [BEARER]
    assert len(foreign.requests()) == 1 and foreign.authorizations() == []
    assert [(e.host, e.status) for e in events] == [(hostile.host, 307), (foreign.host, 200)]


def test_challenge_from_redirected_storage_is_not_answered(
    hostile: HostileServer, foreign: HostileServer, session: requests.Session
) -> None:
    authenticator = StaticAuthenticator(BEARER)
    registry = RegistryClient(session, authenticator=authenticator, sleep=Sleeps())
    digest = media.compute_digest(GOOD_LAYER)
    with pytest.raises(RegistryAuthError, match=r"redirected to by .* refused access \(HTTP 401\)"):
        registry.get_blob(
            hostile.host, "redirect-foreign-401", digest, deadline=short(), max_bytes=4096
        )
    assert authenticator.challenged == []
    assert [s.path for s in foreign.requests()] == [f"/deny/{digest}"]


def test_stalled_registry_times_out_inside_the_deadline(
    hostile: HostileServer, session: requests.Session
) -> None:
    started = time.monotonic()
    with pytest.raises(RegistryUnavailable, match=r"cannot reach .*: timed out"):
        client(session).get_manifest(hostile.host, "stall", "latest", deadline=Deadline(0.5))
    assert time.monotonic() - started < 1.5


# --- rate limits and retries --------------------------------------------------------------


def test_rate_limit_message_and_headers(hostile: HostileServer, session: requests.Session) -> None:
    sleeps = Sleeps()
    registry = client(session, sleeps=sleeps)
    with pytest.raises(RateLimited) as caught:
        registry.get_manifest(hostile.host, "rate-limited", "latest", deadline=short())
    assert str(caught.value) == (
        f"{hostile.host} pull rate limit reached: 0 of 100 left in 6h window; "
        "configure credentials or a mirror"
    )
    assert registry.rate_limit(hostile.host) == RateLimit(100, 0, "6h", 21600)
    assert registry.rate_limit("docker.io") is None
    assert sleeps == []


@pytest.mark.parametrize("scenario", ["retry-after", "retry-after-date"])
def test_retry_after_inside_the_deadline_is_honored(
    hostile: HostileServer, session: requests.Session, scenario: str
) -> None:
    sleeps = Sleeps()
    got = client(session, sleeps=sleeps).get_manifest(
        hostile.host, scenario, "latest", deadline=Deadline(2.0)
    )
    assert got.digest == GOOD_DIGEST
    assert sleeps == [1.0]


def test_retry_after_beyond_the_deadline_raises_at_once(
    hostile: HostileServer, session: requests.Session
) -> None:
    sleeps = Sleeps()
    with pytest.raises(RateLimited):
        client(session, sleeps=sleeps).get_manifest(
            hostile.host, "retry-after", "latest", deadline=Deadline(0.8)
        )
    assert sleeps == []
    assert hostile.hits["retry-after"] == 1


def test_server_error_is_retried_with_backoff(
    hostile: HostileServer, session: requests.Session
) -> None:
    sleeps = Sleeps()
    got = client(session, sleeps=sleeps).get_manifest(
        hostile.host, "flaky", "latest", deadline=short()
    )
    assert got.digest == GOOD_DIGEST
    assert sleeps == [0.2]


def test_persistent_server_error_gives_up_after_the_retries(
    hostile: HostileServer, session: requests.Session
) -> None:
    sleeps = Sleeps()
    with pytest.raises(RegistryUnavailable, match="answered HTTP 503: UNAVAILABLE: maintenance"):
        client(session, sleeps=sleeps).get_manifest(
            hostile.host, "down", "latest", deadline=short()
        )
    assert sleeps == [0.2, 0.4]
    assert hostile.hits["down"] == 3


def test_retries_stop_when_the_backoff_would_pass_the_deadline(
    hostile: HostileServer, session: requests.Session
) -> None:
    sleeps = Sleeps()
    registry = client(session, sleeps=sleeps, limits=Limits(retries=5))
    with pytest.raises(RegistryUnavailable):
        registry.get_manifest(hostile.host, "down", "latest", deadline=Deadline(0.3))
    assert sleeps == [0.2]


def test_connection_refused_names_the_registry_and_cause(session: requests.Session) -> None:
    dead = f"127.0.0.1:{free_port()}"
    events: list[RequestEvent] = []
    sleeps = Sleeps()
    with pytest.raises(RegistryUnavailable, match=r"cannot reach .*: connection refused") as caught:
        client(session, sleeps=sleeps, events=events).head_manifest(
            dead, "app", "latest", deadline=short()
        )
    assert caught.value.registry == dead
    assert [e.status for e in events] == [None, None, None]
    assert_no_secret(caught.value)


def test_failing_mirror_falls_back_to_upstream(
    hostile: HostileServer, foreign: HostileServer, session: requests.Session
) -> None:
    config = RegistryConfig(mirrors=(f"{hostile.url}/no-such-prefix",))
    got = client(session, auth=None, registries={foreign.host: config}).get_manifest(
        foreign.host, "good", "latest", deadline=short()
    )
    assert got.digest == GOOD_DIGEST
    assert [s.path for s in hostile.requests()] == ["/no-such-prefix/v2/good/manifests/latest"]
    assert len(foreign.requests()) == 1


# --- auth ---------------------------------------------------------------------------------


@pytest.mark.parametrize("credential", [BEARER, BASIC])
def test_rejected_credentials_are_retried_once_and_never_shown(
    hostile: HostileServer, session: requests.Session, credential: str
) -> None:
    with pytest.raises(RegistryAuthError, match="refused the credentials") as caught:
        client(session, auth=credential).get_manifest(
            hostile.host, "unauthorized", "latest", deadline=short()
        )
    assert_no_secret(caught.value)
    assert hostile.hits["unauthorized"] == 2


def test_no_authenticator_means_a_401_is_an_auth_error(
    hostile: HostileServer, session: requests.Session
) -> None:
    with pytest.raises(RegistryAuthError, match="requires authentication"):
        client(session, auth=None).get_manifest(
            hostile.host, "unauthorized", "latest", deadline=short()
        )


@pytest.mark.parametrize("credential", [BEARER, BASIC])
def test_credentials_echoed_by_the_registry_are_redacted(
    hostile: HostileServer, session: requests.Session, credential: str
) -> None:
    with pytest.raises(RegistryError, match=r"HTTP 400: DENIED: .*\[redacted\]") as caught:
        client(session, auth=credential).get_manifest(
            hostile.host, "echo-auth", "latest", deadline=short()
        )
    assert_no_secret(caught.value)


@pytest.mark.parametrize("scenario", ["bearer-foreign-realm", "bearer-metadata-realm"])
def test_bearer_challenges_go_to_the_authenticator_not_the_realm(
    hostile: HostileServer, foreign: HostileServer, session: requests.Session, scenario: str
) -> None:
    authenticator = StaticAuthenticator(BEARER)
    registry = RegistryClient(session, authenticator=authenticator, sleep=Sleeps())
    with pytest.raises(RegistryAuthError):
        registry.get_manifest(hostile.host, scenario, "latest", deadline=short())
    assert len(authenticator.challenged) == 1
    assert authenticator.challenged[0].startswith('Bearer realm="http://')
    assert foreign.requests() == []
