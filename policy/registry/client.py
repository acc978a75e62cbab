"""The OCI distribution client: HEAD/GET manifests and GET blobs, verified and bounded.

Every body is read streamed under a size cap and the caller's deadline, and checked
against its digest. Mirrors are tried before the upstream, 401 challenges are answered
through an `AuthProvider`, redirects are followed by hand so `Authorization` never leaves
the registry's host. The client does not cache: it makes exactly the requests asked of it.

Authentication costs as few requests as the protocol allows: once a host's challenge is known,
the `AuthProvider` fetches credentials for a new scope before the request (no 401), and while
nothing is known yet about a host, only one request discovers it (a 401 tells the challenge,
any other answer that the host is open); concurrent requests to that host wait for that first
answer, bounded by their deadline, rather than each collecting its own 401.
"""

from __future__ import annotations

import base64
import email.utils
import ipaddress
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol
from urllib.parse import urljoin, urlsplit

import requests
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from policy import jsonbound
from policy.deadline import Deadline
from policy.errors import (
    EgressRefused,
    IntegrityError,
    InvalidReference,
    ManifestNotFound,
    RateLimited,
    RegistryAuthError,
    RegistryError,
    RegistryUnavailable,
    UnsupportedManifest,
)
from policy.registry import media, transport
from policy.registry.transport import EgressDenied

MiB = 1024 * 1024
DOCKER_HUB = "docker.io"
DOCKER_HUB_UPSTREAM = "https://registry-1.docker.io"
MAX_REDIRECTS = 5
MAX_FIRST_CONTACTS = 4096
"""Hosts whose first contact is remembered, beyond which settled ones are forgotten."""
ERROR_BODY_BYTES = 64 * 1024
CHUNK_BYTES = 64 * 1024
BACKOFF_SECONDS = 0.2

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9-]+)*(?::\d{1,5})?")
_IPV6_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\](?::\d{1,5})?")
_REPOSITORY = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_TAG = re.compile(r"\w[\w.-]{0,127}")


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
class RegistryConfig:
    """How to reach one logical registry (from the settings file)."""

    mirrors: tuple[str, ...] = ()
    ca: str | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        for mirror in self.mirrors:
            parts = urlsplit(mirror)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"mirror {mirror!r} is not an http(s) base URL")
            if parts.query or parts.fragment or "@" in parts.netloc:
                raise ValueError(f"mirror {mirror!r} must not carry credentials, query or fragment")
            if parts.scheme == "http" and not (self.insecure or is_loopback(parts.netloc)):
                raise ValueError(f"mirror {mirror!r} uses plain http; set insecure: true to allow")


@dataclass(frozen=True)
class Limits:
    """Caps on what one registry answer may cost."""

    manifest_bytes: int = 4 * MiB
    config_bytes: int = 16 * MiB
    index_entries: int = media.MAX_INDEX_ENTRIES
    retries: int = 2


@dataclass(frozen=True)
class ManifestHead:
    """What a HEAD tells: the digest, the media type and (when sent) the size."""

    digest: str
    media_type: str
    size: int | None


@dataclass(frozen=True)
class Manifest:
    """A verified manifest: its digest, media type, raw bytes and parsed document."""

    digest: str
    media_type: str
    body: bytes
    document: media.Index | media.ImageManifest


@dataclass(frozen=True)
class RateLimit:
    """Docker Hub's `ratelimit-*` headers: "100;w=21600" → limit 100, window "6h"."""

    limit: int | None
    remaining: int | None
    window: str | None
    window_seconds: int | None = None

    def describe(self) -> str:
        """E.g. "0 of 100 left in 6h window" (parts not known are left out)."""
        if self.remaining is not None and self.limit is not None:
            text = f"{self.remaining} of {self.limit} left"
        elif self.remaining is not None:
            text = f"{self.remaining} left"
        elif self.limit is not None:
            text = f"limit {self.limit}"
        else:
            return ""
        if self.window:
            text += f" in {self.window} window"
        return text


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
class _Endpoint:
    base: str  # scheme://netloc[/prefix], no trailing slash
    host: str  # netloc, what the authenticator is keyed on
    verify: bool | str
    mirror: bool


@dataclass(frozen=True)
class _Answer:
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

    def settle(self, answer: _Answer | None) -> None:
        """Record the first answer (None: the request failed) and release the waiters."""
        if answer is not None and answer.status == 401 and answer.foreign is None:
            self.challenge = answer.headers.get("WWW-Authenticate") or None
        self.done.set()


class _Fallback(Exception):
    """A mirror failed in a way that lets the next endpoint try."""

    def __init__(self, error: RegistryError) -> None:
        self.error = error
        super().__init__(str(error))


class RegistryClient:
    """HEAD/GET manifests and GET blobs from OCI distribution registries.

    Thread-safe as long as the injected session is used only for simple requests.
    """

    def __init__(
        self,
        session: requests.Session,
        *,
        authenticator: AuthProvider | None,
        registries: Mapping[str, RegistryConfig] = MappingProxyType({}),
        limits: Limits = Limits(),
        request_timeout: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_request: Callable[[RequestEvent], None] | None = None,
    ) -> None:
        self._session = session
        self._auth = authenticator
        self._registries = dict(registries)
        self._limits = limits
        self._request_timeout = request_timeout
        self._sleep = sleep
        self._clock = clock
        self._wall_clock = wall_clock
        self._listeners: list[Callable[[RequestEvent], None]] = []
        if on_request is not None:
            self._listeners.append(on_request)
        self._rate_limits: dict[str, RateLimit] = {}
        self._first_contacts: dict[tuple[str, str], _FirstContact] = {}
        self._lock = threading.Lock()

    # --- public API --------------------------------------------------------------------

    def head_manifest(
        self, registry: str, repository: str, reference: str, *, deadline: Deadline
    ) -> ManifestHead:
        """The digest and media type of a manifest, by HEAD.

        Falls back to a GET (verified, digest computed) when the HEAD carries no
        `Docker-Content-Digest` or no manifest Content-Type.
        """
        path = self._manifest_path(registry, repository, reference)
        answer = self._fetch(
            registry, repository, reference, "HEAD", path, deadline=deadline, max_bytes=0
        )
        ref = _display(registry, repository, reference)
        header_digest = answer.headers.get("Docker-Content-Digest")
        content_type = media.content_type_of(answer.headers.get("Content-Type"))
        if content_type in media.SCHEMA1_TYPES:
            raise _with(
                UnsupportedManifest("unsupported (deprecated schema1) manifest"), registry, ref
            )
        if header_digest is None or content_type not in media.MANIFEST_TYPES:
            manifest = self.get_manifest(registry, repository, reference, deadline=deadline)
            return ManifestHead(manifest.digest, manifest.media_type, len(manifest.body))
        try:
            algorithm, _ = media.parse_digest(header_digest)
            if (
                media.is_digest(reference)
                and media.parse_digest(reference)[0] == algorithm
                and header_digest != reference
            ):
                raise IntegrityError(
                    f"digest mismatch: asked for {reference}, registry answered {header_digest}"
                )
        except RegistryError as exc:
            raise _with(exc, registry, ref) from None
        size = _content_length(answer.headers)
        if size is not None and size > self._limits.manifest_bytes:
            raise IntegrityError(
                f"{ref}: manifest is {size} bytes, over the limit of {self._limits.manifest_bytes}",
                registry=registry,
                reference=ref,
            )
        digest = reference if media.is_digest(reference) else header_digest
        return ManifestHead(digest=digest, media_type=content_type, size=size)

    def get_manifest(
        self,
        registry: str,
        repository: str,
        reference: str,
        *,
        deadline: Deadline,
        expected_digest: str | None = None,
    ) -> Manifest:
        """GET a manifest, verify its digest and media type, and parse it."""
        path = self._manifest_path(registry, repository, reference)
        ref = _display(registry, repository, reference)
        answer = self._fetch(
            registry,
            repository,
            reference,
            "GET",
            path,
            deadline=deadline,
            max_bytes=self._limits.manifest_bytes,
        )
        try:
            claimed = [
                d for d in (expected_digest, answer.headers.get("Docker-Content-Digest")) if d
            ]
            if media.is_digest(reference):
                claimed.insert(0, reference)
            for digest in claimed:
                media.verify_digest(answer.body, digest)
            digest = claimed[0] if claimed else media.compute_digest(answer.body)
            document = media.parse_manifest(
                answer.body,
                answer.headers.get("Content-Type"),
                max_index_entries=self._limits.index_entries,
            )
        except RegistryError as exc:
            raise _with(exc, registry, ref) from None
        return Manifest(
            digest=digest, media_type=document.media_type, body=answer.body, document=document
        )

    def get_blob(
        self, registry: str, repository: str, digest: str, *, deadline: Deadline, max_bytes: int
    ) -> bytes:
        """GET a blob (following redirects), at most `max_bytes`, verified against `digest`."""
        ref = f"{registry}/{repository}@{digest}"
        try:
            media.parse_digest(digest)
        except RegistryError as exc:
            raise _with(exc, registry, ref) from None
        path = f"/v2/{self._repository(registry, repository)}/blobs/{digest}"
        answer = self._fetch(
            registry,
            repository,
            digest,
            "GET",
            path,
            deadline=deadline,
            max_bytes=max_bytes,
            kind="blob",
        )
        try:
            media.verify_digest(answer.body, digest)
        except RegistryError as exc:
            raise _with(exc, registry, ref) from None
        return answer.body

    def get_referrers(
        self, registry: str, repository: str, digest: str, *, deadline: Deadline
    ) -> media.Index | None:
        """The OCI 1.1 referrers of `digest` (`GET /v2/<name>/referrers/<digest>`), an index;
        None when the registry does not offer the API (a 404 or another 4xx but 401/403/429,
        as the distribution spec says), so the caller falls back to the referrers tag."""
        ref = f"{registry}/{repository}@{digest}"
        try:
            media.parse_digest(digest)
        except RegistryError as exc:
            raise _with(exc, registry, ref) from None
        path = f"/v2/{self._repository(registry, repository)}/referrers/{digest}"
        try:
            answer = self._fetch(
                registry,
                repository,
                digest,
                "GET",
                path,
                deadline=deadline,
                max_bytes=self._limits.manifest_bytes,
                kind="referrers",
            )
        except ManifestNotFound:
            return None
        except RegistryError as exc:
            if (
                type(exc) is RegistryError
                and exc.status is not None
                and 400 <= exc.status < 500
                and exc.status not in (401, 403, 429)
            ):
                return None
            raise
        try:
            document = media.parse_manifest(
                answer.body,
                answer.headers.get("Content-Type") or media.OCI_INDEX,
                max_index_entries=self._limits.index_entries,
            )
        except RegistryError as exc:
            raise _with(exc, registry, ref) from None
        if not isinstance(document, media.Index):
            raise IntegrityError(
                f"{ref}: the referrers answer is not an image index",
                registry=registry,
                reference=ref,
            )
        return document

    def get_config(
        self, registry: str, repository: str, config: media.Descriptor, *, deadline: Deadline
    ) -> media.ImageConfig:
        """GET and parse an image config blob, capped at `limits.config_bytes`."""
        body = self.get_blob(
            registry,
            repository,
            config.digest,
            deadline=deadline,
            max_bytes=self._limits.config_bytes,
        )
        try:
            return media.parse_config(body)
        except RegistryError as exc:
            raise _with(exc, registry, f"{registry}/{repository}@{config.digest}") from None

    @property
    def limits(self) -> Limits:
        """The caps this client reads bodies under."""
        return self._limits

    def rate_limit(self, registry: str) -> RateLimit | None:
        """The rate limit last reported by `registry`, if it ever sent one."""
        with self._lock:
            return self._rate_limits.get(registry)

    # --- endpoints ---------------------------------------------------------------------

    def _config(self, registry: str) -> RegistryConfig:
        return self._registries.get(registry, RegistryConfig())

    def _endpoints(self, registry: str) -> list[_Endpoint]:
        if not (_HOST.fullmatch(registry) or _IPV6_HOST.fullmatch(registry)):
            raise InvalidReference(registry, "not a registry host[:port]")
        config = self._config(registry)
        verify: bool | str = config.ca if config.ca else True
        endpoints = [
            _Endpoint(base=m.rstrip("/"), host=urlsplit(m).netloc, verify=verify, mirror=True)
            for m in config.mirrors
        ]
        if registry == DOCKER_HUB:
            upstream = DOCKER_HUB_UPSTREAM
        elif (is_loopback(registry) and config.ca is None) or config.insecure:
            upstream = f"http://{registry}"
        else:
            upstream = f"https://{registry}"
        endpoints.append(
            _Endpoint(base=upstream, host=urlsplit(upstream).netloc, verify=verify, mirror=False)
        )
        return endpoints

    def _repository(self, registry: str, repository: str) -> str:
        if not _REPOSITORY.fullmatch(repository) or len(repository) > 255:
            raise InvalidReference(f"{registry}/{repository}", "invalid repository name")
        return repository

    def _manifest_path(self, registry: str, repository: str, reference: str) -> str:
        repo = self._repository(registry, repository)
        if not (_TAG.fullmatch(reference) or media.is_digest(reference)):
            raise InvalidReference(f"{registry}/{repository}:{reference}", "invalid tag or digest")
        return f"/v2/{repo}/manifests/{reference}"

    # --- the request loop ----------------------------------------------------------------

    def _fetch(
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
    ) -> _Answer:
        """Try each mirror then the upstream; return the first 200 answer."""
        ref = _display(registry, repository, reference)
        scope = f"repository:{repository}:pull"

        def fetch(endpoint: _Endpoint) -> _Answer:
            return self._fetch_from(
                endpoint,
                registry,
                ref,
                scope,
                method,
                path,
                deadline=deadline,
                max_bytes=max_bytes,
                kind=kind,
            )

        # A mirror that fails in any way (unreachable, 401/403/404/429/5xx, a refused token)
        # hands over to the next endpoint: only a 200 answer is final. Each endpoint gets only
        # its own host's credentials (`_fetch_from`), so falling through leaks nothing.
        *mirrors, upstream = self._endpoints(registry)
        tried: list[RegistryError] = []
        for mirror in mirrors:
            try:
                return fetch(mirror)
            except (_Fallback, RegistryError) as failure:
                error = failure.error if isinstance(failure, _Fallback) else failure
                if deadline.expired:
                    raise error from None
                tried.append(error)
        try:
            return fetch(upstream)
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

    def _fetch_from(
        self,
        endpoint: _Endpoint,
        registry: str,
        ref: str,
        scope: str,
        method: str,
        path: str,
        *,
        deadline: Deadline,
        max_bytes: int,
        kind: str,
    ) -> _Answer:
        retries = 0 if endpoint.mirror else self._limits.retries
        attempt = 0
        # A mirror is another party: it gets only the credentials configured for its own
        # host, never the upstream registry's (the authenticator looks up by both names).
        auth_name = endpoint.host if endpoint.mirror else registry
        authorization, leading = self._authorization(auth_name, endpoint.host, scope, deadline)
        challenged = False
        while True:
            secrets = _secrets(authorization)
            answer: _Answer | None = None
            try:
                answer = self._follow(
                    endpoint,
                    registry,
                    ref,
                    method,
                    path,
                    authorization,
                    deadline=deadline,
                    max_bytes=max_bytes,
                )
            except RegistryUnavailable as exc:
                if endpoint.mirror:
                    raise _Fallback(exc) from None
                if attempt < retries and self._backoff(attempt, deadline):
                    attempt += 1
                    continue
                raise
            finally:
                if leading is not None:
                    leading.settle(answer)
                    leading = None
            status = answer.status
            if status == 200:
                return answer
            if answer.foreign is not None and status in (401, 403):
                # Storage behind a redirect never gets the registry's credentials, and its
                # challenges are not the registry's to answer.
                raise RegistryAuthError(
                    f"{ref}: {answer.foreign} (redirected to by {endpoint.host}) refused access "
                    f"(HTTP {status})",
                    registry=registry,
                    reference=ref,
                )
            if status == 401:
                www = answer.headers.get("WWW-Authenticate")
                if self._auth is None or not www:
                    raise RegistryAuthError(
                        f"{ref}: {endpoint.host} requires authentication"
                        + ("" if self._auth is None else " but sent no challenge")
                        + _registry_message(answer.body, secrets),
                        registry=registry,
                        reference=ref,
                    )
                if challenged:
                    raise RegistryAuthError(
                        f"{ref}: {endpoint.host} refused the credentials"
                        + _registry_message(answer.body, secrets),
                        registry=registry,
                        reference=ref,
                    )
                challenged = True
                authorization = self._auth.challenge(
                    auth_name,
                    endpoint.host,
                    www,
                    scope,
                    timeout=deadline.timeout(self._request_timeout),
                )
                continue
            if status == 429:
                error = self._rate_limited(registry, ref, answer)
                if endpoint.mirror:
                    raise _Fallback(error)
                delay = self._retry_after(answer.headers)
                if delay is not None and attempt < retries and delay < deadline.remaining():
                    self._sleep(delay)
                    attempt += 1
                    continue
                raise error
            if status == 404:
                not_found = ManifestNotFound(
                    f"{kind} unknown: {ref}" + _registry_message(answer.body, secrets),
                    registry=registry,
                    reference=ref,
                )
                if endpoint.mirror:
                    raise _Fallback(not_found)
                raise not_found
            if status == 403:
                raise RegistryAuthError(
                    f"{ref}: access denied by {endpoint.host} (HTTP 403)"
                    + _registry_message(answer.body, secrets),
                    registry=registry,
                    reference=ref,
                )
            if status >= 500:
                unavailable = RegistryUnavailable(
                    f"{ref}: {endpoint.host} answered HTTP {status}"
                    + _registry_message(answer.body, secrets),
                    registry=registry,
                    reference=ref,
                    status=status,
                )
                if endpoint.mirror:
                    raise _Fallback(unavailable)
                if attempt < retries and self._backoff(attempt, deadline):
                    attempt += 1
                    continue
                raise unavailable
            raise RegistryError(
                f"{ref}: {endpoint.host} answered HTTP {status}"
                + _registry_message(answer.body, secrets),
                registry=registry,
                reference=ref,
                status=status,
            )

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
        if self._auth is None:
            return None, None
        timeout = deadline.timeout(self._request_timeout)
        authorization = self._auth.header(auth_name, host, scope, timeout=timeout)
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
            authorization = self._auth.challenge(
                auth_name,
                host,
                gate.challenge,
                scope,
                timeout=deadline.timeout(self._request_timeout),
            )
        except RegistryAuthError:
            # The challenge was met by another request, maybe for another repository only:
            # this one asks without credentials and answers its own 401, if one comes.
            return None, None
        return authorization, None

    def _backoff(self, attempt: int, deadline: Deadline) -> bool:
        """Sleep before retry `attempt + 1` if the pause leaves time to try; say whether."""
        pause = BACKOFF_SECONDS * (2**attempt)
        if pause >= deadline.remaining():
            return False
        self._sleep(pause)
        return True

    def _follow(
        self,
        endpoint: _Endpoint,
        registry: str,
        ref: str,
        method: str,
        path: str,
        authorization: str | None,
        *,
        deadline: Deadline,
        max_bytes: int,
    ) -> _Answer:
        """Send one request and follow up to MAX_REDIRECTS redirects by hand."""
        url = endpoint.base + path
        origin = urlsplit(url)
        config = self._config(registry)
        for _ in range(MAX_REDIRECTS + 1):
            target = urlsplit(url)
            same_origin = (target.scheme, target.netloc) == (origin.scheme, origin.netloc)
            headers = {"Accept": media.ACCEPT, "Accept-Encoding": "identity"}
            if authorization and same_origin:
                headers["Authorization"] = authorization
            verify = endpoint.verify if target.netloc == origin.netloc else True
            with self._send(
                registry, method, url, headers, verify, deadline=deadline, ref=ref
            ) as response:
                self._note_rate_limit(registry, response.headers)
                status = response.status_code
                if status in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        raise RegistryError(
                            f"{ref}: redirect (HTTP {status}) without a Location",
                            registry=registry,
                            reference=ref,
                        )
                    url = self._redirect_target(url, location, config, registry, ref)
                    continue
                limit = max_bytes if status == 200 else ERROR_BODY_BYTES
                body = b""
                if method != "HEAD":
                    body = self._read_body(
                        response,
                        limit,
                        deadline=deadline,
                        registry=registry,
                        ref=ref,
                        strict=status == 200,
                    )
                return _Answer(
                    status=status,
                    headers=CaseInsensitiveDict(response.headers),
                    body=body,
                    foreign=None if target.netloc == origin.netloc else target.netloc,
                )
        raise RegistryError(
            f"{ref}: more than {MAX_REDIRECTS} redirects", registry=registry, reference=ref
        )

    def _redirect_target(
        self, current: str, location: str, config: RegistryConfig, registry: str, ref: str
    ) -> str:
        url = urljoin(current, location)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or "@" in parts.netloc:
            raise RegistryError(
                f"{ref}: refusing redirect to a non-http(s) location",
                registry=registry,
                reference=ref,
            )
        if parts.scheme == "http" and urlsplit(current).scheme == "https":
            raise RegistryError(
                f"{ref}: refusing redirect from https to plain http host {parts.hostname}",
                registry=registry,
                reference=ref,
            )
        if parts.scheme == "http" and not (config.insecure or is_loopback(parts.netloc)):
            raise RegistryError(
                f"{ref}: refusing redirect to plain http host {parts.hostname}",
                registry=registry,
                reference=ref,
            )
        return url

    @contextmanager
    def _send(
        self,
        registry: str,
        method: str,
        url: str,
        headers: dict[str, str],
        verify: bool | str,
        *,
        deadline: Deadline,
        ref: str,
    ) -> Iterator[requests.Response]:
        parts = urlsplit(url)
        host = parts.netloc
        timeout = deadline.timeout(self._request_timeout)
        if timeout <= 0:
            raise RegistryUnavailable(
                f"{ref}: deadline passed before asking {host}", registry=registry, reference=ref
            )
        started = self._clock()
        transport.forget_exchange()
        try:
            response = self._session.request(
                method,
                url,
                headers=headers,
                stream=True,
                allow_redirects=False,
                timeout=(timeout, timeout),
                verify=verify,
            )
        except EgressDenied as exc:
            raise EgressRefused(
                f"{ref}: refused by egress policy: {exc.reason}", registry=registry, reference=ref
            ) from None
        except requests.RequestException as exc:
            self._emit(
                RequestEvent(registry, host, method, parts.path, None, self._clock() - started)
            )
            raise RegistryUnavailable(
                f"{ref}: cannot reach {host}: {describe_failure(exc)}",
                registry=registry,
                reference=ref,
            ) from None
        try:
            yield response
        finally:
            response.close()
            # An exchange the transport cut at its deadline was not answered, whatever
            # status line came first.
            status = None if transport.cut_short() else response.status_code
            self._emit(
                RequestEvent(registry, host, method, parts.path, status, self._clock() - started)
            )

    def listen(self, listener: Callable[[RequestEvent], None]) -> None:
        """Also call `listener` with each request's event (after `on_request`)."""
        self._listeners.append(listener)

    def _emit(self, event: RequestEvent) -> None:
        for listener in self._listeners:
            listener(event)

    def _read_body(
        self,
        response: requests.Response,
        limit: int,
        *,
        deadline: Deadline,
        registry: str,
        ref: str,
        strict: bool,
    ) -> bytes:
        """Read at most `limit` bytes, checking the deadline between chunks.

        With `strict`, a body over the limit or a compressed body is an IntegrityError;
        otherwise (error bodies) it is cut short.
        """
        host = urlsplit(response.url).netloc
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if strict and encoding not in ("", "identity"):
            raise IntegrityError(
                f"{ref}: {host} sent a {encoding!r}-encoded body that was not asked for",
                registry=registry,
                reference=ref,
            )
        length = _content_length(response.headers)
        if strict and length is not None and length > limit:
            raise IntegrityError(
                f"{ref}: body of {length} bytes is over the limit of {limit}",
                registry=registry,
                reference=ref,
            )
        chunks: list[bytes] = []
        total = 0
        raw = response.raw
        try:
            while True:
                if deadline.expired:
                    raise RegistryUnavailable(
                        f"{ref}: deadline passed while reading from {host}",
                        registry=registry,
                        reference=ref,
                    )
                chunk = raw.read1(CHUNK_BYTES, decode_content=False)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    if not strict:
                        chunks.append(chunk[: len(chunk) - (total - limit)])
                        break
                    raise IntegrityError(
                        f"{ref}: body is over the limit of {limit} bytes",
                        registry=registry,
                        reference=ref,
                    )
                chunks.append(chunk)
        except (requests.RequestException, OSError, Urllib3Error) as exc:
            why = "timed out" if transport.cut_short() else describe_failure(exc)
            raise RegistryUnavailable(
                f"{ref}: reading from {host} failed: {why}", registry=registry, reference=ref
            ) from None
        if transport.cut_short():  # the body "ended" because its time was up: no answer
            raise RegistryUnavailable(
                f"{ref}: reading from {host} failed: timed out", registry=registry, reference=ref
            )
        return b"".join(chunks)

    # --- rate limits -------------------------------------------------------------------

    def _note_rate_limit(self, registry: str, headers: Mapping[str, str]) -> None:
        limit = parse_rate_limit(headers)
        if limit is not None:
            with self._lock:
                self._rate_limits[registry] = limit

    def _rate_limited(self, registry: str, ref: str, answer: _Answer) -> RateLimited:
        limit = parse_rate_limit(answer.headers)
        detail = limit.describe() if limit else ""
        message = f"{registry} pull rate limit reached"
        if detail:
            message += f": {detail}"
        message += "; configure credentials or a mirror"
        return RateLimited(message, registry=registry, reference=ref)

    def _retry_after(self, headers: Mapping[str, str]) -> float | None:
        value = headers.get("Retry-After")
        if value is None:
            return None
        return parse_retry_after(value, headers.get("Date"), now=self._wall_clock())


# --- helpers (pure, table-tested) -------------------------------------------------------


def is_loopback(netloc: str) -> bool:
    """Whether `host[:port]` names this machine: localhost, 127.0.0.0/8 or [::1]."""
    host = netloc
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_rate_limit(headers: Mapping[str, str]) -> RateLimit | None:
    """Read `ratelimit-limit`/`ratelimit-remaining` ("100;w=21600"); None when absent."""
    limit_value = headers.get("ratelimit-limit")
    remaining_value = headers.get("ratelimit-remaining")
    if limit_value is None and remaining_value is None:
        return None
    limit, window_a = _rate_value(limit_value)
    remaining, window_b = _rate_value(remaining_value)
    seconds = window_a if window_a is not None else window_b
    return RateLimit(
        limit=limit,
        remaining=remaining,
        window=_human_seconds(seconds) if seconds is not None else None,
        window_seconds=seconds,
    )


def _rate_value(value: str | None) -> tuple[int | None, int | None]:
    if value is None:
        return None, None
    count: int | None = None
    window: int | None = None
    head, *params = value.split(";")
    if head.strip().isdigit():
        count = int(head.strip())
    for param in params:
        key, _, raw = param.partition("=")
        if key.strip() == "w" and raw.strip().isdigit():
            window = int(raw.strip())
    return count, window


def _human_seconds(seconds: int) -> str:
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds and seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def parse_retry_after(value: str, date: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After value (seconds or an HTTP date).

    An HTTP date is measured against the response's `Date` header when present, else
    against `now` (epoch seconds). None when unreadable.
    """
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    reference = now
    if date:
        try:
            reference = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError):
            reference = now
    return max(0.0, when - reference)


def describe_failure(exc: BaseException) -> str:
    """A short cause for a failed request, without URLs, headers or credentials."""
    seen: set[int] = set()
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        nxt = getattr(current, "reason", None)
        if not isinstance(nxt, BaseException):
            nxt = next((a for a in current.args if isinstance(a, BaseException)), None)
        current = nxt or current.__cause__ or current.__context__
    for error in reversed(chain):
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"TLS certificate verification failed ({error.verify_message})"
        if isinstance(error, ssl.SSLError):
            return "TLS handshake failed"
    for error in reversed(chain):
        if isinstance(error, OSError) and error.strerror:
            return error.strerror.lower()
    for error in chain:
        if isinstance(error, requests.Timeout | TimeoutError | Urllib3Timeout):
            return "timed out"
    names = {type(e).__name__ for e in chain}
    if "IncompleteRead" in names or "ProtocolError" in names:
        return "connection closed before the body was complete"
    return type(exc).__name__


def _content_length(headers: Mapping[str, str]) -> int | None:
    value = headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _secrets(authorization: str | None) -> list[str]:
    """The strings of an Authorization value that must never appear in a message."""
    if not authorization:
        return []
    out = [authorization]
    scheme, _, credential = authorization.partition(" ")
    if credential:
        out.append(credential.strip())
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credential.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            decoded = ""
        if decoded:
            out.append(decoded)
            password = decoded.partition(":")[2]
            if password:
                out.append(password)
    return sorted((s for s in out if s), key=len, reverse=True)


def _registry_message(body: bytes, secrets: Sequence[str] = ()) -> str:
    """`: CODE: message` from a `{"errors": [...]}` body.

    Control characters are removed, the text is clipped, and any part of the credential
    just sent (a registry may echo it) is redacted.
    """
    try:
        document = jsonbound.loads(body, max_bytes=ERROR_BODY_BYTES)
    except jsonbound.JSONRefused:
        return ""
    if not isinstance(document, dict) or not isinstance(document.get("errors"), list):
        return ""
    parts = []
    for error in document["errors"][:5]:
        if not isinstance(error, dict):
            continue
        code = error.get("code")
        message = error.get("message")
        text = ": ".join(x for x in (code, message) if isinstance(x, str) and x)
        if text:
            parts.append(text)
    if not parts:
        return ""
    text = "; ".join(parts)
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text)
    return ": " + (text if len(text) <= 200 else text[:200] + "…")


def _display(registry: str, repository: str, reference: str) -> str:
    """`registry/repository:tag` or `registry/repository@digest`, for messages."""
    sep = "@" if media.is_digest(reference) else ":"
    return f"{registry}/{repository}{sep}{reference}"


def _with(error: RegistryError, registry: str, reference: str) -> RegistryError:
    """The same error, its message prefixed with the reference, and located."""
    return type(error)(
        f"{reference}: {error}", registry=registry, reference=reference, status=error.status
    )
