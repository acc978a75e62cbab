"""How every fact is fetched: the plumbing the resolver's collaborators share.

`Steps` holds the registry client, the breakers, the coalescer and the hit/miss counts. A
registry call goes through `ask` (its outcome told to the registry's breaker); a lookup through
`step` (coalesced with identical lookups, run inside the shared tier's leases, and its failure
raised as `Failed`, naming the fact). `reasons` turns the errors met into what `ImageFacts`
carries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Mapping
from functools import partial
from types import MappingProxyType
from typing import TypeVar

from policy import failures
from policy.breakers import Breakers
from policy.coalescer import Coalescer
from policy.deadline import Deadline
from policy.errors import RegistryError, RegistryUnavailable
from policy.facts import NO_REASONS
from policy.registry.client import RegistryClient
from policy.sharedcache import SharedCache

T = TypeVar("T")

FACT_ORDER = ("digest", "platforms", "manifest", "config")
"""The facts read one after the other: a failed step leaves every later one unknown."""

COUNTS = (
    "tag_hits",
    "tag_misses",
    "manifest_hits",
    "manifest_misses",
    "config_hits",
    "config_misses",
    "facts_hits",
    "facts_misses",
)
"""The hit and miss counts `ResolverStats` reports."""


Errors = dict[str, RegistryError]
"""The errors met while resolving one image, by the fact each left unknown."""


class Failed(Exception):
    """One fact could not be fetched; carries which fact and why."""

    def __init__(self, fact: str, error: RegistryError) -> None:
        self.fact = fact
        self.error = error
        super().__init__(str(error))


class Steps:
    """The registry client with its breakers, the coalescer, and the counts, for every lookup."""

    def __init__(
        self,
        client: RegistryClient,
        *,
        breakers: Breakers,
        shared: SharedCache | None,
        request_timeout: float,
    ) -> None:
        self.client = client
        self.breakers = breakers
        self.shared = shared
        """The Redis tier every replica shares (`policy.sharedcache`), if configured."""
        self.coalescer: Coalescer[Hashable, object] = Coalescer()
        self._request_timeout = request_timeout
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTS, 0)

    def count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def count_answers(self, hits: int, misses: int) -> None:
        """Count whole answers served from memory (`hits`) and looked up (`misses`)."""
        with self._lock:
            self._counts["facts_hits"] += hits
            self._counts["facts_misses"] += misses

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def ask(self, registry: str, deadline: Deadline, call: Callable[[], T]) -> T:
        """One registry call, its outcome told to the registry's breaker: an answer (even an
        error status) closes it; a RegistryUnavailable once the time ran out (the request's
        timeout or the deadline) counts as a timeout."""
        started = time.monotonic()
        try:
            result = call()
        except RegistryUnavailable:
            elapsed = time.monotonic() - started
            if deadline.expired or elapsed >= self._request_timeout:
                self.breakers.timeout(registry)
            raise
        except RegistryError:
            self.breakers.success(registry)
            raise
        self.breakers.success(registry)
        return result

    def coalesced(self, key: Hashable, fn: Callable[[Deadline], T], deadline: Deadline) -> T:
        """`fn` shared with concurrent lookups of `key`, under the latest of their deadlines
        (`Coalescer.share`: no waiter fails early for the starter's lack of time)."""
        result = self.coalescer.share(key, fn, deadline=deadline)
        return result  # type: ignore[return-value]

    def step(self, fact: str, key: Hashable, fn: Callable[[Deadline], T], deadline: Deadline) -> T:
        """`fn` coalesced on `key`; a registry error or a timeout is raised as `Failed(fact)`."""
        if self.shared is not None:
            fn = partial(_holding, self.shared, fn)  # off a resolution's thread: its own leases
        try:
            return self.coalesced(key, fn, deadline)
        except RegistryError as exc:
            raise Failed(fact, exc) from None
        except TimeoutError:
            raise Failed(fact, late(str(key[1]) if isinstance(key, tuple) else "")) from None


def _holding(shared: SharedCache, fn: Callable[[Deadline], T], deadline: Deadline) -> T:
    """`fn(deadline)` inside `shared.holding()`: leases it takes are released when it returns,
    unless a resolution on this thread holds them until it ends."""
    with shared.holding():
        return fn(deadline)


def expiry(deadline: Deadline) -> Callable[[], bool]:
    """Whether `deadline` has passed, as a function (a queued job asks before it starts)."""
    return lambda: deadline.expired


def late(registry: str) -> RegistryUnavailable:
    """The error of a fact not fetched within the decision deadline."""
    return RegistryUnavailable(
        f"no answer from {registry} within the decision deadline", registry=registry
    )


def reasons(
    errors: Mapping[str, RegistryError],
) -> tuple[Mapping[str, str], Mapping[str, str]]:
    """`ImageFacts.errors` (each error's class, `policy.failures`) and `ImageFacts.details`
    (its whole message) for the errors met; the tier is Docker Hub's to answer."""
    if not errors:
        return NO_REASONS, NO_REASONS
    classes = {
        fact: failures.classify(
            error, party=failures.DOCKER_HUB if fact == "tier" else failures.REGISTRY
        )
        for fact, error in errors.items()
    }
    details = {fact: str(error) for fact, error in errors.items()}
    return MappingProxyType(classes), MappingProxyType(details)


def facts_after(fact: str) -> tuple[str, ...]:
    """A failed step leaves that fact and every later one unknown."""
    return FACT_ORDER[FACT_ORDER.index(fact) :] if fact in FACT_ORDER else (fact,)
