"""Resolve the facts each image needs from its registry, with the fewest requests.

- tag → digest by HEAD (Docker Hub does not count HEADs against the pull limit), cached for
  `tag_ttl`; a digest reference needs no request at all;
- manifests and configs by digest (immutable) in a byte-bounded LRU;
- child manifests of an index only for the platforms the checks read, configs only when a
  config check applies, nothing for checks that read only the reference;
- a short negative cache for 404s;
- signatures by image digest: cosign's `sha256-<hex>.sig` tag and the OCI referrers of the
  digest (or, where the registry lacks the referrers API, their `sha256-<hex>` fallback tag),
  every artifact digest-verified and size-capped, at most `MAX_SIGNATURES` read; what was found
  is kept as long as the cache keeps it, "no signatures" only for `unsigned_ttl` (signatures
  are added after a push); each answer verified against the keys the rules name;
- concurrent identical lookups coalesced into one upstream request, run under the latest
  deadline of the reviews waiting on it (`Coalescer.share`);
- the images of one decision resolved in parallel under one deadline: an image not resolved
  in time gets an error naming the registry, and `onResolveError` decides;
- bulkheads: each registry runs at most `per_registry` lookups at a time on each pool (the
  rest queue without a thread: "registry X is busy"), and a registry that keeps timing out is
  short-circuited for a while (`policy.bulkhead`), so a slow or dead registry cannot take the
  threads images on other registries need.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Protocol, TypeVar, cast

import requests

from policy import attestations, failures, sharedcache, sigverify
from policy import tiers as tiers_mod
from policy.bulkhead import Breakers, Lanes, ShortCircuited
from policy.cache import Coalescer, SizedLRU, TTLCache, entry_size
from policy.deadline import Deadline
from policy.diskcache import DiskCache
from policy.egress import Mode
from policy.errors import ManifestNotFound, RegistryError, RegistryUnavailable
from policy.facts import (
    ATTESTATION_PLATFORM,
    NO_REASONS,
    AttestationFacts,
    ImageFacts,
    Needs,
    PlatformFacts,
    SignatureFacts,
)
from policy.reference import Reference
from policy.registry import media
from policy.registry.auth import Authenticator
from policy.registry.client import (
    ManifestHead,
    RateLimit,
    RegistryClient,
    RegistryConfig,
    RequestEvent,
)
from policy.registry.credentials import Credential, CredentialStore, default_docker_config
from policy.registry.session import RegistrySession, egress_policy, new_session
from policy.registry.transport import Transport
from policy.settings import Settings
from policy.sharedcache import Missing, SharedCache
from policy.signing import RootFile

T = TypeVar("T")

NEGATIVE_TTL = 30.0
UNSIGNED_TTL = 30.0
"""Seconds "no signatures" is believed for a digest: signatures are pushed after the image."""
MAX_SIGNATURES = 32
"""Signature artifacts read per digest from each place (cosign's `.sig` layers; referrers)."""
MAX_ATTESTATIONS = 16
"""In-toto statements read per platform image."""
ANSWER_ENTRIES = 4096  # whole answers kept (small: a few KiB each)
PER_REGISTRY = 16
"""Default cap on one registry's image lookups in flight (and, separately, on its index
children in flight): its share of each pool's threads."""
BREAK_AFTER = 5
BREAK_FOR = 5.0


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


@dataclass(frozen=True)
class _Artifacts:
    """The signature artifacts of one digest, fetched and digest-verified, not yet judged:
    cosign layers (payload, annotations), Sigstore bundles, and those refused before
    verification (format, why)."""

    cosign: tuple[tuple[bytes, Mapping[str, str]], ...] = ()
    bundles: tuple[bytes, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.cosign or self.bundles or self.refused)


@dataclass(frozen=True)
class _Place:
    """cosign's tag for one kind of artifact: its suffix, layer media type and size cap."""

    suffix: str
    media_type: str
    limit: int
    what: str


_PLACES = {
    "signatures": _Place(".sig", sigverify.SIMPLE_SIGNING, sigverify.MAX_PAYLOAD_BYTES, "payload"),
    "attestations": _Place(".att", sigverify.DSSE_ENVELOPE, sigverify.MAX_BUNDLE_BYTES, "envelope"),
}


class _Failed(Exception):
    """One fact could not be fetched; carries which fact and why."""

    def __init__(self, fact: str, error: RegistryError) -> None:
        self.fact = fact
        self.error = error
        super().__init__(str(error))


TAG_MEMORY = 24 * 3600.0
"""Seconds a tag's answer is remembered after the registry gave it (the tag TTL if longer),
so that asking again once it is stale takes a HEAD (not a GET: the manifest it named is likely
still cached)."""


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
        self.client = client
        self._unsigned_ttl = unsigned_ttl
        self.shared = shared
        """The Redis tier every replica shares (`policy.sharedcache`), if configured."""
        self._request_timeout = request_timeout
        self._max_workers = max_workers
        self._closed = False
        self._disk = disk
        self._tag_ttl = tag_ttl
        self._negative_ttl = negative_ttl
        self._tiers: TierSource = tiers if tiers is not None else tiers_mod.Tiers()
        # One byte budget, `cache_max_bytes`, split between every cache, each entry charged
        # `cache.entry_size(key, value)` (a deep size close to what CPython allocates):
        # manifests 7/16, signature artifacts and attestation statements 1/32 each, configs
        # 1/4, tag→digest 1/8, whole answers 1/16, 404s 1/16 ("unsigned" answers 1/64).
        budget = max(16, cache_max_bytes)
        self._clock = clock if clock is not None else time.monotonic
        self._tag_memory = max(TAG_MEMORY, tag_ttl)  # a tag is remembered at least while fresh
        # tag → (answer, when learned): fresh for `tag_ttl`, remembered for TAG_MEMORY
        self._tags: TTLCache[Hashable, tuple[ManifestHead, float]] = TTLCache(
            ttl=tag_ttl, max_entries=100_000, max_bytes=budget // 8, clock=clock
        )
        self._missing: TTLCache[Hashable, RegistryError] = TTLCache(
            ttl=negative_ttl, max_entries=10_000, max_bytes=budget // 16, clock=clock
        )
        self._manifests: SizedLRU[Hashable, media.Index | media.ImageManifest] = SizedLRU(
            budget * 7 // 16
        )
        self._signatures: SizedLRU[Hashable, _Artifacts] = SizedLRU(budget // 32)
        self._statement_cache: SizedLRU[Hashable, bytes] = SizedLRU(budget // 32)
        # digest → its referrer bundles, shared by signature and attestation lookups
        self._referrers: TTLCache[
            Hashable, tuple[tuple[bytes, ...], tuple[tuple[str, str], ...]]
        ] = TTLCache(ttl=unsigned_ttl, max_entries=1_000, max_bytes=budget // 64, clock=clock)
        # digest → when it was found unsigned (believed for `unsigned_ttl`)
        self._unsigned: TTLCache[Hashable, float] = TTLCache(
            ttl=unsigned_ttl, max_entries=10_000, max_bytes=budget // 64, clock=clock
        )
        self._configs: SizedLRU[Hashable, media.ImageConfig] = SizedLRU(budget // 4)
        self._coalescer: Coalescer[Hashable, object] = Coalescer()
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
        # A registry counts as answering from its first response (a 401 challenge, say),
        # not once a whole lookup is done: a new registry's queued lookups start a round
        # trip sooner (`bulkhead.Lanes`: one lookup at a time until it answers).
        client.listen(self._heard)
        self._lock = threading.Lock()
        self._counts = {"tag_hits": 0, "tag_misses": 0, "manifest_hits": 0, "manifest_misses": 0}
        self._counts |= {"config_hits": 0, "config_misses": 0, "facts_hits": 0, "facts_misses": 0}
        # Whole answers by (reference, needs), for requests that find everything cached.
        self._answers: TTLCache[tuple[Reference, Needs], ImageFacts] = TTLCache(
            ttl=tag_ttl, max_entries=ANSWER_ENTRIES, max_bytes=budget // 16, clock=clock
        )

    # --- public -------------------------------------------------------------------------

    def resolve(
        self, items: Sequence[tuple[Reference, Needs]], *, deadline: Deadline
    ) -> list[ImageFacts]:
        """Facts for each item, resolved in parallel; never raises for registry trouble."""
        # Fully known answers are served in the calling thread; only misses go to the pool.
        known = self._answers.get_many(items)
        misses = known.count(None)
        with self._lock:
            self._counts["facts_hits"] += len(known) - misses
            self._counts["facts_misses"] += misses
        if not misses:
            return cast(list[ImageFacts], known)  # no None left
        futures: dict[int, Future[ImageFacts] | str] = {}
        for i, (ref, needs) in enumerate(items):
            if known[i] is None:
                try:
                    futures[i] = self._image_lanes.submit(
                        _lane(ref, needs),
                        partial(self._resolve_holding, ref, needs, deadline),
                        expired=_expiry(deadline),
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
        errors: dict[str, RegistryError] = {}
        tier, tier_source = self._tier(ref, needs, deadline, errors)
        if not needs.registry:
            reasons, details = _reasons(errors)
            return ImageFacts(
                digest=ref.digest,
                tier=tier,
                tier_source=tier_source,
                errors=reasons,
                details=details,
            )
        digest: str | None = ref.digest
        media_type: str | None = None
        index: bool | None = None
        platforms: tuple[PlatformFacts, ...] = ()
        valid_for = self._tag_ttl  # how long the answer may be reused without asking again
        try:
            wants_document = needs.platforms or needs.manifest or needs.config
            if digest is None:
                head, valid_for = self._head(ref, deadline, document=wants_document)
                digest, media_type = head.digest, head.media_type
            if wants_document:
                document = self._manifest(ref.registry, ref.repository, digest, deadline)
                media_type = document.media_type
                index = isinstance(document, media.Index)
                platforms = self._platforms(ref, document, digest, needs, deadline, errors)
        except _Failed as failed:
            for fact in _facts_after(failed.fact):
                errors.setdefault(fact, failed.error)
        if needs.attestations and digest is not None and "digest" not in errors and platforms:
            try:
                found_att, fresh_for = self._signature_artifacts(
                    ref, digest, deadline, fact="attestations"
                )
                platforms = _with_attached(platforms, found_att, digest, needs)
                valid_for = min(valid_for, fresh_for)
            except _Failed as failed:
                errors["attestations"] = failed.error
        tag_digest: str | None = None
        tag_match: bool | None = None
        if needs.tag and ref.tag is not None and ref.digest is not None:
            try:
                tag_digest, tag_match, fresh_for = self._tag_points(ref, ref.digest, deadline)
                valid_for = min(valid_for, fresh_for)
            except _Failed as failed:
                errors["tag"] = failed.error
        signatures: tuple[SignatureFacts, ...] | None = None
        if needs.signatures and digest is not None and "digest" not in errors:
            try:
                found, fresh_for = self._signature_artifacts(ref, digest, deadline)
                signatures = _judged(found, digest, needs.keys, needs.roots)
                valid_for = min(valid_for, fresh_for)
            except _Failed as failed:
                errors["signatures"] = failed.error
        reasons, details = _reasons(errors)
        facts = ImageFacts(
            digest=digest,
            media_type=media_type,
            index=index,
            tier=tier,
            tier_source=tier_source,
            platforms=platforms,
            errors=reasons,
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

    def stats(self) -> ResolverStats:
        with self._lock:
            counts = dict(self._counts)
        return ResolverStats(coalesced=self._coalescer.stats.shared, **counts)

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
                    error = _late(ref.registry)
        facts = [f for f in _FACT_ORDER if getattr(needs, f)]
        if needs.tier:
            facts.append("tier")
        if needs.tag:
            facts.append("tag")
        if needs.signatures:
            facts.append("signatures")
        if needs.attestations:
            facts.append("attestations")
        reasons, details = _reasons(dict.fromkeys(facts, error))
        return ImageFacts(digest=ref.digest, errors=reasons, details=details)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def _coalesced(self, key: Hashable, fn: Callable[[Deadline], T], deadline: Deadline) -> T:
        """`fn` shared with concurrent lookups of `key`, under the latest of their deadlines
        (`Coalescer.share`: no waiter fails early for the starter's lack of time)."""
        result = self._coalescer.share(key, fn, deadline=deadline)
        return result  # type: ignore[return-value]

    def know(self, registries: Iterable[str]) -> None:
        """Treat `registries` as known to answer (named by the operator): they keep their
        threads when hosts never heard from crowd in (`bulkhead`)."""
        self._breakers.know(registries)

    def _heard(self, event: RequestEvent) -> None:
        if event.status is not None:
            self._breakers.success(event.registry)

    def _ask(self, registry: str, deadline: Deadline, call: Callable[[], T]) -> T:
        """One registry call, its outcome told to the registry's breaker: an answer (even an
        error status) closes it; a RegistryUnavailable once the time ran out (the request's
        timeout or the deadline) counts as a timeout."""
        started = time.monotonic()
        try:
            result = call()
        except RegistryUnavailable:
            elapsed = time.monotonic() - started
            if deadline.expired or elapsed >= self._request_timeout:
                self._breakers.timeout(registry)
            raise
        except RegistryError:
            self._breakers.success(registry)
            raise
        self._breakers.success(registry)
        return result

    def _tier(
        self, ref: Reference, needs: Needs, deadline: Deadline, errors: dict[str, RegistryError]
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

    def _head(
        self, ref: Reference, deadline: Deadline, *, document: bool = False
    ) -> tuple[ManifestHead, float]:
        """The tag's digest, and for how many more seconds that answer is fresh.

        A tag asked about before (its answer in memory or on disk, however old) is revalidated
        with a HEAD, which Docker Hub does not count as a pull, and the manifest it names is
        usually cached already. A tag never seen, when the caller will want its manifest
        (`document`), is read with one GET by tag instead: the digest comes with the body, one
        request and one round trip fewer than HEAD + GET by digest, and one pull either way.
        """
        tag = ref.tag or "latest"
        key = ("tag", ref.registry, ref.repository, tag)
        cached = self._tags.get(key)
        if cached is not None and (left := self._fresh_for(cached)) > 0:
            self._count("tag_hits")
            return cached[0], left

        def fetch(deadline: Deadline) -> ManifestHead:
            again = self._tags.get(key)
            if again is not None and self._fresh_for(again) > 0:
                return again[0]
            missing = self._missing.get(key)
            if missing is not None:
                raise ManifestNotFound(
                    str(missing), registry=missing.registry, reference=missing.reference
                )
            stored = (
                self._disk.get_tag(ref.registry, ref.repository, tag, max_age=self._tag_memory)
                if self._disk is not None
                else None
            )
            if stored is None and self.shared is not None:
                stored = self._shared_tag(ref, tag, deadline)
            if stored is not None and stored[3] < self._tag_ttl:
                digest, media_type, size, age = stored
                head = ManifestHead(digest, media_type, size)
                self._remember_tag(key, head, age)
                return head
            self._count("tag_misses")
            try:
                if document and again is None and stored is None:
                    head = self._get_by_tag(ref, tag, deadline)
                else:
                    head = self._ask(
                        ref.registry,
                        deadline,
                        lambda: self.client.head_manifest(
                            ref.registry, ref.repository, tag, deadline=deadline
                        ),
                    )
            except ManifestNotFound as exc:
                self._remember_missing(key, exc)
                raise
            self._remember_tag(key, head, 0.0)
            if self.shared is not None:
                self.shared.put_tag(
                    ref.registry,
                    ref.repository,
                    tag,
                    head.digest,
                    head.media_type,
                    head.size,
                    ttl=self._tag_memory,
                )
            if self._disk is not None:
                self._disk.put_tag(
                    ref.registry, ref.repository, tag, head.digest, head.media_type, head.size
                )
            return head

        head = self._step("digest", key, fetch, deadline)
        entry = self._tags.get(key)
        return head, self._fresh_for(entry) if entry is not None else 0.0

    def _tag_points(
        self, ref: Reference, digest: str, deadline: Deadline
    ) -> tuple[str, bool, float]:
        """Where the tag of `name:tag@digest` points now, whether that is `digest` (the tag's
        own digest, or an entry of the index it names), and for how long that answer is fresh.

        One HEAD by tag, cached and coalesced like every tag lookup; the index is read (one
        GET by digest, usually cached) only when the tag names an index other than `digest`.
        """
        head, fresh_for = self._head(ref, deadline)
        if head.digest == digest:
            return head.digest, True, fresh_for
        if head.media_type in media.IMAGE_TYPES:
            return head.digest, False, fresh_for
        document = self._manifest(ref.registry, ref.repository, head.digest, deadline)
        listed = isinstance(document, media.Index) and any(
            entry.digest == digest for entry in document.manifests
        )
        return head.digest, listed, fresh_for

    def _remember_tag(self, key: Hashable, head: ManifestHead, age: float) -> None:
        """Keep a tag's answer, learned `age` seconds ago, for TAG_MEMORY: fresh for `tag_ttl`,
        then still telling that the tag was asked about (so it is revalidated by HEAD)."""
        value = (head, self._clock() - age)
        self._tags.put(key, value, ttl=self._tag_memory - age, size=entry_size(key, value))

    def _fresh_for(self, entry: tuple[ManifestHead, float]) -> float:
        """Seconds a remembered tag answer stays fresh (≤ 0: revalidate)."""
        return self._tag_ttl - (self._clock() - entry[1])

    def _get_by_tag(self, ref: Reference, tag: str, deadline: Deadline) -> ManifestHead:
        """GET a never-seen tag's manifest; cache the document by its digest (as `_manifest`
        would) and answer what a HEAD would have. Counted as the tag miss it is; reading the
        document back by digest then counts as the manifest cache hit it is."""
        manifest = self._ask(
            ref.registry,
            deadline,
            lambda: self.client.get_manifest(ref.registry, ref.repository, tag, deadline=deadline),
        )
        key = ("manifest", ref.registry, ref.repository, manifest.digest)
        self._manifests.put(key, manifest.document, entry_size(key, manifest.document))
        if self._disk is not None:
            self._disk.put_manifest(manifest.digest, manifest.body, manifest.media_type)
        if self.shared is not None:
            self.shared.put_manifest(
                ref.registry, ref.repository, manifest.digest, manifest.body, manifest.media_type
            )
        return ManifestHead(manifest.digest, manifest.media_type, len(manifest.body))

    def _manifest(
        self, registry: str, repository: str, digest: str, deadline: Deadline
    ) -> media.Index | media.ImageManifest:
        key = ("manifest", registry, repository, digest)
        cached = self._manifests.get(key)
        if cached is not None:
            self._count("manifest_hits")
            return cached

        def fetch(deadline: Deadline) -> media.Index | media.ImageManifest:
            again = self._manifests.get(key)
            if again is not None:
                return again
            missing = self._missing.get(key)
            if missing is not None:
                raise ManifestNotFound(
                    str(missing), registry=missing.registry, reference=missing.reference
                )
            stored = self._stored_manifest(digest)
            if stored is None and self.shared is not None:
                stored = self._shared_manifest(registry, repository, digest, deadline)
            if stored is not None:
                self._manifests.put(key, stored, entry_size(key, stored))
                return stored
            self._count("manifest_misses")
            try:
                manifest = self._ask(
                    registry,
                    deadline,
                    lambda: self.client.get_manifest(
                        registry, repository, digest, deadline=deadline
                    ),
                )
            except ManifestNotFound as exc:
                self._remember_missing(key, exc)
                raise
            self._manifests.put(key, manifest.document, entry_size(key, manifest.document))
            if self._disk is not None:
                self._disk.put_manifest(digest, manifest.body, manifest.media_type)
            if self.shared is not None:
                self.shared.put_manifest(
                    registry, repository, digest, manifest.body, manifest.media_type
                )
            return manifest.document

        return self._step("manifest", key, fetch, deadline)

    def _config(
        self, registry: str, repository: str, descriptor: media.Descriptor, deadline: Deadline
    ) -> media.ImageConfig:
        key = ("config", registry, repository, descriptor.digest)
        cached = self._configs.get(key)
        if cached is not None:
            self._count("config_hits")
            return cached

        def fetch(deadline: Deadline) -> media.ImageConfig:
            again = self._configs.get(key)
            if again is not None:
                return again
            body = self._disk.get_blob(descriptor.digest) if self._disk is not None else None
            if body is None and self.shared is not None:
                shared = self.shared
                body = shared.turn(
                    f"blob:{registry}/{repository}@{descriptor.digest}",
                    partial(shared.get_blob, registry, repository, descriptor.digest),
                    deadline,
                    first=True,
                )
                if body is not None and self._disk is not None:
                    self._disk.put_blob(descriptor.digest, body)
            if body is None:
                self._count("config_misses")
                body = self._ask(
                    registry,
                    deadline,
                    lambda: self.client.get_blob(
                        registry,
                        repository,
                        descriptor.digest,
                        deadline=deadline,
                        max_bytes=self.client.limits.config_bytes,
                    ),
                )
                if self._disk is not None:
                    self._disk.put_blob(descriptor.digest, body)
                if self.shared is not None:
                    self.shared.put_blob(registry, repository, descriptor.digest, body)
            try:
                config = media.parse_config(body)
            except RegistryError as exc:
                exc.registry = exc.registry or registry
                raise
            self._configs.put(key, config, entry_size(key, config))
            return config

        return self._step("config", key, fetch, deadline)

    def _signature_artifacts(
        self, ref: Reference, digest: str, deadline: Deadline, *, fact: str = "signatures"
    ) -> tuple[_Artifacts, float]:
        """The signature artifacts (`fact` "signatures") or attestation artifacts
        ("attestations") of `digest` in `ref`'s repository, and for how many seconds that
        answer stands (forever for found ones while cached; `unsigned_ttl` for none)."""
        key = (fact, ref.registry, ref.repository, digest)
        cached = self._signatures.get(key)
        if cached is not None:
            return cached, float("inf")
        learned = self._unsigned.get(key)
        if learned is not None:
            return _Artifacts(), self._unsigned_ttl - (self._clock() - learned)

        def fetch(deadline: Deadline) -> _Artifacts:
            again = self._signatures.get(key)
            if again is not None:
                return again
            if self._unsigned.get(key) is not None:
                return _Artifacts()
            age = 0.0
            shared = self.shared
            told = (
                shared.turn(
                    f"{fact}:{ref.registry}/{ref.repository}@{digest}",
                    partial(shared.get_signatures, ref.registry, ref.repository, digest, fact),
                    deadline,
                    first=True,
                )
                if shared is not None
                else None
            )
            if told is not None and (told.age < self._unsigned_ttl or told.cosign or told.bundles):
                found, age = _Artifacts(told.cosign, told.bundles, told.refused), told.age
            else:
                found = self._fetch_signatures(ref, digest, deadline, _PLACES[fact])
                if shared is not None:
                    shared.put_signatures(
                        ref.registry,
                        ref.repository,
                        digest,
                        fact,
                        found.cosign,
                        found.bundles,
                        found.refused,
                        ttl=self._unsigned_ttl if found.empty else None,
                    )
            if found.empty:
                self._unsigned.put(key, self._clock() - age, size=entry_size(key, 0.0))
            else:
                self._signatures.put(key, found, entry_size(key, found))
            return found

        found = self._step(fact, key, fetch, deadline)
        return found, float("inf") if not found.empty else self._unsigned_ttl

    def _fetch_signatures(
        self, ref: Reference, digest: str, deadline: Deadline, place: _Place
    ) -> _Artifacts:
        """cosign's `.sig` (or `.att`) tag (here) and the referrers (API, else the fallback
        tag; in the parts pool, at the same time): one request each, then one per artifact
        read. The referrers answer is shared by the signature and attestation lookups."""
        try:
            job: Future[tuple[tuple[bytes, ...], tuple[tuple[str, str], ...]]] | None = (
                self._part_lanes.submit(
                    ref.registry,
                    partial(self._shared_referrers, ref, digest, deadline),
                    expired=_expiry(deadline),
                )
            )
        except ShortCircuited:
            job = None  # the registry's share of the pool is refused: ask in turn
        cosign, refused = self._cosign_layers(ref, digest, deadline, place)
        if job is None:
            bundles, more = self._shared_referrers(ref, digest, deadline)
        else:
            try:
                bundles, more = job.result(timeout=deadline.remaining())
            except (FutureTimeout, CancelledError):
                job.cancel()
                raise _late(ref.registry) from None
        return _Artifacts(tuple(cosign), bundles, tuple(refused) + more)

    def _shared_referrers(
        self, ref: Reference, digest: str, deadline: Deadline
    ) -> tuple[tuple[bytes, ...], tuple[tuple[str, str], ...]]:
        """`_referrer_bundles`, coalesced and remembered for `unsigned_ttl`: a review needing
        both signatures and attestations of a digest lists its referrers once."""
        key = ("referrers", ref.registry, ref.repository, digest)
        cached = self._referrers.get(key)
        if cached is not None:
            return cached

        def fetch(deadline: Deadline) -> tuple[tuple[bytes, ...], tuple[tuple[str, str], ...]]:
            again = self._referrers.get(key)
            if again is not None:
                return again
            bundles, refused = self._referrer_bundles(ref, digest, deadline)
            answer = (tuple(bundles), tuple(refused))
            self._referrers.put(key, answer, size=entry_size(key, answer))
            return answer

        return self._coalesced(key, fetch, deadline)

    def _optional(
        self, ref: Reference, reference: str, deadline: Deadline
    ) -> media.Index | media.ImageManifest | None:
        """The manifest a tag (or digest) names in `ref`'s repository; None for a 404."""
        try:
            return self._ask(
                ref.registry,
                deadline,
                lambda: (
                    self.client.get_manifest(
                        ref.registry, ref.repository, reference, deadline=deadline
                    ).document
                ),
            )
        except ManifestNotFound:
            return None

    def _artifact_blob(
        self, ref: Reference, descriptor: media.Descriptor, limit: int, deadline: Deadline
    ) -> bytes:
        return self._ask(
            ref.registry,
            deadline,
            lambda: self.client.get_blob(
                ref.registry, ref.repository, descriptor.digest, deadline=deadline, max_bytes=limit
            ),
        )

    def _cosign_layers(
        self, ref: Reference, digest: str, deadline: Deadline, place: _Place
    ) -> tuple[list[tuple[bytes, Mapping[str, str]]], list[tuple[str, str]]]:
        """The bytes and annotations of the layers of cosign's `sha256-<hex>.sig` manifest
        (simple-signing payloads) or `.att` manifest (DSSE envelopes), at most
        MAX_SIGNATURES, and those refused unread."""
        found: list[tuple[bytes, Mapping[str, str]]] = []
        refused: list[tuple[str, str]] = []
        signed = self._optional(ref, digest.replace(":", "-") + place.suffix, deadline)
        layers = signed.layers if isinstance(signed, media.ImageManifest) else ()
        for layer in [d for d in layers if d.media_type == place.media_type][:MAX_SIGNATURES]:
            if layer.size > place.limit:
                refused.append(("cosign", f"{place.what} of {layer.size} bytes, over the limit"))
                continue
            payload = self._artifact_blob(ref, layer, place.limit, deadline)
            found.append((payload, layer.annotations))
        return found, refused

    def _referrer_bundles(
        self, ref: Reference, digest: str, deadline: Deadline
    ) -> tuple[list[bytes], list[tuple[str, str]]]:
        """The Sigstore bundles among the OCI referrers of `digest` (at most MAX_SIGNATURES),
        and those refused unread. A registry without the referrers API costs one more request:
        the `sha256-<hex>` fallback tag."""
        referrers = self._ask(
            ref.registry,
            deadline,
            lambda: self.client.get_referrers(
                ref.registry, ref.repository, digest, deadline=deadline
            ),
        )
        if referrers is None:
            fallback = self._optional(ref, digest.replace(":", "-"), deadline)
            referrers = fallback if isinstance(fallback, media.Index) else None
        entries = referrers.manifests if referrers is not None else ()
        bundles: list[bytes] = []
        refused: list[tuple[str, str]] = []
        for entry in [
            e for e in entries if (e.artifact_type or "").startswith(sigverify.BUNDLE_TYPE_PREFIX)
        ][:MAX_SIGNATURES]:
            manifest = self._optional(ref, entry.digest, deadline)
            layers = manifest.layers if isinstance(manifest, media.ImageManifest) else ()
            held = next(
                (d for d in layers if d.media_type.startswith(sigverify.BUNDLE_TYPE_PREFIX)),
                None,
            )
            if held is None:
                refused.append(("bundle", "the referrer holds no bundle layer"))
            elif held.size > sigverify.MAX_BUNDLE_BYTES:
                refused.append(("bundle", f"bundle of {held.size} bytes, over the limit"))
            else:
                bundles.append(self._artifact_blob(ref, held, sigverify.MAX_BUNDLE_BYTES, deadline))
        return bundles, refused

    def _remember_missing(self, key: Hashable, exc: ManifestNotFound) -> None:
        """Cache a 404 briefly, without its traceback (whose frames would stay alive)."""
        exc = exc.with_traceback(None)
        self._missing.put(key, exc, size=entry_size(key, exc))
        if self.shared is not None and isinstance(key, tuple) and len(key) == 4:
            _, registry, repository, reference = key
            self.shared.put_missing(
                registry, repository, reference, str(exc), ttl=self._negative_ttl
            )

    # --- the shared tier (policy.sharedcache): second after memory (and disk) ---------------

    def _shared_tag(
        self, ref: Reference, tag: str, deadline: Deadline
    ) -> tuple[str, str, int | None, float] | None:
        """A tag's answer from the shared tier, as `DiskCache.get_tag` gives it; a fresh one
        another replica is fetching now is waited for (`SharedCache.turn`). A 404 another
        replica met is raised as one."""
        shared = self.shared
        assert shared is not None

        def look(*, fresh: bool) -> tuple[str, str, int | None, float] | None:
            found = shared.get_tag(ref.registry, ref.repository, tag)
            if isinstance(found, Missing):
                raise ManifestNotFound(found.message, registry=ref.registry, reference=str(ref))
            if found is None or found.age >= self._tag_memory:
                return None
            if fresh and found.age >= self._tag_ttl:
                return None
            return found.digest, found.media_type, found.size, found.age

        known = look(fresh=False)
        if known is not None and known[3] < self._tag_ttl:
            return known
        name = f"tag:{ref.registry}/{ref.repository}:{tag}"
        # A stale answer still says the tag was seen: revalidated by HEAD, not GET.
        return shared.turn(name, partial(look, fresh=True), deadline) or known

    def _shared_manifest(
        self, registry: str, repository: str, digest: str, deadline: Deadline
    ) -> media.Index | media.ImageManifest | None:
        """A manifest from the shared tier (verified against its digest), waiting for another
        replica fetching it now; a 404 another replica met is raised as one."""
        shared = self.shared
        assert shared is not None

        def look() -> media.Index | media.ImageManifest | None:
            stored = shared.get_manifest(registry, repository, digest)
            if isinstance(stored, Missing):
                raise ManifestNotFound(
                    stored.message,
                    registry=registry,
                    reference=f"{registry}/{repository}@{digest}",
                )
            if stored is None:
                return None
            body, media_type = stored
            document = self._parsed(body, media_type)
            if document is not None and self._disk is not None:
                self._disk.put_manifest(digest, body, media_type)
            return document

        name = f"manifest:{registry}/{repository}@{digest}"
        found = shared.turn(name, look, deadline, first=True)
        return cast(media.Index | media.ImageManifest | None, found)  # (mypy joins to object)

    def _stored_manifest(self, digest: str) -> media.Index | media.ImageManifest | None:
        """A manifest from the disk cache (verified by digest on read)."""
        stored = self._disk.get_manifest(digest) if self._disk is not None else None
        return None if stored is None else self._parsed(*stored)

    def _parsed(self, body: bytes, media_type: str) -> media.Index | media.ImageManifest | None:
        """A stored manifest (its bytes already verified by digest) parsed; None when it does
        not parse (then it is fetched again)."""
        try:
            return media.parse_manifest(
                body, media_type, max_index_entries=self.client.limits.index_entries
            )
        except RegistryError:
            return None

    def _step(self, fact: str, key: Hashable, fn: Callable[[Deadline], T], deadline: Deadline) -> T:
        if self.shared is not None:
            fn = partial(_holding, self.shared, fn)  # off a resolution's thread: its own leases
        try:
            return self._coalesced(key, fn, deadline)
        except RegistryError as exc:
            raise _Failed(fact, exc) from None
        except TimeoutError:
            raise _Failed(fact, _late(str(key[1]) if isinstance(key, tuple) else "")) from None

    def _platforms(
        self,
        ref: Reference,
        document: media.Index | media.ImageManifest,
        digest: str,
        needs: Needs,
        deadline: Deadline,
        errors: dict[str, RegistryError],
    ) -> tuple[PlatformFacts, ...]:
        if isinstance(document, media.ImageManifest):
            single = self._single(ref, document, digest, needs, deadline, errors)
            # Attestations are attached through an index: a lone manifest has none.
            return (dataclasses.replace(single, attestations=()) if needs.attestations else single,)
        selected = (
            {d.digest for d in media.select_platforms(document, needs.select or ("*",))}
            if needs.manifest or needs.attestations
            else set()
        )
        jobs: dict[str, Future[PlatformFacts]] = {}
        for entry in document.manifests:
            if entry.digest in selected and entry.digest not in jobs:
                try:
                    jobs[entry.digest] = self._part_lanes.submit(
                        ref.registry,
                        partial(self._entry, ref, entry, needs, deadline, errors),
                        expired=_expiry(deadline),
                    )
                except ShortCircuited as exc:
                    errors.setdefault(
                        "manifest", RegistryUnavailable(str(exc), registry=ref.registry)
                    )
        out = []
        for entry in document.manifests:
            platform = ATTESTATION_PLATFORM if entry.is_attestation else entry.platform or ""
            job = jobs.get(entry.digest)
            if job is None or entry.is_attestation:
                out.append(PlatformFacts(platform=platform, digest=entry.digest))
                continue
            try:
                found = job.result(timeout=deadline.remaining())
            except (FutureTimeout, CancelledError):
                errors.setdefault(
                    "manifest",
                    RegistryUnavailable(
                        self._part_lanes.busy(ref.registry, job), registry=ref.registry
                    )
                    if job.cancel()
                    else _late(ref.registry),
                )
                found = PlatformFacts(platform=platform, digest=entry.digest)
            except _Failed as failed:
                errors.setdefault(failed.fact, failed.error)
                found = PlatformFacts(platform=platform, digest=entry.digest)
            out.append(found)
        if needs.attestations:
            out = self._attested(ref, document, out, selected, needs, deadline, errors)
        return tuple(out)

    def _attested(
        self,
        ref: Reference,
        index: media.Index,
        found: list[PlatformFacts],
        selected: set[str],
        needs: Needs,
        deadline: Deadline,
        errors: dict[str, RegistryError],
    ) -> list[PlatformFacts]:
        """`found` with each selected image's attestations: the statements of the attestation
        manifests of `index` that name it (`vnd.docker.reference.digest`)."""
        by_image: dict[str, list[media.Descriptor]] = {}
        for entry in index.manifests:
            target = entry.annotations.get(attestations.REFERENCE_DIGEST_ANNOTATION)
            if entry.is_attestation and target is not None:
                by_image.setdefault(target, []).append(entry)
        trust = sigverify.Trust(sigverify.load_keys(needs.keys))
        out = []
        for p in found:
            if p.digest in selected and p.platform != ATTESTATION_PLATFORM and p.digest:
                try:
                    read = self._statements(
                        ref, by_image.get(p.digest, []), p.digest, trust, deadline
                    )
                    p = dataclasses.replace(p, attestations=read)
                except _Failed as failed:
                    errors.setdefault("attestations", failed.error)
            out.append(p)
        return out

    def _statements(
        self,
        ref: Reference,
        manifests: list[media.Descriptor],
        digest: str,
        trust: sigverify.Trust,
        deadline: Deadline,
    ) -> tuple[AttestationFacts, ...]:
        """The statements about `digest` in these attestation manifests (at most
        MAX_ATTESTATIONS): provenance statements (and, with keys, every statement, for its
        signature) are read and their subject checked; an SBOM, whose predicate type the layer
        annotation says, is counted unread (the index, judged by digest, lists the attestation
        manifest by digest, which lists the layer by digest: its link to the image is sealed)."""
        out: list[AttestationFacts] = []
        for descriptor in manifests[:4]:
            manifest = self._manifest(ref.registry, ref.repository, descriptor.digest, deadline)
            if not isinstance(manifest, media.ImageManifest):
                continue
            for layer in manifest.layers:
                if len(out) == MAX_ATTESTATIONS:
                    return tuple(out)
                if not layer.media_type.startswith(attestations.IN_TOTO):
                    continue
                predicate = layer.annotations.get(attestations.PREDICATE_ANNOTATION, "")
                kind = attestations.kind_of(predicate)
                if kind != "provenance" and not trust.keys:
                    out.append(AttestationFacts(predicate, kind))
                    continue
                if layer.size > attestations.MAX_STATEMENT_BYTES:
                    out.append(
                        AttestationFacts(predicate, kind, reason="over the statement size limit")
                    )
                    continue
                body = self._step(
                    "attestations",
                    ("statement", ref.registry, ref.repository, layer.digest),
                    partial(self._statement_blob, ref, layer),
                    deadline,
                )
                opened = sigverify.open_envelope(body, trust)
                if opened is None:
                    out.append(attestations.read_statement(body, digest))
                else:
                    out.append(attestations.read_statement(opened[0], digest, signed_by=opened[1]))
        return tuple(out)

    def _statement_blob(self, ref: Reference, layer: media.Descriptor, deadline: Deadline) -> bytes:
        key = ("statement", ref.registry, ref.repository, layer.digest)
        cached = self._statement_cache.get(key)
        if cached is not None:
            return cached
        body = self._ask(
            ref.registry,
            deadline,
            lambda: self.client.get_blob(
                ref.registry,
                ref.repository,
                layer.digest,
                deadline=deadline,
                max_bytes=attestations.MAX_STATEMENT_BYTES,
            ),
        )
        self._statement_cache.put(key, body, entry_size(key, body))
        return body

    def _entry(
        self,
        ref: Reference,
        entry: media.Descriptor,
        needs: Needs,
        deadline: Deadline,
        errors: dict[str, RegistryError],
    ) -> PlatformFacts:
        document = self._manifest(ref.registry, ref.repository, entry.digest, deadline)
        if not isinstance(document, media.ImageManifest):
            raise _Failed(
                "manifest",
                RegistryError(
                    f"index entry {entry.digest} is not an image manifest", registry=ref.registry
                ),
            )
        return self._single(
            ref, document, entry.digest, needs, deadline, errors, platform=entry.platform
        )

    def _single(
        self,
        ref: Reference,
        manifest: media.ImageManifest,
        digest: str,
        needs: Needs,
        deadline: Deadline,
        errors: dict[str, RegistryError],
        *,
        platform: str | None = None,
    ) -> PlatformFacts:
        """Facts of one image manifest; a config that cannot be fetched is recorded in
        `errors` and leaves the manifest facts standing."""
        config = None
        if needs.config or (platform is None and needs.platforms):
            try:
                config = self._config(ref.registry, ref.repository, manifest.config, deadline)
            except _Failed as failed:
                errors.setdefault("config", failed.error)
        if platform is None and config is not None and config.os and config.architecture:
            platform = f"{config.os}/{config.architecture}"
            if config.variant:
                platform += f"/{config.variant}"
        return PlatformFacts(
            platform=platform or "",
            digest=digest,
            layers=len(manifest.layers),
            size=manifest.total_size,
            user=config.user if config else None,
            created=config.created if config else None,
            labels=config.labels if config else None,
            config_known=config is not None,
        )


_FACT_ORDER = ("digest", "platforms", "manifest", "config")
HUB_LANE = tiers_mod.HUB
HUB_API = "Docker Hub API"


def _judged(
    found: _Artifacts, digest: str, keys: Sequence[bytes], roots: Sequence[RootFile]
) -> tuple[SignatureFacts, ...]:
    """Each artifact verified for `digest` against `keys` and trusted `roots` (no I/O)."""
    trust = sigverify.Trust(
        sigverify.load_keys(keys), sigverify.load_roots([r.data for r in roots])
    )
    out = [
        sigverify.verify_cosign(payload, annotations, digest, trust)
        for payload, annotations in found.cosign
    ]
    out += [sigverify.verify_bundle(bundle, digest, trust) for bundle in found.bundles]
    out += [SignatureFacts(fmt, False, reason=why, signer="unknown") for fmt, why in found.refused]
    return tuple(out)


def _holding(shared: SharedCache, fn: Callable[[Deadline], T], deadline: Deadline) -> T:
    """`fn(deadline)` inside `shared.holding()`: leases it takes are released when it returns,
    unless a resolution on this thread holds them until it ends."""
    with shared.holding():
        return fn(deadline)


def _with_attached(
    platforms: tuple[PlatformFacts, ...], found: _Artifacts, digest: str, needs: Needs
) -> tuple[PlatformFacts, ...]:
    """`platforms` with the attestations of the judged `digest` found in cosign's `.att` tag
    and among its referrers added to each image whose attestations were read: a statement
    counts for an image when its subject is that image or the judged digest (an index names
    each of its images by digest). No I/O."""
    trust = sigverify.Trust(
        sigverify.load_keys(needs.keys), sigverify.load_roots([r.data for r in needs.roots])
    )
    opened: list[tuple[str, sigverify.Opened | str]] = [
        ("cosign", sigverify.open_cosign_attestation(envelope, annotations, trust))
        for envelope, annotations in found.cosign
    ]
    for bundle in found.bundles:
        read = sigverify.open_attestation_bundle(bundle, trust)
        if read is not None:
            opened.append(("bundle", read))
    if not opened and not found.refused:
        return platforms
    out = []
    for p in platforms:
        if p.attestations is None or p.platform == ATTESTATION_PLATFORM or not p.digest:
            out.append(p)
            continue
        more = [
            attestations.read_statement(
                o.payload,
                p.digest,
                also=digest,
                signed_by=o.key,
                issuer=o.issuer,
                subject=o.subject,
                format=fmt,
                signature=o.reason,
            )
            if isinstance(o, sigverify.Opened)
            else AttestationFacts("", "other", reason=o, format=fmt)
            for fmt, o in opened
        ]
        more += [
            AttestationFacts("", "other", reason=why, format=fmt)
            for fmt, why in found.refused
            if fmt == "cosign"
        ]
        out.append(dataclasses.replace(p, attestations=p.attestations + tuple(more)))
    return tuple(out)


def _expiry(deadline: Deadline) -> Callable[[], bool]:
    """Whether `deadline` has passed, as a function (a queued job asks before it starts)."""
    return lambda: deadline.expired


def _lane(ref: Reference, needs: Needs) -> str:
    """The bulkhead an image lookup waits in: its registry's, or Docker Hub's API when only
    its tier is wanted."""
    return ref.registry if needs.registry else HUB_LANE


def _late(registry: str) -> RegistryUnavailable:
    """The error of a fact not fetched within the decision deadline."""
    return RegistryUnavailable(
        f"no answer from {registry} within the decision deadline", registry=registry
    )


def _reasons(
    errors: Mapping[str, RegistryError],
) -> tuple[Mapping[str, str], Mapping[str, str]]:
    """`ImageFacts.errors` (each error's class, `policy.failures`) and `ImageFacts.details`
    (its whole message) for the errors met; the tier is Docker Hub's to answer."""
    if not errors:
        return NO_REASONS, NO_REASONS
    reasons = {
        fact: failures.classify(
            error, party=failures.DOCKER_HUB if fact == "tier" else failures.REGISTRY
        )
        for fact, error in errors.items()
    }
    details = {fact: str(error) for fact, error in errors.items()}
    return MappingProxyType(reasons), MappingProxyType(details)


def _facts_after(fact: str) -> tuple[str, ...]:
    """A failed step leaves that fact and every later one unknown."""
    return _FACT_ORDER[_FACT_ORDER.index(fact) :] if fact in _FACT_ORDER else (fact,)


def build(
    settings: Settings,
    *,
    mode: Mode = "webhook",
    session: requests.Session | None = None,
    on_request: Callable[[RequestEvent], None] | None = None,
    tiers: TierSource | None = None,
    disk: DiskCache | None = None,
    max_workers: int = 32,
) -> RegistryResolver:
    """A resolver wired from the settings file: credentials, auth, mirrors, CAs, caches, and
    the tier source (catalog, offline rule, Docker Hub) sharing the same session, whose
    transport connects only where the settings' egress policy allows in `mode`."""
    policy = egress_policy(settings, mode)
    if session is None:
        session = new_session(Transport(policy))
    elif isinstance(session, RegistrySession) and session.transport is not None:
        session.transport.policy = policy
    explicit = {
        name: Credential(username=r.auth.username, password=r.auth.password)
        for name, r in settings.registries.items()
        if r.auth is not None
    }
    docker_config = settings.docker_config or default_docker_config()
    store = CredentialStore.from_sources(docker_config, settings.pull_secrets, explicit)
    # Each registry trusts only its own configured token realms.
    trusted = {name: r.token_realms for name, r in settings.registries.items() if r.token_realms}
    authenticator = Authenticator(session, store, trusted_realms=trusted)
    configs = {
        name: RegistryConfig(mirrors=r.mirrors, ca=r.ca, insecure=r.insecure)
        for name, r in settings.registries.items()
    }
    client = RegistryClient(
        session,
        authenticator=authenticator,
        registries=configs,
        request_timeout=settings.request_timeout,
        on_request=on_request,
    )
    shared = sharedcache.from_settings(settings.shared_cache) if settings.shared_cache else None
    if tiers is None:
        tiers = tiers_mod.from_settings(
            settings, session=session, disk=disk, mode=mode, shared=shared
        )
    return RegistryResolver(
        client,
        tiers=tiers,
        tag_ttl=settings.tag_ttl,
        cache_max_bytes=settings.cache_max_bytes,
        disk=disk,
        max_workers=max_workers,
        per_registry=settings.per_registry,
        break_after=settings.break_after,
        break_for=settings.break_for,
        patience=settings.patience,
        request_timeout=settings.request_timeout,
        shared=shared,
    )
