"""Tag → digest: the tag memory, and whether the tag of `name:tag@digest` is true.

A tag's answer is fresh for `tag_ttl` and remembered for `TAG_MEMORY` after the registry gave
it, in memory, on disk and in the shared tier. A tag asked about before is revalidated with a
HEAD (not a pull on Docker Hub); a tag never seen, when its manifest is wanted, is read with
one GET by tag, whose document is kept by digest (`Documents.keep`).
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from functools import partial

from policy.cache import Clock, TTLCache, entry_size
from policy.deadline import Deadline
from policy.diskcache import DiskCache
from policy.errors import ManifestNotFound
from policy.reference import Reference
from policy.registry import media
from policy.registry.client import ManifestHead
from policy.resolver.documents import Documents
from policy.resolver.steps import Steps
from policy.sharedcache import Missing

TAG_MEMORY = 24 * 3600.0
"""Seconds a tag's answer is remembered after the registry gave it (the tag TTL if longer),
so that asking again once it is stale takes a HEAD (not a GET: the manifest it named is likely
still cached)."""

Stored = tuple[str, str, int | None, float]
"""A tag's answer from disk or the shared tier: digest, media type, size, age in seconds."""


class Tags:
    """What each tag pointed to and when that was learned (1/8 of the byte budget)."""

    def __init__(
        self,
        steps: Steps,
        documents: Documents,
        *,
        budget: int,
        tag_ttl: float,
        clock: Clock | None,
        disk: DiskCache | None,
    ) -> None:
        self._steps = steps
        self._documents = documents
        self._disk = disk
        self._tag_ttl = tag_ttl
        self._clock = clock if clock is not None else time.monotonic
        self._tag_memory = max(TAG_MEMORY, tag_ttl)  # a tag is remembered at least while fresh
        # tag → (answer, when learned): fresh for `tag_ttl`, remembered for TAG_MEMORY
        self.cache: TTLCache[Hashable, tuple[ManifestHead, float]] = TTLCache(
            ttl=tag_ttl, max_entries=100_000, max_bytes=budget // 8, clock=clock
        )

    def head(
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
        cached = self.cache.get(key)
        if cached is not None and (left := self._fresh_for(cached)) > 0:
            self._steps.count("tag_hits")
            return cached[0], left
        fetch = partial(self._fetch, ref, tag, key, document)
        head = self._steps.step("digest", key, fetch, deadline)
        entry = self.cache.get(key)
        return head, self._fresh_for(entry) if entry is not None else 0.0

    def points(self, ref: Reference, digest: str, deadline: Deadline) -> tuple[str, bool, float]:
        """Where the tag of `name:tag@digest` points now, whether that is `digest` (the tag's
        own digest, or an entry of the index it names), and for how long that answer is fresh.

        One HEAD by tag, cached and coalesced like every tag lookup; the index is read (one
        GET by digest, usually cached) only when the tag names an index other than `digest`.
        """
        head, fresh_for = self.head(ref, deadline)
        if head.digest == digest:
            return head.digest, True, fresh_for
        if head.media_type in media.IMAGE_TYPES:
            return head.digest, False, fresh_for
        document = self._documents.manifest(ref.registry, ref.repository, head.digest, deadline)
        listed = isinstance(document, media.Index) and any(
            entry.digest == digest for entry in document.manifests
        )
        return head.digest, listed, fresh_for

    def _fetch(
        self, ref: Reference, tag: str, key: Hashable, document: bool, deadline: Deadline
    ) -> ManifestHead:
        """The coalesced lookup of a tag not fresh in memory: disk, the shared tier, then the
        registry (HEAD, or GET for a tag never seen whose manifest is wanted)."""
        again = self.cache.get(key)
        if again is not None and self._fresh_for(again) > 0:
            return again[0]
        self._documents.raise_if_missing(key)
        stored = (
            self._disk.get_tag(ref.registry, ref.repository, tag, max_age=self._tag_memory)
            if self._disk is not None
            else None
        )
        if stored is None and self._steps.shared is not None:
            stored = self._shared_tag(ref, tag, deadline)
        if stored is not None and stored[3] < self._tag_ttl:
            digest, media_type, size, age = stored
            head = ManifestHead(digest, media_type, size)
            self._remember(key, head, age)
            return head
        self._steps.count("tag_misses")
        try:
            if document and again is None and stored is None:
                head = self._get_by_tag(ref, tag, deadline)
            else:
                head = self._head_by_tag(ref, tag, deadline)
        except ManifestNotFound as exc:
            self._documents.remember_missing(key, exc)
            raise
        self._remember(key, head, 0.0)
        self._keep(ref, tag, head)
        return head

    def _head_by_tag(self, ref: Reference, tag: str, deadline: Deadline) -> ManifestHead:
        client = self._steps.client
        return self._steps.ask(
            ref.registry,
            deadline,
            lambda: client.head_manifest(ref.registry, ref.repository, tag, deadline=deadline),
        )

    def _get_by_tag(self, ref: Reference, tag: str, deadline: Deadline) -> ManifestHead:
        """GET a never-seen tag's manifest; cache the document by its digest (as
        `Documents.manifest` would) and answer what a HEAD would have. Counted as the tag miss
        it is; reading the document back by digest then counts as the manifest cache hit it
        is."""
        client = self._steps.client
        manifest = self._steps.ask(
            ref.registry,
            deadline,
            lambda: client.get_manifest(ref.registry, ref.repository, tag, deadline=deadline),
        )
        self._documents.keep(ref.registry, ref.repository, manifest)
        return ManifestHead(manifest.digest, manifest.media_type, len(manifest.body))

    def _keep(self, ref: Reference, tag: str, head: ManifestHead) -> None:
        """Tell the shared tier and the disk what the registry answered for the tag."""
        if self._steps.shared is not None:
            self._steps.shared.put_tag(
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

    def _remember(self, key: Hashable, head: ManifestHead, age: float) -> None:
        """Keep a tag's answer, learned `age` seconds ago, for TAG_MEMORY: fresh for `tag_ttl`,
        then still telling that the tag was asked about (so it is revalidated by HEAD)."""
        value = (head, self._clock() - age)
        self.cache.put(key, value, ttl=self._tag_memory - age, size=entry_size(key, value))

    def _fresh_for(self, entry: tuple[ManifestHead, float]) -> float:
        """Seconds a remembered tag answer stays fresh (≤ 0: revalidate)."""
        return self._tag_ttl - (self._clock() - entry[1])

    def _shared_tag(self, ref: Reference, tag: str, deadline: Deadline) -> Stored | None:
        """A tag's answer from the shared tier, as `DiskCache.get_tag` gives it; a fresh one
        another replica is fetching now is waited for (`SharedCache.turn`). A 404 another
        replica met is raised as one."""
        shared = self._steps.shared
        assert shared is not None

        def look(*, fresh: bool) -> Stored | None:
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
