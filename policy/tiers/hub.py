"""The Docker Hub lookup of a namespace's trusted-content tier (shell layer).

Verified Publisher and Sponsored OSS are granted per namespace (organization), so the answer
is cached per namespace. The search API `GET {api}/api/search/v4?query={repository}&type=image`
is asked first, its result whose id/name is exactly the repository read for its `badge`; the
organization endpoint `GET {api}/v2/orgs/{namespace}/` is the second source, asked when the
search has no exact result or fails.

Badges map to tiers as `official` → `official`, `verified_publisher` → `verified_publisher`,
`open_source` → `sponsored_oss`, `none` or null → `none`. When Docker Hub cannot answer, the
tier is unknown: `HubTiers.tier` raises a `RegistryError` saying so and why (for the
operator; with the HTTP status, when Docker Hub answered one, from which `policy.failures`
classifies it for the pod author), and the rule set's `onResolveError` decides. Failures are
remembered for a short while (`negative_ttl`) so an outage is not hammered. Requests to the Hub
API go through the transport layer's one `exchange`: they never carry credentials, never follow
redirects, and are bounded by the decision's deadline, a per-request timeout and a size cap.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

import requests
import requests.auth

from policy import jsonbound
from policy.cache import Coalescer, TTLCache, entry_size
from policy.deadline import Deadline
from policy.diskcache import DiskCache
from policy.errors import EgressRefused, NoSource, RateLimited, RegistryError, RegistryUnavailable
from policy.reference import DEFAULT_REGISTRY, OFFICIAL_NAMESPACE, Reference
from policy.registry import exchange
from policy.registry.exchange import Cap, describe_failure
from policy.sharedcache import SharedCache

SOURCE_SEARCH: Final = "Docker Hub search"
SOURCE_ORG: Final = "Docker Hub org"

DEFAULT_API: Final = "https://hub.docker.com"
DEFAULT_TTL: Final = 24 * 3600.0
NEGATIVE_TTL: Final = 60.0
BODY_MAX: Final = 2 * 1024 * 1024
HUB: Final = "Docker Hub"

# Docker Hub badge → tier. `None` is the JSON null badge.
_BADGES: Final[Mapping[str | None, str]] = {
    "official": "official",
    "verified_publisher": "verified_publisher",
    "open_source": "sponsored_oss",
    "none": "none",
    None: "none",
}


class BadAnswer(ValueError):
    """A Docker Hub answer that does not have the documented shape."""


# --- pure parts -------------------------------------------------------------------------------


def badge_tier(badge: object) -> str:
    """The tier a Docker Hub `badge` value means; BadAnswer for an unknown badge."""
    if (badge is None or isinstance(badge, str)) and badge in _BADGES:
        return _BADGES[badge]
    raise BadAnswer(f"unknown badge {badge!r}")


def hub_namespace(ref: Reference) -> str | None:
    """The Docker Hub namespace (organization or user) of a docker.io image, else None."""
    if ref.registry != DEFAULT_REGISTRY:
        return None
    return ref.repository.split("/", 1)[0]


def exact_result(document: object, repository: str) -> Mapping[str, object] | None:
    """The search result naming exactly `repository` (`acme/app`), wherever it is in the list.

    A result matches when its `id` or `name` equals the repository; an official image may be
    listed by its bare name (`nginx` for `library/nginx`). BadAnswer when `document` is not a
    search answer (an object with a `results` list of objects).
    """
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        raise BadAnswer("search answer without a results list")
    names = {repository}
    namespace, _, rest = repository.partition("/")
    if namespace == OFFICIAL_NAMESPACE and rest:
        names.add(rest)
    for result in document["results"]:
        if not isinstance(result, dict):
            raise BadAnswer("search result that is not an object")
        if result.get("id") in names or result.get("name") in names:
            return result
    return None


def _search_answer(document: object, repository: str) -> str | None:
    """The tier the search answer gives `repository`, or None when it has no exact result
    (or the result has no `badge` field at all)."""
    result = exact_result(document, repository)
    if result is None or "badge" not in result:
        return None
    return badge_tier(result["badge"])


def _org_answer(document: object) -> str:
    if not isinstance(document, dict):
        raise BadAnswer("organization answer that is not an object")
    return badge_tier(document.get("badge"))


# --- Docker Hub lookup ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Failure:
    """Why Docker Hub could not answer for a namespace (cached briefly, shared by waiters)."""

    kind: type[RegistryError]
    reason: str
    status: int | None = None
    """The HTTP status Docker Hub answered, when that was the failure."""


class _Unanswered(Exception):
    def __init__(self, failure: _Failure) -> None:
        self.failure = failure
        super().__init__(failure.reason)


@dataclass(frozen=True)
class _Fetched:
    status: int
    document: object


class _NoAuth(requests.auth.AuthBase):
    """Strips any Authorization header: a session's auth, a default header, and (because an
    explicit `auth` is given) ~/.netrc never reach the Hub API."""

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers.pop("Authorization", None)
        return r


@dataclass(frozen=True)
class HubStats:
    """Counters of a `HubTiers`: namespace cache hits, lookups run, HTTP requests sent."""

    hits: int
    lookups: int
    requests: int


class HubTiers:
    """Asks Docker Hub which trusted-content program a namespace belongs to.

    Answers are cached per namespace for `ttl` seconds, failures for `negative_ttl`;
    concurrent lookups of one namespace share one lookup. Every request is bounded by
    `min(request_timeout, deadline.remaining())`.
    """

    def __init__(
        self,
        session: requests.Session,
        *,
        api: str = DEFAULT_API,
        ttl: float = DEFAULT_TTL,
        negative_ttl: float = NEGATIVE_TTL,
        request_timeout: float = 5.0,
        max_namespaces: int = 10_000,
        max_bytes: int = 4 * 1024 * 1024,
        max_in_flight: int = 4,
        clock: Callable[[], float] = time.monotonic,
        disk: DiskCache | None = None,
        shared: SharedCache | None = None,
    ) -> None:
        self._session = session
        self._disk = disk
        self._shared = shared
        self._ttl = ttl
        self.api = api.rstrip("/")
        self._request_timeout = request_timeout
        # Bounded in bytes too (3/4 answers, 1/4 failures), each entry charged `entry_size`.
        budget = max(16, max_bytes)
        self._answers: TTLCache[str, tuple[str, str]] = TTLCache(
            ttl=ttl, max_entries=max_namespaces, max_bytes=budget * 3 // 4, clock=clock
        )
        self._failures: TTLCache[str, _Failure] = TTLCache(
            ttl=negative_ttl, max_entries=max_namespaces, max_bytes=budget // 4, clock=clock
        )
        # A bulkhead of its own: at most `max_in_flight` lookups talk to the Hub API at once;
        # the others wait for a slot until their deadline, then the tier is unknown ("busy").
        self.max_in_flight = max_in_flight
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._in_flight = 0
        self._flights: Coalescer[str, tuple[str, str]] = Coalescer()
        self._lock = threading.Lock()
        self._counts = {"hits": 0, "lookups": 0, "requests": 0}

    def stats(self) -> HubStats:
        """A snapshot of the counters."""
        with self._lock:
            return HubStats(**self._counts)

    @property
    def in_flight(self) -> int:
        """Lookups talking to the Hub API now."""
        with self._lock:
            return self._in_flight

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def tier(self, ref: Reference, *, deadline: Deadline) -> tuple[str, str]:
        """`(tier, source)` of a Docker Hub image outside `library/`; RegistryError (with a
        message saying the tier is unknown, and why) when Docker Hub cannot answer."""
        namespace = hub_namespace(ref)
        if namespace is None:
            raise NoSource(
                f"trusted-content tier of {ref} is unknown: Docker Hub only knows docker.io images",
                registry=ref.registry,
                reference=str(ref),
            )
        cached = self._answers.get(namespace)
        if cached is not None:
            self._count("hits")
            return cached
        try:
            return self._flights.share(
                namespace,
                lambda shared: self._lookup(namespace, ref.repository, shared),
                deadline=deadline,
            )
        except _Unanswered as exc:
            raise _error(ref, namespace, exc.failure) from None
        except TimeoutError:
            failure = _Failure(RegistryUnavailable, "no answer within the decision deadline")
            raise _error(ref, namespace, failure) from None

    def _lookup(self, namespace: str, repository: str, deadline: Deadline) -> tuple[str, str]:
        """Runs once per namespace at a time (coalesced); caches its answer or failure."""
        cached = self._answers.get(namespace)
        if cached is not None:
            return cached
        failed = self._failures.get(namespace)
        if failed is not None:
            raise _Unanswered(_Failure(failed.kind, f"{failed.reason} (remembered)", failed.status))
        stored = self._disk.get_tier(namespace, max_age=self._ttl) if self._disk else None
        if stored is None and self._shared is not None:
            stored = self._shared.get_tier(namespace)  # kept in Redis for the tier TTL
        if stored is not None:
            self._answers.put(namespace, stored, size=entry_size(namespace, stored))
            return stored
        acquired = self._slots.acquire(timeout=min(deadline.remaining(), threading.TIMEOUT_MAX))
        if acquired and deadline.expired:
            self._slots.release()
            acquired = False
        if not acquired:
            # Not remembered as a failure: the Hub did not fail, we did not ask it.
            raise _Unanswered(
                _Failure(
                    RegistryUnavailable,
                    f"the Docker Hub API is busy: {self.in_flight} requests in flight",
                )
            )
        with self._lock:
            self._in_flight += 1
        try:
            self._count("lookups")
            try:
                answer = self._ask(namespace, repository, deadline)
            except _Unanswered as exc:
                self._failures.put(namespace, exc.failure, size=entry_size(namespace, exc.failure))
                raise
        finally:
            with self._lock:
                self._in_flight -= 1
            self._slots.release()
        self._answers.put(namespace, answer, size=entry_size(namespace, answer))
        if self._disk is not None:
            self._disk.put_tier(namespace, *answer)
        if self._shared is not None:
            self._shared.put_tier(namespace, *answer, ttl=self._ttl)
        return answer

    def _ask(self, namespace: str, repository: str, deadline: Deadline) -> tuple[str, str]:
        search_failure: _Failure | None = None
        try:
            fetched = self._get(
                f"{self.api}/api/search/v4",
                {"query": repository, "type": "image"},
                deadline,
                ok=(200,),
            )
            tier = _search_answer(fetched.document, repository)
        except _Unanswered as exc:
            search_failure = exc.failure
        except BadAnswer as exc:
            search_failure = _Failure(RegistryError, f"malformed search answer: {exc}")
        else:
            if tier is not None:
                return _checked(tier, namespace), SOURCE_SEARCH
        try:
            fetched = self._get(f"{self.api}/v2/orgs/{namespace}/", None, deadline, ok=(200, 404))
            if fetched.status == 404:
                if search_failure is None:
                    # The search knows no such repository and the namespace is no organization:
                    # only organizations are in Docker's programs.
                    return "none", SOURCE_ORG
                raise _Unanswered(_Failure(RegistryError, "org: HTTP 404"))
            return _checked(_org_answer(fetched.document), namespace), SOURCE_ORG
        except _Unanswered as exc:
            org_failure = exc.failure
        except BadAnswer as exc:
            org_failure = _Failure(RegistryError, f"malformed organization answer: {exc}")
        failures = [
            search_failure or _Failure(RegistryError, f"search: no result named {repository}"),
            org_failure,
        ]
        kind = next(
            (k for k in (RateLimited, RegistryUnavailable) if any(f.kind is k for f in failures)),
            RegistryError,
        )
        status = next((f.status for f in failures if f.kind is kind and f.status), None)
        reasons = "; ".join(f.reason for f in failures)
        raise _Unanswered(_Failure(kind, reasons, status))

    def _get(
        self,
        url: str,
        params: Mapping[str, str] | None,
        deadline: Deadline,
        *,
        ok: tuple[int, ...],
    ) -> _Fetched:
        """GET `url` without credentials or redirects, reading at most BODY_MAX bytes before
        the deadline; `_Unanswered` for any status not in `ok` and for transport failures."""
        what = "search" if "/api/search/" in url else "org"
        timeout = deadline.timeout(self._request_timeout)
        if timeout <= 0:
            raise _Unanswered(_Failure(RegistryUnavailable, f"{what}: no time left"))
        self._count("requests")
        try:
            reply = exchange.exchange(
                self._session,
                "GET",
                url,
                timeout=timeout,
                read=lambda status: Cap(BODY_MAX, "decoded") if status == 200 else None,
                deadline=deadline,
                headers={"Accept": "application/json"},
                params=params,
                auth=_NoAuth(),
            )
        except exchange.ExchangeFailed as failure:
            raise _Unanswered(_transport_failure(what, url, timeout, failure)) from None
        if reply.status not in ok:
            raise _Unanswered(_status_failure(what, reply))
        if reply.status != 200:
            return _Fetched(reply.status, None)
        try:
            return _Fetched(reply.status, jsonbound.loads(reply.body, max_bytes=BODY_MAX))
        except jsonbound.JSONRefused as exc:
            raise _Unanswered(_Failure(RegistryError, f"{what}: {exc}")) from None


def _transport_failure(
    what: str, url: str, timeout: float, failure: exchange.ExchangeFailed
) -> _Failure:
    """Why Docker Hub gave no answer, said from the transport's failure."""
    late = _Failure(RegistryUnavailable, f"{what}: no answer within {timeout:.1f}s")
    if isinstance(failure, exchange.NoTimeLeft):
        return _Failure(RegistryUnavailable, f"{what}: no time left")
    if isinstance(failure, exchange.Refused):
        return _Failure(EgressRefused, f"{what}: refused by egress policy: {failure.reason}")
    if isinstance(failure, exchange.TooLarge):
        return _Failure(RegistryError, f"{what}: answer larger than {BODY_MAX} bytes")
    if isinstance(failure, exchange.OutOfTime):
        return _Failure(RegistryUnavailable, f"{what}: answer not read in time")
    cause = (
        failure.cause if isinstance(failure, exchange.Unreachable | exchange.ReadFailed) else None
    )
    if cause is None or failure.cut or isinstance(cause, requests.Timeout):
        return late
    # Worded like the registry client's errors: who could not be reached, and why.
    host = urllib.parse.urlsplit(url).hostname or url
    return _Failure(RegistryUnavailable, f"{what}: cannot reach {host}: {describe_failure(cause)}")


def _status_failure(what: str, reply: exchange.Reply) -> _Failure:
    status = reply.status
    if status == 429:
        after = reply.headers.get("Retry-After")
        hint = f", retry after {after}s" if after and after.isdigit() else ""
        return _Failure(RateLimited, f"{what}: rate limited (HTTP 429{hint})", status)
    if status >= 500:
        return _Failure(RegistryUnavailable, f"{what}: HTTP {status}", status)
    if 300 <= status < 400:
        return _Failure(RegistryError, f"{what}: HTTP {status} redirect (not followed)", status)
    return _Failure(RegistryError, f"{what}: HTTP {status}", status)


def _checked(tier: str, namespace: str) -> str:
    """Only `library/` holds Docker Official Images: an `official` badge on another namespace
    is not believed."""
    if tier == "official" and namespace != OFFICIAL_NAMESPACE:
        raise _Unanswered(
            _Failure(RegistryError, f"'official' badge on namespace {namespace!r} (not library)")
        )
    return tier


def _error(ref: Reference, namespace: str, failure: _Failure) -> RegistryError:
    return failure.kind(
        f"trusted-content tier of {ref} is unknown: Docker Hub could not answer for namespace "
        f"{namespace!r} ({failure.reason})",
        registry=HUB,
        reference=str(ref),
        status=failure.status,
    )
