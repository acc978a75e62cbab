"""How the registry client gets one answer for a registry path: the protocol's request loop.

`Fetcher.fetch` tries each mirror, then the upstream, and returns the first 200 answer. For each
endpoint it sends the credentials its `AuthProvider` holds for that host, answers one 401
challenge, retries the upstream after a 5xx, an unreachable host or a 429 with `Retry-After`
while the deadline allows, and follows redirects by hand so `Authorization` never leaves the
registry's host. Each request goes through the transport layer's one entry point
(`exchange.exchange`), whose failures are worded here as registry errors; each is reported to
the listeners as a `RequestEvent`.

Authentication costs as few requests as the protocol allows: once a host's challenge is known,
the `AuthProvider` fetches credentials for a new scope before the request (no 401), and while
nothing is known yet about a host, only one request discovers it (a 401 tells the challenge,
any other answer that the host is open); concurrent requests to that host wait for that first
answer, bounded by their deadline, rather than each collecting its own 401.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import requests

from policy.deadline import Deadline
from policy.errors import (
    ManifestNotFound,
    RegistryAuthError,
    RegistryError,
    RegistryUnavailable,
)
from policy.registry import exchange, media
from policy.registry.endpoints import Endpoint, RegistryConfig, endpoints, redirect_target
from policy.registry.exchange import Cap
from policy.registry.messages import (
    ERROR_BODY_BYTES,
    authorization_secrets,
    display,
    rate_limited,
    registry_message,
    transport_error,
)
from policy.registry.ratelimits import RateLimit, parse_rate_limit, parse_retry_after

MAX_REDIRECTS = 5
MAX_FIRST_CONTACTS = 4096
"""Hosts whose first contact is remembered, beyond which settled ones are forgotten."""
BACKOFF_SECONDS = 0.2

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class AuthProvider(Protocol):
    """What the client needs from an authenticator (policy.registry.auth.Authenticator)."""

    def header(
        self, registry: str, host: str, scope: str, *, timeout: float | None = None
    ) -> str | None:
        """The `Authorization` value to send to that host for that scope, or None.

        Without `timeout`, only a cached value. With it (the client always passes one), the
        provider may fetch a value before the request, in at most `timeout` seconds, when it
        already knows how the host authenticates (e.g. a token for a new scope from a known
        Bearer realm), sparing the 401 round trip.
        """
        ...

    def challenge(
        self, registry: str, host: str, www_authenticate: str, scope: str, *, timeout: float
    ) -> str:
        """Answer a 401 challenge with an `Authorization` value (or raise RegistryAuthError)."""
        ...


@dataclass(frozen=True)
class RequestEvent:
    """One HTTP request sent (for metrics and request counting); `status` None on failure."""

    registry: str
    host: str
    method: str
    path: str
    status: int | None
    seconds: float


@dataclass(frozen=True)
class Answer:
    """A registry's final answer (redirects followed): status, headers, body as read."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    foreign: str | None = None  # the other host that answered, after a cross-host redirect


class _FirstContact:
    """The first request to a host whose authentication is not known yet, and what it met.

    `done` is set once its first answer (or failure) is in; `challenge` then holds that
    answer's `WWW-Authenticate` if it was a 401, so the requests that waited (and any later
    one the provider has no value for) can answer it for their own scope without a 401 of
    their own.
    """

    def __init__(self) -> None:
        self.done = threading.Event()
        self.challenge: str | None = None

    def settle(self, answer: Answer | None) -> None:
        """Record the first answer (None: the request failed) and release the waiters."""
        if answer is not None and answer.status == 401 and answer.foreign is None:
            self.challenge = answer.headers.get("WWW-Authenticate") or None
        self.done.set()


@dataclass(kw_only=True, eq=False)
class Fetcher:
    """Gets one answer for a registry path (see the module docstring).

    Thread-safe as long as the injected session is used only for simple requests.
    """

    session: requests.Session
    authenticator: AuthProvider | None
    registries: Mapping[str, RegistryConfig]
    retries: int
    request_timeout: float
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    _listeners: list[Callable[[RequestEvent], None]] = field(default_factory=list, init=False)
    _rate_limits: dict[str, RateLimit] = field(default_factory=dict, init=False)
    _first_contacts: dict[tuple[str, str], _FirstContact] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.registries = dict(self.registries)  # the caller's mapping may change later

    def listen(self, listener: Callable[[RequestEvent], None]) -> None:
        """Also call `listener` with each request's event."""
        self._listeners.append(listener)

    def rate_limit(self, registry: str) -> RateLimit | None:
        """The rate limit last reported by `registry`, if it ever sent one."""
        with self._lock:
            return self._rate_limits.get(registry)

    def fetch(
        self,
        registry: str,
        repository: str,
        reference: str,
        method: str,
        path: str,
        *,
        deadline: Deadline,
        max_bytes: int,
        kind: str = "manifest",
    ) -> Answer:
        """Try each mirror then the upstream; return the first 200 answer (a body over
        `max_bytes` is an IntegrityError; `kind` names what is asked for in a 404's error)."""
        ref = display(registry, repository, reference)
        ask = _Ask(registry, ref, f"repository:{repository}:pull", method, path, kind, max_bytes)
        # A mirror that fails in any way (unreachable, 401/403/404/429/5xx, a refused token)
        # hands over to the next endpoint: only a 200 answer is final. Each endpoint gets only
        # its own host's credentials (`_fetch_from`), so falling through leaks nothing.
        *mirrors, upstream = endpoints(registry, self._config(registry))
        tried: list[RegistryError] = []
        for mirror in mirrors:
            try:
                return self._fetch_from(mirror, ask, deadline)
            except RegistryError as error:
                if deadline.expired:
                    raise error from None
                tried.append(error)
        try:
            return self._fetch_from(upstream, ask, deadline)
        except RegistryError as exc:
            # Say what the mirrors answered when it differs from the upstream's failure (a
            # mirror's 404 beside an unreachable upstream), once, in the one error.
            other = [e for e in tried if type(e) is not type(exc)]
            if not other:
                raise
            said = "; ".join(str(e).removeprefix(f"{ref}: ") for e in other)
            raise type(exc)(
                f"{exc} (mirror{'s' if len(other) > 1 else ''}: {said})",
                registry=exc.registry,
                reference=exc.reference,
            ) from None

    def _config(self, registry: str) -> RegistryConfig:
        return self.registries.get(registry, RegistryConfig())

    def _fetch_from(self, endpoint: Endpoint, ask: _Ask, deadline: Deadline) -> Answer:
        """The 200 answer of one endpoint, or the RegistryError its answers mean. A mirror is
        asked once (no retry: the next endpoint is the fallback)."""
        retries = 0 if endpoint.mirror else self.retries
        attempt = 0
        # A mirror is another party: it gets only the credentials configured for its own
        # host, never the upstream registry's (the authenticator looks up by both names).
        auth_name = endpoint.host if endpoint.mirror else ask.registry
        authorization, leading = self._authorization(auth_name, endpoint.host, ask.scope, deadline)
        challenged = False
        while True:
            answer: Answer | None = None
            try:
                answer = self._follow(endpoint, ask, authorization, deadline)
            except RegistryUnavailable:
                if attempt < retries and self._backoff(attempt, deadline):
                    attempt += 1
                    continue
                raise
            finally:
                if leading is not None:
                    leading.settle(answer)
                    leading = None
            if answer.status == 200:
                return answer
            www = answer.headers.get("WWW-Authenticate")
            auth = self.authenticator
            if (
                answer.status == 401
                and answer.foreign is None
                and www
                and auth is not None
                and not challenged
            ):
                challenged = True
                authorization = auth.challenge(
                    auth_name,
                    endpoint.host,
                    www,
                    ask.scope,
                    timeout=deadline.timeout(self.request_timeout),
                )
                continue
            error = refusal(
                answer,
                endpoint.host,
                ask,
                authorization_secrets(authorization),
                answerable=self.authenticator is not None,
            )
            if attempt < retries and self._pause_to_retry(answer, attempt, deadline):
                attempt += 1
                continue
            raise error

    def _authorization(
        self, auth_name: str, host: str, scope: str, deadline: Deadline
    ) -> tuple[str | None, _FirstContact | None]:
        """What to send first to `host` for `scope`, and the first contact this request leads.

        The provider's value (cached, or fetched now from a known challenge) when it has one.
        Otherwise, while nothing is known yet about the host, one request goes first (it is
        returned as leader, and must `settle` its gate with its first answer); the others wait
        for that answer, bounded by the deadline, then answer the challenge it met (if any)
        for their own scope before sending anything. A challenge they cannot answer (it may
        hold for the first request's repository only) leaves them to send without credentials
        and answer their own 401, as without the gate.
        """
        if self.authenticator is None:
            return None, None
        timeout = deadline.timeout(self.request_timeout)
        authorization = self.authenticator.header(auth_name, host, scope, timeout=timeout)
        if authorization is not None:
            return authorization, None
        key = (auth_name, host)
        with self._lock:
            gate = self._first_contacts.get(key)
            if gate is None:
                if len(self._first_contacts) >= MAX_FIRST_CONTACTS:
                    for settled in [k for k, g in self._first_contacts.items() if g.done.is_set()]:
                        del self._first_contacts[settled]
                gate = self._first_contacts[key] = _FirstContact()
                return None, gate
        if not gate.done.is_set():
            gate.done.wait(min(deadline.remaining(), threading.TIMEOUT_MAX))
        if gate.challenge is None:
            return None, None
        try:
            authorization = self.authenticator.challenge(
                auth_name,
                host,
                gate.challenge,
                scope,
                timeout=deadline.timeout(self.request_timeout),
            )
        except RegistryAuthError:
            # The challenge was met by another request, maybe for another repository only:
            # this one asks without credentials and answers its own 401, if one comes.
            return None, None
        return authorization, None

    def _pause_to_retry(self, answer: Answer, attempt: int, deadline: Deadline) -> bool:
        """Whether a failed answer is asked again, after the pause taken here: a 429 after
        its `Retry-After` (when that leaves time), a 5xx after a backoff."""
        if answer.status == 429:
            value = answer.headers.get("Retry-After")
            if value is None:
                return False
            delay = parse_retry_after(value, answer.headers.get("Date"), now=self.wall_clock())
            if delay is None or delay >= deadline.remaining():
                return False
            self.sleep(delay)
            return True
        return answer.status >= 500 and self._backoff(attempt, deadline)

    def _backoff(self, attempt: int, deadline: Deadline) -> bool:
        """Sleep before retry `attempt + 1` if the pause leaves time to try; say whether."""
        pause = BACKOFF_SECONDS * (2**attempt)
        if pause >= deadline.remaining():
            return False
        self.sleep(pause)
        return True

    def _follow(
        self, endpoint: Endpoint, ask: _Ask, authorization: str | None, deadline: Deadline
    ) -> Answer:
        """Send one request and follow up to MAX_REDIRECTS redirects by hand: the
        Authorization header goes to the endpoint's origin only, its CA to its host only."""
        url = endpoint.base + ask.path
        origin = urlsplit(url)
        config = self._config(ask.registry)
        read = _read_policy(ask)
        for _ in range(MAX_REDIRECTS + 1):
            target = urlsplit(url)
            same_origin = (target.scheme, target.netloc) == (origin.scheme, origin.netloc)
            headers = {"Accept": media.ACCEPT, "Accept-Encoding": "identity"}
            if authorization and same_origin:
                headers["Authorization"] = authorization
            verify = endpoint.verify if target.netloc == origin.netloc else True
            reply = self._exchange(ask, url, headers, verify, read, deadline)
            if reply.status in _REDIRECTS:
                location = reply.headers.get("Location")
                if not location:
                    raise RegistryError(
                        f"{ask.ref}: redirect (HTTP {reply.status}) without a Location",
                        registry=ask.registry,
                        reference=ask.ref,
                    )
                url = redirect_target(url, location, config, ask.registry, ask.ref)
                continue
            foreign = None if target.netloc == origin.netloc else target.netloc
            return Answer(reply.status, reply.headers, reply.body, foreign)
        raise RegistryError(
            f"{ask.ref}: more than {MAX_REDIRECTS} redirects",
            registry=ask.registry,
            reference=ask.ref,
        )

    def _exchange(
        self,
        ask: _Ask,
        url: str,
        headers: dict[str, str],
        verify: bool | str,
        read: exchange.ReadPolicy,
        deadline: Deadline,
    ) -> exchange.Reply:
        """One request through the transport layer, reported to the listeners (status None
        when no answer came), the rate limit its headers report noted (even when its body
        then failed); its failures worded as registry errors about `ask.ref`."""
        parts = urlsplit(url)
        started = self.clock()

        def report(status: int | None) -> None:
            seconds = self.clock() - started
            event = RequestEvent(
                ask.registry, parts.netloc, ask.method, parts.path, status, seconds
            )
            for listener in self._listeners:
                listener(event)

        try:
            reply = exchange.exchange(
                self.session,
                ask.method,
                url,
                timeout=deadline.timeout(self.request_timeout),
                read=read,
                deadline=deadline,
                headers=headers,
                verify=verify,
            )
        except exchange.ExchangeFailed as failure:
            if failure.headers is not None:
                self._note_rate_limit(ask.registry, failure.headers)
            if not isinstance(failure, exchange.NoTimeLeft | exchange.Refused):
                report(None if failure.cut else failure.status)
            raise transport_error(failure, parts.netloc, ask.registry, ask.ref) from None
        self._note_rate_limit(ask.registry, reply.headers)
        # An exchange the transport cut at its deadline was not answered, whatever status
        # line came first.
        report(None if reply.cut else reply.status)
        return reply

    def _note_rate_limit(self, registry: str, headers: Mapping[str, str]) -> None:
        limit = parse_rate_limit(headers)
        if limit is not None:
            with self._lock:
                self._rate_limits[registry] = limit


@dataclass(frozen=True)
class _Ask:
    """What one `fetch` asks for, and how its errors name it."""

    registry: str
    ref: str  # the reference shown in messages
    scope: str
    method: str
    path: str
    kind: str
    max_bytes: int


def _read_policy(ask: _Ask) -> exchange.ReadPolicy:
    """No body for a HEAD or a redirect; a 200's whole body under the cap; the start of
    another answer's body, to quote from."""

    def read(status: int) -> Cap | None:
        if ask.method == "HEAD" or status in _REDIRECTS:
            return None
        if status == 200:
            return Cap(ask.max_bytes, "whole")
        return Cap(ERROR_BODY_BYTES, "prefix")

    return read


def refusal(
    answer: Answer, host: str, ask: _Ask, secrets: list[str], *, answerable: bool
) -> RegistryError:
    """The error a non-200 answer from `host` means (a 401 here is not answered again;
    `answerable`: an authenticator was there to answer one). `secrets` are redacted from
    what the registry's body says."""
    status, registry, ref = answer.status, ask.registry, ask.ref
    said = registry_message(answer.body, secrets)
    if answer.foreign is not None and status in (401, 403):
        # Storage behind a redirect never gets the registry's credentials, and its
        # challenges are not the registry's to answer.
        return RegistryAuthError(
            f"{ref}: {answer.foreign} (redirected to by {host}) refused access (HTTP {status})",
            registry=registry,
            reference=ref,
        )
    if status == 401:
        if not answerable or not answer.headers.get("WWW-Authenticate"):
            text = f"{host} requires authentication" + (
                " but sent no challenge" if answerable else ""
            )
        else:
            text = f"{host} refused the credentials"
        return RegistryAuthError(f"{ref}: {text}{said}", registry=registry, reference=ref)
    if status == 429:
        return rate_limited(registry, ref, answer.headers)
    if status == 404:
        return ManifestNotFound(
            f"{ask.kind} unknown: {ref}{said}", registry=registry, reference=ref
        )
    if status == 403:
        return RegistryAuthError(
            f"{ref}: access denied by {host} (HTTP 403){said}", registry=registry, reference=ref
        )
    kind = RegistryUnavailable if status >= 500 else RegistryError
    return kind(
        f"{ref}: {host} answered HTTP {status}{said}",
        registry=registry,
        reference=ref,
        status=status,
    )
