"""Manifests and image configs by digest, and the registry's 404s.

A digest names immutable bytes, so a manifest or config is looked for in memory, then on disk
(the CLI's `DiskCache`), then in the shared tier (another replica may be fetching it now), and
only then asked of the registry; what the registry gives is kept in all three. A 404 (for a
manifest or a tag) is remembered for `negative_ttl`, here and in the shared tier.
"""

from __future__ import annotations

from collections.abc import Hashable
from functools import partial
from typing import cast

from policy.cache import Clock, SizedLRU, TTLCache, entry_size
from policy.deadline import Deadline
from policy.diskcache import DiskCache
from policy.errors import ManifestNotFound, RegistryError
from policy.registry import media
from policy.registry.client import Manifest
from policy.resolver.steps import Steps
from policy.sharedcache import Missing

NEGATIVE_TTL = 30.0

Document = media.Index | media.ImageManifest


class Documents:
    """Manifests (7/16 of the byte budget) and configs (1/4) by digest, 404s (1/16) briefly."""

    def __init__(
        self,
        steps: Steps,
        *,
        budget: int,
        negative_ttl: float,
        clock: Clock | None,
        disk: DiskCache | None,
    ) -> None:
        self.manifests: SizedLRU[Hashable, Document] = SizedLRU(budget * 7 // 16)
        self.configs: SizedLRU[Hashable, media.ImageConfig] = SizedLRU(budget // 4)
        self.missing: TTLCache[Hashable, RegistryError] = TTLCache(
            ttl=negative_ttl, max_entries=10_000, max_bytes=budget // 16, clock=clock
        )
        self._steps = steps
        self._disk = disk
        self._negative_ttl = negative_ttl

    def manifest(self, registry: str, repository: str, digest: str, deadline: Deadline) -> Document:
        """The manifest `digest` names (raises `Failed("manifest")`)."""
        key = ("manifest", registry, repository, digest)
        cached = self.manifests.get(key)
        if cached is not None:
            self._steps.count("manifest_hits")
            return cached
        fetch = partial(self._fetch_manifest, registry, repository, digest, key)
        return self._steps.step("manifest", key, fetch, deadline)

    def _fetch_manifest(
        self, registry: str, repository: str, digest: str, key: Hashable, deadline: Deadline
    ) -> Document:
        again = self.manifests.get(key)
        if again is not None:
            return again
        self.raise_if_missing(key)
        stored = self._stored_manifest(digest)
        if stored is None and self._steps.shared is not None:
            stored = self._shared_manifest(registry, repository, digest, deadline)
        if stored is not None:
            self.manifests.put(key, stored, entry_size(key, stored))
            return stored
        self._steps.count("manifest_misses")
        client = self._steps.client
        try:
            manifest = self._steps.ask(
                registry,
                deadline,
                lambda: client.get_manifest(registry, repository, digest, deadline=deadline),
            )
        except ManifestNotFound as exc:
            self.remember_missing(key, exc)
            raise
        self.keep(registry, repository, manifest)
        return manifest.document

    def keep(self, registry: str, repository: str, manifest: Manifest) -> None:
        """Keep a manifest the registry gave in memory, on disk and in the shared tier, by its
        digest."""
        key = ("manifest", registry, repository, manifest.digest)
        self.manifests.put(key, manifest.document, entry_size(key, manifest.document))
        if self._disk is not None:
            self._disk.put_manifest(manifest.digest, manifest.body, manifest.media_type)
        if self._steps.shared is not None:
            self._steps.shared.put_manifest(
                registry, repository, manifest.digest, manifest.body, manifest.media_type
            )

    def config(
        self, registry: str, repository: str, descriptor: media.Descriptor, deadline: Deadline
    ) -> media.ImageConfig:
        """The image config `descriptor` names (raises `Failed("config")`)."""
        key = ("config", registry, repository, descriptor.digest)
        cached = self.configs.get(key)
        if cached is not None:
            self._steps.count("config_hits")
            return cached
        fetch = partial(self._fetch_config, registry, repository, descriptor.digest, key)
        return self._steps.step("config", key, fetch, deadline)

    def _fetch_config(
        self, registry: str, repository: str, digest: str, key: Hashable, deadline: Deadline
    ) -> media.ImageConfig:
        again = self.configs.get(key)
        if again is not None:
            return again
        body = self._config_body(registry, repository, digest, deadline)
        try:
            config = media.parse_config(body)
        except RegistryError as exc:
            exc.registry = exc.registry or registry
            raise
        self.configs.put(key, config, entry_size(key, config))
        return config

    def _config_body(
        self, registry: str, repository: str, digest: str, deadline: Deadline
    ) -> bytes:
        """A config's bytes from disk, the shared tier (kept on disk too) or the registry (kept
        on both)."""
        body = self._disk.get_blob(digest) if self._disk is not None else None
        shared = self._steps.shared
        if body is None and shared is not None:
            body = shared.turn(
                f"blob:{registry}/{repository}@{digest}",
                partial(shared.get_blob, registry, repository, digest),
                deadline,
                first=True,
            )
            if body is not None and self._disk is not None:
                self._disk.put_blob(digest, body)
        if body is not None:
            return body
        self._steps.count("config_misses")
        client = self._steps.client
        body = self._steps.ask(
            registry,
            deadline,
            lambda: client.get_blob(
                registry,
                repository,
                digest,
                deadline=deadline,
                max_bytes=client.limits.config_bytes,
            ),
        )
        if self._disk is not None:
            self._disk.put_blob(digest, body)
        if shared is not None:
            shared.put_blob(registry, repository, digest, body)
        return body

    def raise_if_missing(self, key: Hashable) -> None:
        """Raise the 404 remembered for `key`, if any."""
        missing = self.missing.get(key)
        if missing is not None:
            raise ManifestNotFound(
                str(missing), registry=missing.registry, reference=missing.reference
            )

    def remember_missing(self, key: Hashable, exc: ManifestNotFound) -> None:
        """Cache a 404 briefly, without its traceback (whose frames would stay alive)."""
        exc = exc.with_traceback(None)
        self.missing.put(key, exc, size=entry_size(key, exc))
        if self._steps.shared is not None and isinstance(key, tuple) and len(key) == 4:
            _, registry, repository, reference = key
            self._steps.shared.put_missing(
                registry, repository, reference, str(exc), ttl=self._negative_ttl
            )

    def _shared_manifest(
        self, registry: str, repository: str, digest: str, deadline: Deadline
    ) -> Document | None:
        """A manifest from the shared tier (verified against its digest), waiting for another
        replica fetching it now; a 404 another replica met is raised as one."""
        shared = self._steps.shared
        assert shared is not None

        def look() -> Document | None:
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
        return cast(Document | None, found)  # (mypy joins to object)

    def _stored_manifest(self, digest: str) -> Document | None:
        """A manifest from the disk cache (verified by digest on read)."""
        stored = self._disk.get_manifest(digest) if self._disk is not None else None
        return None if stored is None else self._parsed(*stored)

    def _parsed(self, body: bytes, media_type: str) -> Document | None:
        """A stored manifest (its bytes already verified by digest) parsed; None when it does
        not parse (then it is fetched again)."""
        try:
            return media.parse_manifest(
                body, media_type, max_index_entries=self._steps.client.limits.index_entries
            )
        except RegistryError:
            return None
