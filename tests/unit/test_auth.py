"""Tests for policy/registry/auth.py: challenge grammar, realm policy, token protocol and cache.

Token fetches talk to a real loopback token server (tests/support/tokenserver.py).
"""

from __future__ import annotations

import base64
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from policy.errors import RateLimited, RegistryAuthError, RegistryError, RegistryUnavailable
from policy.registry import auth
from policy.registry.auth import Challenge
from policy.registry.credentials import Credential, CredentialStore
from tests.support.clock import FakeClock
from tests.support.tokenserver import RecordedRequest, Reply, TokenServer

PASSWORD = "s3cr3t-pa55word"
IDENTITY = "refresh-token-0123456789"
REGISTRY_TOKEN = "registry-token-abcdef"
REGISTRY = "localhost:5000"
HOST = "127.0.0.1:5000"
SCOPE = "repository:library/nginx:pull"
TIMEOUT = 5.0


# --------------------------------------------------------------------------------------------
# parse_challenges
# --------------------------------------------------------------------------------------------

HUB = (
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
    'scope="repository:library/nginx:pull"'
)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            HUB,
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:library/nginx:pull",
                    },
                )
            ],
        ),
        ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
        ('BEARER Realm="x"', [Challenge("bearer", {"realm": "x"})]),
        (r'Bearer realm="a\"b\\c\d"', [Challenge("bearer", {"realm": 'a"b\\cd'})]),
        ('Bearer realm = "x" , service = y', [Challenge("bearer", {"realm": "x", "service": "y"})]),
        (
            'Bearer realm="x"\t,\tservice="y"',
            [Challenge("bearer", {"realm": "x", "service": "y"})],
        ),
        (
            'Basic realm="x", Bearer realm="y"',
            [Challenge("basic", {"realm": "x"}), Challenge("bearer", {"realm": "y"})],
        ),
        (  # RFC 7235 §4.1's example
            r'Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple"',
            [
                Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
                Challenge("basic", {"realm": "simple"}),
            ],
        ),
        ("Negotiate", [Challenge("negotiate")]),
        ("Negotiate abc==", [Challenge("negotiate", {}, "abc==")]),
        ("Negotiate YWJjZGU=", [Challenge("negotiate", {}, "YWJjZGU=")]),
        ("Negotiate a+b/c~d", [Challenge("negotiate", {}, "a+b/c~d")]),
        (
            'Negotiate abc==, Bearer realm="r"',
            [Challenge("negotiate", {}, "abc=="), Challenge("bearer", {"realm": "r"})],
        ),
        (
            'Bearer realm="x",error="insufficient_scope",'
            'scope="repository:a:pull repository:b:pull"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "x",
                        "error": "insufficient_scope",
                        "scope": "repository:a:pull repository:b:pull",
                    },
                )
            ],
        ),
        (', Basic realm="x",,', [Challenge("basic", {"realm": "x"})]),
        ('Bearer realm=""', [Challenge("bearer", {"realm": ""})]),
        (
            'Bearer realm="https://r/t", scope="a,b"',
            [Challenge("bearer", {"realm": "https://r/t", "scope": "a,b"})],
        ),
        ('Basic realm="caf\xe9"', [Challenge("basic", {"realm": "caf\xe9"})]),
        ("Basic, Bearer", [Challenge("basic"), Challenge("bearer")]),
    ],
)
def test_parse_challenges_accepts(header: str, expected: list[Challenge]) -> None:
    """Valid RFC 7235 headers parse to the challenges they hold, in order."""
    assert auth.parse_challenges(header) == expected


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("", "empty"),
        (" \t ", "empty"),
        (",,", "empty"),
        ('Bearer realm="x', "unterminated quoted string"),
        ('Bearer realm="x\\', "unterminated escape"),
        ("Bearer realm=", "must carry auth-params"),
        ('Bearer realm="x", service=', "has no value"),
        ('Bearer realm="x", service=,', "has no value"),
        ('Bearer realm="x", realm="y"', "repeated"),
        ('Bearer realm="x", REALM="y"', "repeated"),
        ("=realm", "expected an auth scheme"),
        ('Bearer realm="x" service="y"', "expected ','"),
        ('Bearer realm="a\x00b"', "control character"),
        ('Bearer realm="a\nb"', "control character"),
        ("Basic abc", "must carry auth-params"),
        ('Bearer realm="x", "y"', "expected an auth scheme"),
        ("Bearer; realm=x", "unexpected ';'"),
        ("Bearer realm=https://x/token", "expected ','"),
        ("Negotiate abc== def", "expected ','"),
        ('Bearer realm="x",\x7f', "expected an auth scheme"),
        ('Bearer"realm"', "unexpected"),
        ("Bearer =x", "unexpected '='"),
    ],
)
def test_parse_challenges_rejects(header: str, problem: str) -> None:
    """Malformed headers raise RegistryAuthError saying what is wrong."""
    with pytest.raises(RegistryAuthError, match=problem):
        auth.parse_challenges(header)


@given(st.text(alphabet=st.sampled_from(list(' \t,="\\abcBearerBasic:/=-.\x00é')), max_size=60))
def test_parse_challenges_never_raises_another_type(header: str) -> None:
    """Any text either parses or raises RegistryAuthError; parsed schemes are lowercase tokens."""
    try:
        challenges = auth.parse_challenges(header)
    except RegistryAuthError:
        return
    assert challenges
    for challenge in challenges:
        assert challenge.scheme == challenge.scheme.lower()
        assert challenge.scheme


# --------------------------------------------------------------------------------------------
# realm policy
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "domain"),
    [
        ("registry.example.com", "example.com"),
        ("a.b.registry.example.com", "example.com"),
        ("example.com", "example.com"),
        ("registry.example.co.uk", "example.co.uk"),
        ("registry.example.com.au", "example.com.au"),
        ("registry.example.ac.jp", "example.ac.jp"),
        ("registry.example.de", "example.de"),
        ("foo.co.uk", "foo.co.uk"),
        ("co.uk", "co.uk"),
        ("example.dev.io", "dev.io"),
        ("localhost", "localhost"),
    ],
)
def test_registrable_domain(host: str, domain: str) -> None:
    """The naive eTLD+1 heuristic: two labels, three under `<generic>.<cc>`."""
    assert auth.registrable_domain(host) == domain


REG = "registry.example.com"


@pytest.mark.parametrize(
    ("realm", "registry_host", "trusted", "problem"),
    [
        # allowed
        ("https://registry.example.com/token", REG, (), None),
        ("https://registry.example.com:8443/token", "registry.example.com:5000", (), None),
        ("https://REGISTRY.example.com./token", REG, (), None),
        ("https://auth.example.com/token", REG, (), None),
        ("https://example.com/token", REG, (), None),
        ("https://auth.example.co.uk/t", "reg.example.co.uk", (), None),
        ("https://auth.docker.io/token", "registry-1.docker.io", (), None),
        ("https://auth.docker.io/token", "docker.io", (), None),
        ("https://auth.docker.io/token", "index.docker.io", (), None),
        ("https://evil.com/token", REG, ("evil.com",), None),
        ("https://evil.com/token", REG, ("EVIL.com:443",), None),
        ("https://evil.com/token", REG, ("https://evil.com/token",), None),
        ("https://evil.com/token/v2?x=1", REG, ("https://evil.com/token",), None),
        ("https://evil.com/anything", REG, ("https://evil.com",), None),
        ("http://auth.internal/token", "registry.internal", ("http://auth.internal/",), None),
        ("http://127.0.0.1:5001/token", "127.0.0.1:5000", (), None),
        ("http://localhost:5001/token", "localhost:5000", (), None),
        ("http://[::1]:5001/token", "[::1]:5000", (), None),
        ("https://10.0.0.5/token", "10.0.0.5:5000", (), None),
        # refused: foreign domains
        ("https://evil.com/token", REG, (), "not on the registry's domain"),
        ("https://auth.docker.io/token", "mirror.example.com", (), "not on the registry's domain"),
        ("https://auth.other.co.uk/t", "reg.example.co.uk", (), "not on the registry's domain"),
        ("https://co.uk/t", "reg.example.co.uk", (), "not on the registry's domain"),
        ("https://com/token", REG, (), "not on the registry's domain"),
        ("https://example.com.evil.net/token", REG, (), "not on the registry's domain"),
        ("https://evil.com/tokenx", REG, ("https://evil.com/token",), "not on the registry"),
        ("https://evil.com.attacker.net/t", REG, ("https://evil.com",), "not on the registry"),
        ("https://evil.com:444/token", REG, ("evil.com:443",), "not on the registry's domain"),
        ("https://evil.com/token", REG, ("http://evil.com/",), "not on the registry's domain"),
        # refused: plain http
        ("http://registry.example.com/token", REG, (), "plain http"),
        ("http://auth.internal/token", "registry.internal", ("auth.internal",), "plain http"),
        ("http://localhost:5001/token", "127.0.0.1:5000", (), "plain http"),
        ("http://127.0.0.1:5001/token", "localhost:5000", (), "IP address the registry"),
        # refused: IP literals
        ("https://127.0.0.1/token", "localhost:5000", (), "IP address the registry"),
        ("https://10.0.0.6/token", "10.0.0.5:5000", (), "IP address the registry"),
        ("https://10.0.0.6/token", REG, ("10.0.0.6",), "IP address the registry"),
        ("https://10.0.0.6/token", REG, ("https://10.0.0.6/",), "IP address the registry"),
        ("https://[2001:db8::1]/token", REG, (), "IP address the registry"),
        # refused: link-local, unspecified, metadata endpoints, in any spelling
        ("http://169.254.169.254/latest/meta-data", REG, (), "link-local"),
        ("http://169.254.169.254/", REG, ("169.254.169.254",), "link-local"),
        ("https://169.254.169.254/", "169.254.169.254", (), "link-local"),
        ("https://[fe80::1]/token", REG, (), "link-local"),
        ("https://[fe80::1]/token", "[fe80::1]:5000", ("[fe80::1]",), "link-local"),
        ("https://[::ffff:169.254.169.254]/", REG, (), "link-local"),
        ("https://0.0.0.0/token", "0.0.0.0:5000", (), "link-local or unspecified"),
        ("https://[::]/token", "[::]:5000", (), "link-local or unspecified"),
        ("http://0xa9fea9fe/", REG, (), "link-local"),
        ("http://2852039166/", REG, (), "link-local"),
        ("http://169.254.43518/", REG, (), "link-local"),
        ("http://0/", REG, (), "link-local or unspecified"),
        # refused: not a usable URL
        ("ftp://registry.example.com/token", REG, (), "absolute http"),
        ("/token", REG, (), "absolute http"),
        ("https:///token", REG, (), "absolute http"),
        ("https://user:pw@registry.example.com/token", REG, (), "user information"),
        ("https://r\xe9gistry.example.com/token", REG, (), "not a valid host name"),
        ("https://registry.example.com:99999/token", REG, (), "not a valid URL"),
    ],
)
def test_realm_policy(
    realm: str, registry_host: str, trusted: tuple[str, ...], problem: str | None
) -> None:
    """A token realm is allowed only on the registry's host or domain, auth.docker.io for Docker
    Hub, or a trusted entry; never a foreign IP, link-local or unspecified address."""
    refusal = auth.realm_refusal(realm, registry_host, trusted=trusted)
    if problem is None:
        assert refusal is None
        assert auth.realm_allowed(realm, registry_host, trusted=trusted)
    else:
        assert refusal is not None
        assert problem in refusal
        assert refusal.startswith("refusing token realm")
        assert not auth.realm_allowed(realm, registry_host, trusted=trusted)


def test_realm_refusal_advice_names_the_setting() -> None:
    """The refusal says how to trust the realm, under the logical registry's name."""
    refusal = auth.realm_refusal("https://evil.com/token", REG, registry="ghcr.example")
    assert refusal == (
        "refusing token realm evil.com: not on the registry's domain "
        "(configure registries.ghcr.example.tokenRealms to trust it)"
    )


# --------------------------------------------------------------------------------------------
# token request and response
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credential", "scopes", "expected"),
    [
        (
            None,
            ["repository:a:pull"],
            auth.TokenRequest(
                "GET", "R", params=(("service", "S"), ("scope", "repository:a:pull"))
            ),
        ),
        (
            Credential("alice", PASSWORD),
            ["repository:a:pull", "repository:b:pull"],
            auth.TokenRequest(
                "GET",
                "R",
                params=(
                    ("service", "S"),
                    ("scope", "repository:a:pull"),
                    ("scope", "repository:b:pull"),
                    ("account", "alice"),
                ),
                basic=("alice", PASSWORD),
            ),
        ),
        (
            Credential(username="alice", identity_token=IDENTITY),
            ["repository:a:pull", "repository:b:pull"],
            auth.TokenRequest(
                "POST",
                "R",
                form=(
                    ("grant_type", "refresh_token"),
                    ("refresh_token", IDENTITY),
                    ("client_id", "image-policy"),
                    ("service", "S"),
                    ("scope", "repository:a:pull repository:b:pull"),
                ),
            ),
        ),
        (Credential(), [], auth.TokenRequest("GET", "R", params=(("service", "S"),))),
    ],
)
def test_build_token_request(
    credential: Credential | None, scopes: list[str], expected: auth.TokenRequest
) -> None:
    """GET with Basic for passwords, the OAuth2 refresh-token POST for identity tokens."""
    assert auth.build_token_request("R", "S", scopes, credential) == expected


def test_token_request_repr_hides_the_password() -> None:
    """The Basic pair never shows in a repr."""
    request = auth.build_token_request("R", "S", [], Credential("alice", PASSWORD))
    assert PASSWORD not in repr(request)


@pytest.mark.parametrize(
    ("body", "token", "expires_in", "issued_at"),
    [
        (b'{"token": "t1"}', "t1", 60, None),
        (b'{"access_token": "t2", "expires_in": 300}', "t2", 300, None),
        (b'{"token": "t1", "access_token": "t2"}', "t1", 60, None),
        (b'{"token": "", "access_token": "t2"}', "t2", 60, None),
        (b'{"token": "t", "expires_in": 10}', "t", 60, None),
        (b'{"token": "t", "expires_in": 0}', "t", 60, None),
        (b'{"token": "t", "expires_in": 3600.9}', "t", 3600, None),
        (
            b'{"token": "t", "issued_at": "2024-05-01T10:00:00Z"}',
            "t",
            60,
            datetime(2024, 5, 1, 10, 0, tzinfo=UTC),
        ),
        (b'{"token": "t", "issued_at": "yesterday"}', "t", 60, None),
        (b'{"token": "t", "issued_at": 17}', "t", 60, None),
    ],
)
def test_parse_token_response(
    body: bytes, token: str, expires_in: int, issued_at: datetime | None
) -> None:
    """`token` wins over `access_token`; `expires_in` defaults to and is at least 60 s."""
    answer = auth.parse_token_response(body)
    assert (answer.token, answer.expires_in, answer.issued_at) == (token, expires_in, issued_at)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html>", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"token": "t", "x": ' + b"[" * 65 + b"]" * 65 + b"}", "nested 66 levels deep"),
        (b'{"token": "t", "expires_in": NaN}', "NaN is not a JSON number"),
        (b'["token"]', "not a JSON object"),
        (b"{}", "no token"),
        (b'{"token": 5}', "no token"),
        (b'{"token": "a b"}', "characters not allowed"),
        (b'{"token": "a\\r\\nX-Injected: 1"}', "characters not allowed"),
        (b'{"token": "t", "expires_in": "300"}', "expires_in is not a number"),
        (b'{"token": "t", "expires_in": true}', "expires_in is not a number"),
    ],
)
def test_parse_token_response_rejects(body: bytes, problem: str) -> None:
    """Unusable token responses raise RegistryAuthError."""
    with pytest.raises(RegistryAuthError, match=problem):
        auth.parse_token_response(body)


def test_basic_header() -> None:
    """RFC 7617: base64 of UTF-8 `user:pass`."""
    value = auth.basic_header("alice", "pä:ss")
    assert value == "Basic " + base64.b64encode("alice:pä:ss".encode()).decode()


# --------------------------------------------------------------------------------------------
# Authenticator against a loopback token server
# --------------------------------------------------------------------------------------------


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def make_server(tmp_path: Path, **options: object) -> TokenServer:
    return TokenServer(tmp_path / "tokens", **options)  # type: ignore[arg-type]


def bearer(server: TokenServer, scope: str = SCOPE, *, extra: str = "") -> str:
    return f'Bearer realm="{server.url}",service="{server.service}",scope="{scope}"{extra}'


def store(credential: Credential) -> CredentialStore:
    """A store holding one explicit credential for REGISTRY."""
    return CredentialStore(explicit={REGISTRY: credential})


def test_anonymous_token_fetch(tmp_path: Path, session: requests.Session) -> None:
    """Without credentials the token is fetched anonymously with service and scope."""
    with make_server(tmp_path) as server:
        authn = auth.Authenticator(session, CredentialStore())
        value = authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)
        assert value.startswith("Bearer ey")
        [request] = server.token_requests()
        assert request.method == "GET"
        assert request.query == {"service": [server.service], "scope": [SCOPE]}
        assert request.authorization is None


def test_credentialed_token_fetch(tmp_path: Path, session: requests.Session) -> None:
    """With a username and password the token request carries Basic auth and `account`."""
    with make_server(tmp_path, users={"alice": PASSWORD}, anonymous=False) as server:
        authn = auth.Authenticator(session, store(Credential("alice", PASSWORD)))
        value = authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)
        assert value.startswith("Bearer ")
        [request] = server.token_requests()
        assert (request.username, request.password) == ("alice", PASSWORD)
        assert request.query["account"] == ["alice"]


def test_identity_token_uses_oauth2_refresh_grant(
    tmp_path: Path, session: requests.Session
) -> None:
    """An identity token is exchanged with the OAuth2 POST form, not Basic auth."""
    with make_server(
        tmp_path, refresh_tokens={IDENTITY: "alice"}, anonymous=False, token_field="access_token"
    ) as server:
        authn = auth.Authenticator(
            session, store(Credential(username="alice", identity_token=IDENTITY))
        )
        value = authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)
        assert value.startswith("Bearer ")
        [request] = server.token_requests()
        assert request.method == "POST"
        assert request.authorization is None
        assert request.form["grant_type"] == ["refresh_token"]
        assert request.form["refresh_token"] == [IDENTITY]
        assert request.form["client_id"] == ["image-policy"]
        assert request.form["scope"] == [SCOPE]


def test_challenge_scope_used_when_caller_has_none(
    tmp_path: Path, session: requests.Session
) -> None:
    """An empty caller scope falls back to the scopes the challenge names."""
    with make_server(tmp_path) as server:
        authn = auth.Authenticator(session, CredentialStore())
        two = "repository:a:pull repository:b:pull"
        authn.challenge(REGISTRY, HOST, bearer(server, two), "", timeout=TIMEOUT)
        [request] = server.token_requests()
        assert request.query["scope"] == ["repository:a:pull", "repository:b:pull"]


def test_token_cached_until_expiry_then_refetched(
    tmp_path: Path, session: requests.Session
) -> None:
    """A token is handed out until expires_in minus the margin, then fetched again."""
    clock = FakeClock()
    with make_server(tmp_path, expires_in=300) as server:
        authn = auth.Authenticator(session, CredentialStore(), clock=clock)
        assert authn.header(REGISTRY, HOST, SCOPE) is None
        first = authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)
        clock.advance(300 - auth.EXPIRY_MARGIN - 1)
        assert authn.header(REGISTRY, HOST, SCOPE) == first
        assert authn.header(REGISTRY, HOST, "repository:other:pull") is None
        assert authn.header(REGISTRY, "other-host:5000", SCOPE) is None
        clock.advance(2)
        assert authn.header(REGISTRY, HOST, SCOPE) is None
        assert len(server.token_requests()) == 1
        authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)
        assert len(server.token_requests()) == 2
        assert authn.header(REGISTRY, HOST, SCOPE) is not None


def test_short_expiry_is_raised_to_the_minimum(tmp_path: Path, session: requests.Session) -> None:
    """expires_in below 60 s (or absent) counts as 60 s."""
    clock = FakeClock()
    with make_server(tmp_path, expires_in=None) as server:
        authn = auth.Authenticator(session, CredentialStore(), clock=clock)
        authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)
        clock.advance(60 - auth.EXPIRY_MARGIN - 1)
        assert authn.header(REGISTRY, HOST, SCOPE) is not None
        clock.advance(2)
        assert authn.header(REGISTRY, HOST, SCOPE) is None


def test_cache_is_shared_across_hosts_with_the_same_realm(
    tmp_path: Path, session: requests.Session
) -> None:
    """The cache key is the realm and service, not the host contacted."""
    with make_server(tmp_path) as server:
        authn = auth.Authenticator(session, CredentialStore())
        first = authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)
        again = authn.challenge(REGISTRY, "127.0.0.1:5001", bearer(server), SCOPE, timeout=TIMEOUT)
        assert again == first
        assert len(server.token_requests()) == 1


def test_rejected_token_is_refetched_once_then_fails(
    tmp_path: Path, session: requests.Session
) -> None:
    """A token the registry rejects is replaced once; a rejected replacement raises, no loop."""
    with make_server(tmp_path) as server:
        authn = auth.Authenticator(session, CredentialStore())
        first = authn.header(REGISTRY, HOST, SCOPE)
        assert first is None
        t1 = authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)
        rejected = bearer(server, extra=',error="insufficient_scope"')
        t2 = authn.challenge(REGISTRY, HOST, rejected, SCOPE, timeout=TIMEOUT)
        assert t2 != t1
        assert len(server.token_requests()) == 2
        with pytest.raises(
            RegistryAuthError, match=r"rejected a freshly issued token.*insufficient"
        ):
            authn.challenge(REGISTRY, HOST, rejected, SCOPE, timeout=TIMEOUT)
        assert len(server.token_requests()) == 2
        assert authn.header(REGISTRY, HOST, SCOPE) is None


def test_cached_token_rejected_via_header_is_replaced(
    tmp_path: Path, session: requests.Session
) -> None:
    """A token handed out by header() and then rejected is invalidated and fetched anew."""
    with make_server(tmp_path) as server:
        authn = auth.Authenticator(session, CredentialStore())
        t1 = authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)
        assert authn.header(REGISTRY, HOST, SCOPE) == t1
        t2 = authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)
        assert t2 != t1
        assert authn.header(REGISTRY, HOST, SCOPE) == t2
        assert len(server.token_requests()) == 2


def test_concurrent_challenges_fetch_once(tmp_path: Path, session: requests.Session) -> None:
    """Threads answering the same challenge at once share one token fetch."""
    with make_server(tmp_path) as server:
        authn = auth.Authenticator(session, CredentialStore())
        barrier = threading.Barrier(16)
        results: list[str] = []
        errors: list[BaseException] = []

        def work() -> None:
            try:
                barrier.wait(timeout=5)
                results.append(
                    authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)
                )
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert not errors
        assert len(results) == 16
        assert len(set(results)) == 1
        assert len(server.token_requests()) == 1


def test_concurrent_scopes_each_fetch(tmp_path: Path, session: requests.Session) -> None:
    """Different scopes are cached separately, also when fetched concurrently."""
    with make_server(tmp_path) as server:
        authn = auth.Authenticator(session, CredentialStore())
        scopes = [f"repository:r{i}:pull" for i in range(8)]
        threads = [
            threading.Thread(
                target=authn.challenge,
                args=(REGISTRY, HOST, bearer(server, s), s),
                kwargs={"timeout": TIMEOUT},
            )
            for s in scopes
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=10)
        assert sorted(r.scopes[0] for r in server.token_requests()) == sorted(scopes)
        assert all(authn.header(REGISTRY, HOST, s) for s in scopes)


def test_refused_realm_is_never_contacted(tmp_path: Path, session: requests.Session) -> None:
    """A realm on a foreign IP gets no request at all, not even an anonymous one."""
    with make_server(tmp_path) as server:
        authn = auth.Authenticator(session, store(Credential("alice", PASSWORD)))
        with pytest.raises(RegistryAuthError, match=r"refusing token realm 127\.0\.0\.1") as caught:
            authn.challenge(
                "registry.example.com",
                "registry.example.com",
                bearer(server),
                SCOPE,
                timeout=TIMEOUT,
            )
        assert server.requests == []
        assert PASSWORD not in str(caught.value)


def test_metadata_realm_refused_even_anonymously(session: requests.Session) -> None:
    """169.254.169.254 is refused before any connection is attempted."""
    authn = auth.Authenticator(session, CredentialStore(), trusted_realms=["169.254.169.254"])
    header = 'Bearer realm="http://169.254.169.254/latest/meta-data",service="x"'
    with pytest.raises(RegistryAuthError, match="link-local"):
        authn.challenge("registry.example.com", "registry.example.com", header, SCOPE, timeout=1)


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (
            'Negotiate abc==, Newauth realm="x"',
            "unsupported authentication \\(negotiate, newauth\\)",
        ),
        ('Bearer service="x"', "Bearer challenge without a realm"),
        ("Bearer realm=", "must carry auth-params"),
    ],
)
def test_unanswerable_challenges(session: requests.Session, header: str, problem: str) -> None:
    """Challenges without a usable Bearer or Basic raise RegistryAuthError."""
    authn = auth.Authenticator(session, store(Credential("alice", PASSWORD)))
    with pytest.raises(RegistryAuthError, match=problem):
        authn.challenge(REGISTRY, HOST, header, SCOPE, timeout=1)


def test_basic_challenge(session: requests.Session) -> None:
    """Basic answers with the credentials, is remembered for the host, and a rejection raises."""
    authn = auth.Authenticator(session, store(Credential("alice", PASSWORD)))
    value = authn.challenge(REGISTRY, HOST, 'Basic realm="Registry"', SCOPE, timeout=1)
    assert value == auth.basic_header("alice", PASSWORD)
    assert authn.header(REGISTRY, HOST, "repository:any:pull") == value
    with pytest.raises(RegistryAuthError, match="rejected the credentials for user 'alice'") as e:
        authn.challenge(REGISTRY, HOST, 'Basic realm="Registry"', SCOPE, timeout=1)
    assert PASSWORD not in str(e.value)
    assert authn.header(REGISTRY, HOST, SCOPE) is None


@pytest.mark.parametrize(
    "credential", [None, Credential(identity_token=IDENTITY)], ids=["none", "identity-only"]
)
def test_basic_challenge_without_password(
    session: requests.Session, credential: Credential | None
) -> None:
    """Basic without a username/password says no credentials are configured."""
    credentials = store(credential) if credential else CredentialStore()
    authn = auth.Authenticator(session, credentials)
    with pytest.raises(
        RegistryAuthError, match=f"requires authentication; no credentials for {REGISTRY}"
    ):
        authn.challenge(REGISTRY, HOST, 'Basic realm="r"', SCOPE, timeout=1)


def test_bearer_prefers_over_basic(tmp_path: Path, session: requests.Session) -> None:
    """With both offered, Bearer is answered."""
    with make_server(tmp_path) as server:
        authn = auth.Authenticator(session, CredentialStore())
        value = authn.challenge(
            REGISTRY, HOST, f'Basic realm="r", {bearer(server)}', SCOPE, timeout=TIMEOUT
        )
        assert value.startswith("Bearer ")


def test_registry_token_is_sent_directly(tmp_path: Path, session: requests.Session) -> None:
    """A configured registry token is the Bearer value; the token server is not asked."""
    with make_server(tmp_path) as server:
        authn = auth.Authenticator(session, store(Credential(registry_token=REGISTRY_TOKEN)))
        value = authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)
        assert value == f"Bearer {REGISTRY_TOKEN}"
        assert authn.header(REGISTRY, HOST, SCOPE) == value
        assert server.requests == []
        with pytest.raises(RegistryAuthError, match="rejected the configured registry token") as e:
            authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)
        assert REGISTRY_TOKEN not in str(e.value)


def reply(status: int, body: bytes, headers: dict[str, str] | None = None) -> Reply:
    return status, {"Content-Type": "application/json", **(headers or {})}, body


@pytest.mark.parametrize(
    ("answer", "error", "problem"),
    [
        (reply(500, b"{}"), RegistryUnavailable, "failed \\(HTTP 500\\)"),
        (reply(503, b""), RegistryUnavailable, "HTTP 503"),
        (reply(429, b"{}"), RateLimited, "rate limiting"),
        (reply(302, b"", {"Location": "http://169.254.169.254/"}), RegistryAuthError, "redirect"),
        (reply(200, b"<html>"), RegistryAuthError, "not JSON"),
        (
            reply(200, b"[" * 100_000 + b"]" * 100_000),
            RegistryAuthError,
            "token realm 127.0.0.1 for localhost:5000: token response refused: "
            "JSON nested 100000 levels deep, more than the limit of 64$",
        ),
        (
            reply(404, b'{"details": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
            RegistryAuthError,
            "answered HTTP 404$",
        ),
        (reply(200, b'{"token": ""}'), RegistryAuthError, "no token"),
        (reply(200, b"x" * (auth.MAX_TOKEN_BODY + 1)), RegistryAuthError, "over 1048576 bytes"),
        (reply(404, b'{"details": "no such realm"}'), RegistryAuthError, "HTTP 404: no such realm"),
        (
            reply(401, f'{{"details": "wrong password {PASSWORD}"}}'.encode()),
            RegistryAuthError,
            "rejected the credentials for user 'alice'.*wrong password \\*\\*\\*",
        ),
        (reply(403, b"{}"), RegistryAuthError, "rejected the credentials .*HTTP 403"),
    ],
)
def test_token_server_failures(
    tmp_path: Path,
    session: requests.Session,
    answer: Reply,
    error: type[RegistryError],
    problem: str,
) -> None:
    """Each token-server failure maps to its error type, without secrets in the message."""

    def respond(request: RecordedRequest) -> Reply:
        return answer

    with make_server(tmp_path, respond=respond) as server:
        authn = auth.Authenticator(session, store(Credential("alice", PASSWORD)))
        with pytest.raises(error, match=problem) as caught:
            authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)
        assert type(caught.value) is error
        assert caught.value.registry == REGISTRY
        assert PASSWORD not in str(caught.value)
        assert len(server.requests) == 1  # a redirect is not followed


def test_unreachable_realm_is_unavailable(session: requests.Session) -> None:
    """A closed port raises RegistryUnavailable."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    authn = auth.Authenticator(session, CredentialStore())
    header = f'Bearer realm="http://127.0.0.1:{port}/token",service="s"'
    with pytest.raises(RegistryUnavailable, match="unreachable"):
        authn.challenge(REGISTRY, HOST, header, SCOPE, timeout=TIMEOUT)


@pytest.mark.parametrize(
    ("credential", "secrets"),
    [
        (Credential("alice", PASSWORD), [PASSWORD]),
        (Credential(username="alice", identity_token=IDENTITY), [IDENTITY]),
    ],
    ids=["password", "identity-token"],
)
def test_wrong_credentials_error_has_no_secrets(
    tmp_path: Path, session: requests.Session, credential: Credential, secrets: list[str]
) -> None:
    """Wrong credentials give a clear error that names the user but no secret, no token."""
    with make_server(
        tmp_path, users={"alice": "other"}, refresh_tokens={"x": "alice"}, anonymous=False
    ) as server:
        authn = auth.Authenticator(session, store(credential))
        with pytest.raises(RegistryAuthError, match="rejected the credentials") as caught:
            authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)
        message = str(caught.value)
        encoded = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        for secret in [*secrets, encoded]:
            assert secret not in message
            assert secret not in repr(caught.value)


def test_anonymous_refused_says_no_credentials(tmp_path: Path, session: requests.Session) -> None:
    """A token server that refuses anonymous access: 'no credentials for <registry>'."""
    with make_server(tmp_path, anonymous=False) as server:
        authn = auth.Authenticator(session, CredentialStore())
        with pytest.raises(RegistryAuthError, match="no credentials for localhost:5000"):
            authn.challenge(REGISTRY, HOST, bearer(server), SCOPE, timeout=TIMEOUT)


@pytest.mark.parametrize("per_registry", [True, False], ids=["mapping", "list"])
def test_trusted_realms(tmp_path: Path, session: requests.Session, per_registry: bool) -> None:
    """A trusted realm is used; a mapping trusts it only for its own registry."""
    with make_server(tmp_path) as server:
        realm = f"http://localhost:{server.port}/"
        trusted = {"registry.test": [realm]} if per_registry else [realm]
        authn = auth.Authenticator(session, CredentialStore(), trusted_realms=trusted)
        header = f'Bearer realm="{realm}token",service="{server.service}"'
        value = authn.challenge("registry.test", "registry.test", header, SCOPE, timeout=TIMEOUT)
        assert value.startswith("Bearer ")
        if per_registry:
            with pytest.raises(
                RegistryAuthError, match=r"refusing token realm localhost: plain http"
            ):
                authn.challenge("other.test", "other.test", header, SCOPE, timeout=TIMEOUT)
        else:
            authn.challenge("other.test", "other.test", header, SCOPE, timeout=TIMEOUT)
        assert len(server.token_requests()) == (1 if per_registry else 2)
