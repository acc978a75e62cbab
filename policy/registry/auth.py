"""Registry authentication: the `Authenticator` that answers 401 challenges and caches what it
learned (Bearer tokens, Basic credentials, configured registry tokens).

The protocol pieces are plain functions in their own modules, table-tested without a network,
and re-exported here:

- `challenges.parse_challenges` reads a `WWW-Authenticate` header (RFC 7235 §4.1 grammar).
- `realms.realm_refusal` / `realm_allowed` decide whether a Bearer realm may be contacted.
- `tokens.build_token_request` / `parse_token_response`: the token request and its answer.

`Authenticator` ties them to a `requests.Session` (through the transport layer's one
`exchange`), a `CredentialStore` and a clock, and keeps a thread-safe cache of Bearer tokens
keyed by (registry, realm, service, scope).

Safe by construction: nothing (not even an anonymous request) is sent to a token realm that
`realm_refusal` rejects, redirects from a token realm are never followed, and no error message
carries a password or a token.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

import requests

from policy.cache import Coalescer
from policy.errors import RegistryAuthError, RegistryUnavailable
from policy.registry import exchange
from policy.registry.challenges import Challenge, parse_challenges
from policy.registry.credentials import Credential, CredentialStore
from policy.registry.realms import realm_allowed, realm_refusal, registrable_domain
from policy.registry.tokens import (
    CLIENT_ID,
    DEFAULT_EXPIRES_IN,
    MAX_TOKEN_BODY,
    TOKEN_CAP,
    TokenRequest,
    TokenResponse,
    basic_header,
    build_token_request,
    parse_token_response,
    token_failure,
    token_refusal,
)

__all__ = [
    "CLIENT_ID",
    "DEFAULT_EXPIRES_IN",
    "MAX_TOKEN_BODY",
    "Authenticator",
    "Challenge",
    "TokenRequest",
    "TokenResponse",
    "basic_header",
    "build_token_request",
    "parse_challenges",
    "parse_token_response",
    "realm_allowed",
    "realm_refusal",
    "registrable_domain",
]

EXPIRY_MARGIN = 10.0
"""Seconds before a token's expiry at which it is no longer handed out."""

MAX_CACHED_TOKENS = 4096

# --------------------------------------------------------------------------------------------
# The authenticator
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Issued:
    """An Authorization value handed out, with when it stops being handed out."""

    header: str = field(repr=False)
    expires_at: float
    kind: Literal["bearer", "basic", "static"]
    replaces_rejected: bool = False


@dataclass(frozen=True)
class _BearerMode:
    realm: str
    service: str


_TokenKey = tuple[str, str, str, str]  # registry, realm, service, scope
_HostKey = tuple[str, str]  # registry, host
_SentKey = tuple[str, str, str]  # registry, host, scope


class Authenticator:
    """Answers registry 401s and caches what it learned, per registry and scope.

    Thread-safe. Bearer tokens are cached per (registry, realm, service, scope) until their
    expiry minus `EXPIRY_MARGIN`, measured with the injected `clock`; concurrent fetches of
    one key share a single request. The Bearer challenge's realm and service are remembered
    per (registry, host) once seen, so `header(..., timeout=)` fetches the token for a new
    scope before the request rather than after its 401. Basic credentials are remembered per
    (registry, host) once the host has asked for them. A value that the
    registry rejects is invalidated and fetched once more; a rejected replacement raises
    RegistryAuthError instead of looping. Token realms are checked by `realm_refusal` with
    `trusted_realms` before any request is sent. `trusted_realms` is either one list for every
    registry or a mapping from the logical registry name to its list (the settings'
    `registries.<r>.tokenRealms`), so that trusting a realm for one registry does not trust it
    for another.
    """

    def __init__(
        self,
        session: requests.Session,
        credentials: CredentialStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        trusted_realms: Sequence[str] | Mapping[str, Sequence[str]] = (),
    ) -> None:
        self._session = session
        self._credentials = credentials
        self._clock = clock
        self._trusted_all: tuple[str, ...] = ()
        self._trusted_by_registry: dict[str, tuple[str, ...]] = {}
        if isinstance(trusted_realms, Mapping):
            self._trusted_by_registry = {k: tuple(v) for k, v in trusted_realms.items()}
        else:
            self._trusted_all = tuple(trusted_realms)
        self._lock = threading.Lock()
        self._fetches: Coalescer[_TokenKey, _Issued] = Coalescer()
        self._modes: dict[_HostKey, _BearerMode | _Issued] = {}
        self._tokens: OrderedDict[_TokenKey, _Issued] = OrderedDict()
        self._local = threading.local()

    # -- the interface the client uses ------------------------------------------------------

    def header(
        self, registry: str, host: str, scope: str, *, timeout: float | None = None
    ) -> str | None:
        """The Authorization value to send to registry+host for `scope`, or None.

        Without `timeout` only what is cached (and still valid) is handed out. With `timeout`,
        once the host is known to answer with a Bearer challenge (its realm, already checked,
        and service are remembered per registry and host), a token for a scope not yet cached
        (or expired) is fetched proactively, before the request, instead of after its 401:
        through the same token cache, concurrent fetches of one (realm, service, scope) shared,
        waiting and fetching bounded by `timeout`. Basic credentials and a configured registry
        token are handed out for every scope once the host asked for them. Raises what
        `challenge` raises when a proactive fetch fails.
        """
        issued: _Issued | None = None
        with self._lock:
            mode = self._modes.get((registry, host))
            if isinstance(mode, _Issued):
                issued = mode
            elif isinstance(mode, _BearerMode):
                key = (registry, mode.realm, mode.service, scope)
                entry = self._tokens.get(key)
                if entry is not None and entry.expires_at > self._clock():
                    issued = entry
        if issued is None and timeout is not None and isinstance(mode, _BearerMode) and scope:
            credential = self._credentials.lookup(registry, host)
            if credential is None or not credential.registry_token:
                issued = self._bearer_token(
                    registry, mode, scope, (), credential, None, "", timeout=timeout
                )
        self._remember_sent((registry, host, scope), issued)
        return issued.header if issued is not None else None

    def challenge(
        self, registry: str, host: str, www_authenticate: str, scope: str, *, timeout: float
    ) -> str:
        """Answer a 401: return the Authorization header value to retry with.

        Raises RegistryAuthError when the challenge cannot or must not be answered (malformed,
        unsupported scheme, refused realm, no or rejected credentials), RegistryUnavailable
        when the token realm cannot be reached or answers 5xx, RateLimited on its 429.
        """
        challenges = parse_challenges(www_authenticate)
        chosen = _choose(challenges, registry)
        sent = self._take_sent((registry, host, scope))
        credential = self._credentials.lookup(registry, host)
        if chosen.scheme == "basic":
            issued = self._answer_basic(registry, host, credential, sent)
        else:
            issued = self._answer_bearer(
                registry, host, chosen, scope, credential, sent, timeout=timeout
            )
        self._remember_sent((registry, host, scope), issued)
        return issued.header

    # -- internals ---------------------------------------------------------------------------

    def _remember_sent(self, key: _SentKey, issued: _Issued | None) -> None:
        sent: dict[_SentKey, _Issued] = self._local.__dict__.setdefault("sent", {})
        if issued is None:
            sent.pop(key, None)
        else:
            sent[key] = issued

    def _take_sent(self, key: _SentKey) -> _Issued | None:
        sent: dict[_SentKey, _Issued] = self._local.__dict__.setdefault("sent", {})
        return sent.pop(key, None)

    def _answer_basic(
        self,
        registry: str,
        host: str,
        credential: Credential | None,
        sent: _Issued | None,
    ) -> _Issued:
        if credential is None or not (credential.username or credential.password):
            raise RegistryAuthError(
                f"registry {registry} requires authentication; no credentials for {registry}",
                registry=registry,
            )
        if sent is not None and sent.kind == "basic":
            with self._lock:
                if self._modes.get((registry, host)) == sent:
                    del self._modes[(registry, host)]
            raise RegistryAuthError(
                f"registry {registry} rejected the credentials for user {credential.username!r}",
                registry=registry,
            )
        issued = _Issued(
            basic_header(credential.username, credential.password), float("inf"), "basic"
        )
        with self._lock:
            self._modes[(registry, host)] = issued
        return issued

    def _answer_bearer(
        self,
        registry: str,
        host: str,
        chosen: Challenge,
        scope: str,
        credential: Credential | None,
        sent: _Issued | None,
        *,
        timeout: float,
    ) -> _Issued:
        realm = chosen.params.get("realm", "")
        if not realm:
            raise RegistryAuthError(
                f"registry {registry} sent a Bearer challenge without a realm", registry=registry
            )
        trusted = self._trusted_all + self._trusted_by_registry.get(registry, ())
        refusal = realm_refusal(realm, host, trusted=trusted, registry=registry)
        if refusal is not None:
            raise RegistryAuthError(refusal, registry=registry)
        service = chosen.params.get("service", "")
        error = chosen.params.get("error", "")
        if credential is not None and credential.registry_token:
            return self._answer_static(registry, host, scope, credential, sent, error)
        mode = _BearerMode(realm, service)
        with self._lock:
            self._modes[(registry, host)] = mode
        fallback = tuple(chosen.params.get("scope", "").split())
        return self._bearer_token(
            registry, mode, scope, fallback, credential, sent, error, timeout=timeout
        )

    def _bearer_token(
        self,
        registry: str,
        mode: _BearerMode,
        scope: str,
        fallback_scopes: Sequence[str],
        credential: Credential | None,
        sent: _Issued | None,
        error: str,
        *,
        timeout: float,
    ) -> _Issued:
        """A valid token for the scope from the cache, or fetched (concurrent fetches shared).

        `sent` is the value last sent for this scope (None when nothing was sent, as for a
        proactive fetch): if it is the cached token, the registry rejected it, so it is dropped
        and fetched once more; a rejected replacement raises RegistryAuthError.
        """
        key: _TokenKey = (registry, mode.realm, mode.service, scope)
        with self._lock:
            current = self._tokens.get(key)
            if current is not None and current is sent:
                del self._tokens[key]
                current = None
        if current is not None and current.expires_at > self._clock():
            return current  # fetched meanwhile by another thread, or not yet tried
        if sent is not None and sent.replaces_rejected:
            who = f"user {credential.username!r}" if credential else "anonymous access"
            reason = f" ({error})" if error else ""
            raise RegistryAuthError(
                f"registry {registry} rejected a freshly issued token for {scope or 'access'}"
                f"{reason}; {who} may lack access",
                registry=registry,
            )
        request = build_token_request(
            mode.realm, mode.service, scope.split() or fallback_scopes, credential
        )
        replaces_rejected = sent is not None and sent.kind == "bearer"
        return self._fetch_shared(
            key, request, credential, sent, replaces_rejected=replaces_rejected, timeout=timeout
        )

    def _fetch_shared(
        self,
        key: _TokenKey,
        request: TokenRequest,
        credential: Credential | None,
        sent: _Issued | None,
        *,
        replaces_rejected: bool,
        timeout: float,
    ) -> _Issued:
        """The token for `key`, fetched with `request` unless a valid one other than `sent`
        was stored meanwhile; concurrent fetches of one key share one request."""
        registry = key[0]

        def fetch() -> _Issued:
            with self._lock:
                latest = self._tokens.get(key)
            if latest is not None and latest is not sent and latest.expires_at > self._clock():
                return latest  # stored by a fetch that finished just before this one started
            started = self._clock()
            answer = self._fetch(request, registry, credential, timeout=timeout)
            lifetime = max(answer.expires_in - EXPIRY_MARGIN, 0.0)
            issued = _Issued(
                f"Bearer {answer.token}", started + lifetime, "bearer", replaces_rejected
            )
            with self._lock:
                self._store(key, issued)
            return issued

        try:
            return self._fetches.do(key, fetch, timeout=timeout)
        except TimeoutError:
            realm_host = urlsplit(request.url).hostname or "?"
            raise RegistryUnavailable(
                f"token realm {realm_host} for {registry} timed out "
                "(waiting for a token another request is fetching)",
                registry=registry,
            ) from None

    def _answer_static(
        self,
        registry: str,
        host: str,
        scope: str,
        credential: Credential,
        sent: _Issued | None,
        error: str,
    ) -> _Issued:
        """A configured registry token is sent as the Bearer value, without a token server."""
        if sent is not None and sent.kind == "static":
            with self._lock:
                if self._modes.get((registry, host)) == sent:
                    del self._modes[(registry, host)]
            reason = f" ({error})" if error else ""
            raise RegistryAuthError(
                f"registry {registry} rejected the configured registry token for "
                f"{scope or 'access'}{reason}",
                registry=registry,
            )
        issued = _Issued(f"Bearer {credential.registry_token}", float("inf"), "static")
        with self._lock:
            self._modes[(registry, host)] = issued
        return issued

    def _store(self, key: _TokenKey, issued: _Issued) -> None:
        """Insert under the lock, evicting expired and then oldest entries past the cap."""
        self._tokens[key] = issued
        self._tokens.move_to_end(key)
        if len(self._tokens) > MAX_CACHED_TOKENS:
            now = self._clock()
            for stale in [k for k, v in self._tokens.items() if v.expires_at <= now]:
                del self._tokens[stale]
            while len(self._tokens) > MAX_CACHED_TOKENS:
                self._tokens.popitem(last=False)

    def _fetch(
        self,
        request: TokenRequest,
        registry: str,
        credential: Credential | None,
        *,
        timeout: float,
    ) -> TokenResponse:
        """Send the token request (no redirect followed, the answer capped at MAX_TOKEN_BODY)
        and read its token; the registry error the realm's failure or refusal means."""
        realm_host = urlsplit(request.url).hostname or "?"
        try:
            reply = exchange.exchange(
                self._session,
                request.method,
                request.url,
                timeout=timeout,
                read=lambda status: TOKEN_CAP,
                headers={"Accept": "application/json"},
                params=list(request.params) or None,
                data=list(request.form) or None,
                auth=request.basic,
            )
        except exchange.ExchangeFailed as failure:
            raise token_failure(failure, registry, realm_host) from None
        if reply.status == 200:
            try:
                return parse_token_response(reply.body)
            except RegistryAuthError as exc:
                raise RegistryAuthError(
                    f"token realm {realm_host} for {registry}: {exc}", registry=registry
                ) from None
        anonymous = request.basic is None and request.method == "GET"
        raise token_refusal(reply, registry, realm_host, credential, anonymous=anonymous)


def _choose(challenges: Sequence[Challenge], registry: str) -> Challenge:
    """Bearer first, then Basic; anything else cannot be answered."""
    for scheme in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == scheme:
                return challenge
    schemes = ", ".join(sorted({c.scheme for c in challenges}))
    raise RegistryAuthError(
        f"registry {registry} asks for unsupported authentication ({schemes})",
        registry=registry,
    )
