"""The OCI distribution client: HEAD/GET manifests and GET blobs, verified and bounded.

Every body is read under a size cap and the caller's deadline, and checked against its digest
(manifests and blobs) or parsed as the index it must be (referrers). How one answer is got —
mirrors before the upstream, 401 challenges answered through an `AuthProvider`, retries,
redirects followed by hand so `Authorization` never leaves the registry's host — is
`fetch.Fetcher`'s; the bytes travel through the transport layer (`exchange`, `transport`).
The client does not cache: it makes exactly the requests asked of it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

import requests

from policy.deadline import Deadline
from policy.errors import (
    IntegrityError,
    InvalidReference,
    ManifestNotFound,
    RegistryError,
    UnsupportedManifest,
)
from policy.registry import media
from policy.registry.endpoints import RegistryConfig, is_loopback
from policy.registry.exchange import content_length
from policy.registry.fetch import Answer, AuthProvider, Fetcher, RequestEvent
from policy.registry.messages import display, located
from policy.registry.ratelimits import RateLimit, parse_rate_limit, parse_retry_after

__all__ = [
    "AuthProvider",
    "Limits",
    "Manifest",
    "ManifestHead",
    "RateLimit",
    "RegistryClient",
    "RegistryConfig",
    "RequestEvent",
    "is_loopback",
    "parse_rate_limit",
    "parse_retry_after",
]

MiB = 1024 * 1024

_REPOSITORY = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_TAG = re.compile(r"\w[\w.-]{0,127}")


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
        self._limits = limits
        self._fetcher = Fetcher(
            session=session,
            authenticator=authenticator,
            registries=registries,
            retries=limits.retries,
            request_timeout=request_timeout,
            sleep=sleep,
            clock=clock,
            wall_clock=wall_clock,
        )
        if on_request is not None:
            self._fetcher.listen(on_request)

    # --- public API --------------------------------------------------------------------

    def head_manifest(
        self, registry: str, repository: str, reference: str, *, deadline: Deadline
    ) -> ManifestHead:
        """The digest and media type of a manifest, by HEAD.

        Falls back to a GET (verified, digest computed) when the HEAD carries no
        `Docker-Content-Digest` or no manifest Content-Type.
        """
        path = self._manifest_path(registry, repository, reference)
        answer = self._fetcher.fetch(
            registry, repository, reference, "HEAD", path, deadline=deadline, max_bytes=0
        )
        ref = display(registry, repository, reference)
        header_digest = answer.headers.get("Docker-Content-Digest")
        content_type = media.content_type_of(answer.headers.get("Content-Type"))
        if content_type in media.SCHEMA1_TYPES:
            raise located(
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
            raise located(exc, registry, ref) from None
        size = content_length(answer.headers)
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
        ref = display(registry, repository, reference)
        answer = self._fetcher.fetch(
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
            raise located(exc, registry, ref) from None
        return Manifest(
            digest=digest, media_type=document.media_type, body=answer.body, document=document
        )

    def get_blob(
        self, registry: str, repository: str, digest: str, *, deadline: Deadline, max_bytes: int
    ) -> bytes:
        """GET a blob (following redirects), at most `max_bytes`, verified against `digest`."""
        answer = self._get_by_digest(
            registry, repository, digest, "blobs", deadline=deadline, max_bytes=max_bytes
        )
        try:
            media.verify_digest(answer.body, digest)
        except RegistryError as exc:
            raise located(exc, registry, f"{registry}/{repository}@{digest}") from None
        return answer.body

    def get_referrers(
        self, registry: str, repository: str, digest: str, *, deadline: Deadline
    ) -> media.Index | None:
        """The OCI 1.1 referrers of `digest` (`GET /v2/<name>/referrers/<digest>`), an index;
        None when the registry does not offer the API (a 404 or another 4xx but 401/403/429,
        as the distribution spec says), so the caller falls back to the referrers tag."""
        ref = f"{registry}/{repository}@{digest}"
        max_bytes = self._limits.manifest_bytes
        try:
            answer = self._get_by_digest(
                registry, repository, digest, "referrers", deadline=deadline, max_bytes=max_bytes
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
            raise located(exc, registry, ref) from None
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
            raise located(exc, registry, f"{registry}/{repository}@{config.digest}") from None

    @property
    def limits(self) -> Limits:
        """The caps this client reads bodies under."""
        return self._limits

    def rate_limit(self, registry: str) -> RateLimit | None:
        """The rate limit last reported by `registry`, if it ever sent one."""
        return self._fetcher.rate_limit(registry)

    # --- endpoints ---------------------------------------------------------------------

    def listen(self, listener: Callable[[RequestEvent], None]) -> None:
        """Also call `listener` with each request's event (after `on_request`)."""
        self._fetcher.listen(listener)

    # --- paths ---------------------------------------------------------------------------

    def _get_by_digest(
        self,
        registry: str,
        repository: str,
        digest: str,
        endpoint: Literal["blobs", "referrers"],
        *,
        deadline: Deadline,
        max_bytes: int,
    ) -> Answer:
        """GET `/v2/<repository>/<endpoint>/<digest>` (the digest checked first)."""
        try:
            media.parse_digest(digest)
        except RegistryError as exc:
            raise located(exc, registry, f"{registry}/{repository}@{digest}") from None
        path = f"/v2/{self._repository(registry, repository)}/{endpoint}/{digest}"
        kind = "blob" if endpoint == "blobs" else endpoint
        return self._fetcher.fetch(
            registry,
            repository,
            digest,
            "GET",
            path,
            deadline=deadline,
            max_bytes=max_bytes,
            kind=kind,
        )

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
