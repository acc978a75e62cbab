"""`RegistryResolver`: the facts each image needs, resolved in parallel under one deadline.

It coordinates its collaborators and owns what they share: the two thread pools (images; index
children) behind their bulkhead lanes (`policy.bulkhead`), the breakers (`policy.breakers`),
the tier source, and the whole answers per (reference, needs). A lookup runs its steps in
order — the tier, the digest and documents (`tags`, `documents`, `platforms`), the
attestations, the tag beside a digest, the signatures (`artifacts`) — and an image not resolved
in time gets an error naming the registry, for `onResolveError` to decide.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, Protocol, cast

from policy import tiers as tiers_mod
from policy.breakers import Breakers, ShortCircuited
from policy.bulkhead import Lanes
from policy.cache import SizedLRU, TTLCache, entry_size
from policy.deadline import Deadline
from policy.diskcache import DiskCache
from policy.errors import RegistryError, RegistryUnavailable
from policy.facts import ImageFacts, Needs, PlatformFacts, SignatureFacts
from policy.reference import Reference
from policy.registry import media
from policy.registry.client import RateLimit, RegistryClient, RequestEvent
from policy.resolver.artifacts import UNSIGNED_TTL, ArtifactLookup, judged, with_attached
from policy.resolver.documents import NEGATIVE_TTL, Documents
from policy.resolver.platforms import Platforms
from policy.resolver.steps import (
    FACT_ORDER,
    Errors,
    Failed,
    Steps,
    expiry,
    facts_after,
    late,
    reasons,
)
from policy.resolver.tags import Tags
from policy.sharedcache import SharedCache
from policy.signing import RootFile

ANSWER_ENTRIES = 4096  # whole answers kept (small: a few KiB each)
PER_REGISTRY = 16
"""Default cap on one registry's image lookups in flight (and, separately, on its index
children in flight): its share of each pool's threads."""
BREAK_AFTER = 5
BREAK_FOR = 5.0
HUB_LANE = tiers_mod.HUB
HUB_API = "Docker Hub API"


class TierSource(Protocol):
    """Answers the trusted-content tier of an image (`policy.tiers.Tiers` is the one source)."""

    def known(self, ref: Reference) -> tuple[str, str] | None:
        """`(tier, source)` when known without I/O (catalog, offline rule), else None."""
        ...

    def tier(self, ref: Reference, *, deadline: Deadline) -> tuple[str, str]:
        """`(tier, source)`; raises RegistryError when it cannot tell."""
        ...


@dataclass(frozen=True)
class ResolverStats:
    facts_hits: int
    facts_misses: int
    tag_hits: int
    tag_misses: int
    manifest_hits: int
    manifest_misses: int
    config_hits: int
    config_misses: int
    coalesced: int


@dataclass(frozen=True)
class Pressure:
    """What the resolver's threads are doing now (for metrics and /readyz).

    `in_flight`/`queued`: lookups running and waiting for a slot, by registry (image
    lookups and index children together); `threads`: the pool threads (both pools);
    `busy`: those running a lookup; `short_circuited`: registries refused for now.
    """

    in_flight: dict[str, int]
    queued: dict[str, int]
    threads: int
    busy: int
    short_circuited: list[str]


class _Read(NamedTuple):
    """What a lookup read of the image itself, and for how long it may be reused without
    asking again (the tag answer's freshness)."""

    digest: str | None
    media_type: str | None
    is_index: bool | None
    platforms: tuple[PlatformFacts, ...]
    valid_for: float


class RegistryResolver:
    """Fetches facts for images from their registries, caching and coalescing."""

    def __init__(
        self,
        client: RegistryClient,
        *,
        tiers: TierSource | None = None,
        tag_ttl: float = 300.0,
        cache_max_bytes: int = 256 * 1024 * 1024,
        negative_ttl: float = NEGATIVE_TTL,
        max_workers: int = 32,
        per_registry: int = PER_REGISTRY,
        break_after: int = BREAK_AFTER,
        break_for: float = BREAK_FOR,
        patience: float = float("inf"),
        request_timeout: float = 5.0,
        clock: Callable[[], float] | None = None,
        disk: DiskCache | None = None,
        unsigned_ttl: float = UNSIGNED_TTL,
        shared: SharedCache | None = None,
    ) -> None:
        self._tiers: TierSource = tiers if tiers is not None else tiers_mod.Tiers()
        self.client = client
        self.shared = shared
        """The Redis tier every replica shares (`policy.sharedcache`), if configured."""
        self._max_workers = max_workers
        self._closed = False
        self._start_pools(max_workers, per_registry, break_after, break_for, patience, clock)
        # A registry counts as answering from its first response (a 401 challenge, say),
        # not once a whole lookup is done: a new registry's queued lookups start a round
        # trip sooner (`bulkhead.Lanes`: one lookup at a time until it answers).
        client.listen(self._heard)
        # One byte budget, `cache_max_bytes`, split between every cache, each entry charged
        # `cache.entry_size(key, value)` (a deep size close to what CPython allocates):
        # manifests 7/16, signature artifacts and attestation statements 1/32 each, configs
        # 1/4, tag→digest 1/8, whole answers 1/16, 404s 1/16 ("unsigned" answers 1/64).
        budget = max(16, cache_max_bytes)
        self._steps = Steps(
            client, breakers=self._breakers, shared=shared, request_timeout=request_timeout
        )
        self._documents = Documents(
            self._steps, budget=budget, negative_ttl=negative_ttl, clock=clock, disk=disk
        )
        self._tag_lookup = Tags(
            self._steps, self._documents, budget=budget, tag_ttl=tag_ttl, clock=clock, disk=disk
        )
        self._artifacts = ArtifactLookup(
            self._steps, self._part_lanes, budget=budget, unsigned_ttl=unsigned_ttl, clock=clock
        )
        self._platforms = Platforms(self._steps, self._documents, self._part_lanes, budget=budget)
        self._tag_ttl = tag_ttl
        # Whole answers by (reference, needs), for requests that find everything cached.
        self._answers: TTLCache[tuple[Reference, Needs], ImageFacts] = TTLCache(
            ttl=tag_ttl, max_entries=ANSWER_ENTRIES, max_bytes=budget // 16, clock=clock
        )

    def _start_pools(
        self,
        max_workers: int,
        per_registry: int,
        break_after: int,
        break_for: float,
        patience: float,
        clock: Callable[[], float] | None,
    ) -> None:
        """The image and index-children pools, each behind its bulkhead lanes, and the
        breakers both share."""
        self._images = ThreadPoolExecutor(max_workers, thread_name_prefix="resolve")
        self._parts = ThreadPoolExecutor(max_workers, thread_name_prefix="resolve-part")
        # Bulkheads: each registry runs at most `per_registry` image lookups, and as many
        # index children, at a time; the rest wait in its queue holding no thread. Images and
        # children have separate shares, as they have separate pools: an image waiting for its
        # children never waits for a slot another image of its registry holds.
        self._breakers = Breakers(
            break_after=break_after, break_for=break_for, clock=clock or time.monotonic
        )
        # A registry answering slowly keeps no queue: see `bulkhead.Lanes` (`patience`).
        self._image_lanes, self._part_lanes = (
            Lanes(
                pool,
                cap=per_registry,
                breakers=self._breakers,
                patience=patience,
                clock=clock or time.monotonic,
            )
            for pool in (self._images, self._parts)
        )

    # --- public -------------------------------------------------------------------------

    def resolve(
        self, items: Sequence[tuple[Reference, Needs]], *, deadline: Deadline
    ) -> list[ImageFacts]:
        """Facts for each item, resolved in parallel; never raises for registry trouble."""
        # Fully known answers are served in the calling thread; only misses go to the pool.
        known = self._answers.get_many(items)
        misses = known.count(None)
        self._steps.count_answers(len(known) - misses, misses)
        if not misses:
            return cast(list[ImageFacts], known)  # no None left
        futures: dict[int, Future[ImageFacts] | str] = {}
        for i, (ref, needs) in enumerate(items):
            if known[i] is None:
                try:
                    futures[i] = self._image_lanes.submit(
                        _lane(ref, needs),
                        partial(self._resolve_holding, ref, needs, deadline),
                        expired=expiry(deadline),
                    )
                except ShortCircuited as exc:
                    futures[i] = str(exc)
        return [
            answer
            if (answer := known[i]) is not None
            else self._bounded(futures[i], ref, needs, deadline)
            for i, (ref, needs) in enumerate(items)
        ]

    def _resolve_holding(self, ref: Reference, needs: Needs, deadline: Deadline) -> ImageFacts:
        """`resolve_one`, holding the shared tier's leases it takes until it is done: another
        replica waiting for this image's tag reads its manifest and config from Redis too."""
        if self.shared is None:
            return self.resolve_one(ref, needs, deadline)
        with self.shared.holding():
            return self.resolve_one(ref, needs, deadline)

    def resolve_one(self, ref: Reference, needs: Needs, deadline: Deadline) -> ImageFacts:
        """Facts for one image (blocking; errors go into `ImageFacts.errors`, classified, and
        `ImageFacts.details`)."""
        errors: Errors = {}
        tier, tier_source = self._tier(ref, needs, deadline, errors)
        if not needs.registry:
            classes, details = reasons(errors)
            return ImageFacts(
                digest=ref.digest,
                tier=tier,
                tier_source=tier_source,
                errors=classes,
                details=details,
            )
        read = self._image(ref, needs, deadline, errors)
        platforms, valid_for = read.platforms, read.valid_for
        if needs.attestations and read.digest is not None and "digest" not in errors and platforms:
            platforms, fresh_for = self._attestations(
                ref, read.digest, platforms, needs, deadline, errors
            )
            valid_for = min(valid_for, fresh_for)
        tag_digest, tag_match, fresh_for = self._tag(ref, needs, deadline, errors)
        valid_for = min(valid_for, fresh_for)
        signatures, fresh_for = self._signatures(ref, read.digest, needs, deadline, errors)
        valid_for = min(valid_for, fresh_for)
        classes, details = reasons(errors)
        facts = ImageFacts(
            digest=read.digest,
            media_type=read.media_type,
            index=read.is_index,
            platforms=platforms,
            tier=tier,
            tier_source=tier_source,
            errors=classes,
            details=details,
            tag_digest=tag_digest,
            tag_match=tag_match,
            signatures=signatures,
        )
        if not errors and valid_for > 0:
            # Reused only while the tag answer it rests on is fresh: a tag is still
            # revalidated every `tag_ttl`. Failures are never reused from here.
            size = entry_size((ref, needs), facts, opaque=(RootFile,))  # roots: the rules'
            self._answers.put((ref, needs), facts, ttl=valid_for, size=size)
        return facts

    def rate_limit(self, registry: str) -> RateLimit | None:
        return self.client.rate_limit(registry)

    def caches(self) -> dict[str, SizedLRU[Any, Any] | TTLCache[Any, Any]]:
        """The caches charged to the `cache.maxBytes` budget, by name (for memory accounting)."""
        return {
            "manifests": self._documents.manifests,
            "configs": self._documents.configs,
            "answers": self._answers,
            "tags": self._tag_lookup.cache,
            "missing": self._documents.missing,
        }

    def stats(self) -> ResolverStats:
        counts = self._steps.counts()
        return ResolverStats(coalesced=self._steps.coalescer.stats.shared, **counts)

    def pressure(self) -> Pressure:
        """A snapshot of the bulkheads and breakers."""
        in_flight: dict[str, int] = {}
        queued: dict[str, int] = {}
        for lanes in (self._image_lanes, self._part_lanes):
            for key, lane in lanes.stats().items():
                in_flight[key] = in_flight.get(key, 0) + lane.in_flight
                queued[key] = queued.get(key, 0) + lane.queued
        hub = getattr(self._tiers, "hub", None)
        if isinstance(hub, tiers_mod.HubTiers) and hub.in_flight:
            in_flight[HUB_API] = hub.in_flight
        return Pressure(
            in_flight=in_flight,
            queued=queued,
            threads=2 * self._max_workers,
            busy=self._image_lanes.running + self._part_lanes.running,
            short_circuited=self._breakers.short_circuited(),
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._images.shutdown(wait=False, cancel_futures=True)
        self._parts.shutdown(wait=False, cancel_futures=True)
        if self.shared is not None:
            self.shared.close()

    def know(self, registries: Iterable[str]) -> None:
        """Treat `registries` as known to answer (named by the operator): they keep their
        threads when hosts never heard from crowd in (`bulkhead`)."""
        self._breakers.know(registries)

    # --- steps --------------------------------------------------------------------------

    def _bounded(
        self, future: Future[ImageFacts] | str, ref: Reference, needs: Needs, deadline: Deadline
    ) -> ImageFacts:
        """The job's answer by the deadline; else every fact it was to find fails, with why:
        its registry was short-circuited (`future` is that reason), too busy to start it, or
        did not answer in time. To a pod author all three are "registry unreachable"."""
        error: RegistryError
        if isinstance(future, str):
            error = RegistryUnavailable(future, registry=ref.registry)
        else:
            try:
                return future.result(timeout=deadline.remaining())
            except (FutureTimeout, CancelledError):
                if future.cancel():  # still queued (or dropped from the queue): never started
                    busy = self._image_lanes.busy(_lane(ref, needs), future)
                    error = RegistryUnavailable(busy, registry=ref.registry)
                else:
                    error = late(ref.registry)
        facts = [f for f in FACT_ORDER if getattr(needs, f)]
        if needs.tier:
            facts.append("tier")
        if needs.tag:
            facts.append("tag")
        if needs.signatures:
            facts.append("signatures")
        if needs.attestations:
            facts.append("attestations")
        classes, details = reasons(dict.fromkeys(facts, error))
        return ImageFacts(digest=ref.digest, errors=classes, details=details)

    def _heard(self, event: RequestEvent) -> None:
        if event.status is not None:
            self._breakers.success(event.registry)

    def _tier(
        self, ref: Reference, needs: Needs, deadline: Deadline, errors: Errors
    ) -> tuple[str | None, str | None]:
        """Catalog and offline rule always (no I/O); Docker Hub only when a check reads the tier."""
        known = self._tiers.known(ref)
        if known is not None:
            return known
        if not needs.tier:
            return None, None
        try:
            return self._tiers.tier(ref, deadline=deadline)
        except RegistryError as exc:
            errors["tier"] = exc
            return None, None

    def _image(self, ref: Reference, needs: Needs, deadline: Deadline, errors: Errors) -> _Read:
        """The digest (the tag's, when not in the reference), and when a check reads them the
        manifest's media type, whether it is an index, and its platforms. A failed step leaves
        it and every later fact unknown."""
        digest: str | None = ref.digest
        media_type: str | None = None
        index: bool | None = None
        platforms: tuple[PlatformFacts, ...] = ()
        valid_for = self._tag_ttl
        try:
            wants_document = needs.platforms or needs.manifest or needs.config
            if digest is None:
                head, valid_for = self._tag_lookup.head(ref, deadline, document=wants_document)
                digest, media_type = head.digest, head.media_type
            if wants_document:
                document = self._documents.manifest(ref.registry, ref.repository, digest, deadline)
                media_type = document.media_type
                index = isinstance(document, media.Index)
                platforms = self._platforms.read(ref, document, digest, needs, deadline, errors)
        except Failed as failed:
            for fact in facts_after(failed.fact):
                errors.setdefault(fact, failed.error)
        return _Read(digest, media_type, index, platforms, valid_for)

    def _attestations(
        self,
        ref: Reference,
        digest: str,
        platforms: tuple[PlatformFacts, ...],
        needs: Needs,
        deadline: Deadline,
        errors: Errors,
    ) -> tuple[tuple[PlatformFacts, ...], float]:
        """`platforms` with the attestations attached to `digest` (cosign's `.att` tag and
        the referrers), and for how long that answer stands."""
        try:
            found, fresh_for = self._artifacts.find(ref, digest, deadline, fact="attestations")
        except Failed as failed:
            errors["attestations"] = failed.error
            return platforms, float("inf")
        return with_attached(platforms, found, digest, needs), fresh_for

    def _tag(
        self, ref: Reference, needs: Needs, deadline: Deadline, errors: Errors
    ) -> tuple[str | None, bool | None, float]:
        """For `name:tag@digest` when a check reads the tag: where the tag points, whether
        that is the digest, and for how long that answer is fresh."""
        if not (needs.tag and ref.tag is not None and ref.digest is not None):
            return None, None, float("inf")
        try:
            return self._tag_lookup.points(ref, ref.digest, deadline)
        except Failed as failed:
            errors["tag"] = failed.error
            return None, None, float("inf")

    def _signatures(
        self, ref: Reference, digest: str | None, needs: Needs, deadline: Deadline, errors: Errors
    ) -> tuple[tuple[SignatureFacts, ...] | None, float]:
        """The signatures of `digest`, judged against the rules' keys and roots, and for how
        long that answer stands; None when not wanted or not fetched."""
        if not (needs.signatures and digest is not None and "digest" not in errors):
            return None, float("inf")
        try:
            found, fresh_for = self._artifacts.find(ref, digest, deadline)
        except Failed as failed:
            errors["signatures"] = failed.error
            return None, float("inf")
        return judged(found, digest, needs.keys, needs.roots), fresh_for


def _lane(ref: Reference, needs: Needs) -> str:
    """The bulkhead an image lookup waits in: its registry's, or Docker Hub's API when only
    its tier is wanted."""
    return ref.registry if needs.registry else HUB_LANE
