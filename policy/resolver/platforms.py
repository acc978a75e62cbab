"""The per-platform facts of a manifest: one image, or the images of an index that the checks
read (fetched in parallel on the parts pool, each registry in its own bulkhead lane), with the
attestations an index attaches to them (`vnd.docker.reference.digest` attestation manifests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from functools import partial

from policy import attestations, sigverify
from policy.breakers import ShortCircuited
from policy.bulkhead import Lanes
from policy.cache import SizedLRU, entry_size
from policy.deadline import Deadline
from policy.errors import RegistryError, RegistryUnavailable
from policy.facts import ATTESTATION_PLATFORM, AttestationFacts, Needs, PlatformFacts
from policy.reference import Reference
from policy.registry import media
from policy.resolver.documents import Document, Documents
from policy.resolver.steps import Errors, Failed, Steps, expiry, late

MAX_ATTESTATIONS = 16
"""In-toto statements read per platform image."""


class Platforms:
    """Reads the platforms of a manifest; keeps attestation statements (1/32 of the byte
    budget)."""

    def __init__(self, steps: Steps, documents: Documents, parts: Lanes, *, budget: int) -> None:
        self._steps = steps
        self._documents = documents
        self._parts = parts
        self._statements: SizedLRU[Hashable, bytes] = SizedLRU(budget // 32)

    def read(
        self,
        ref: Reference,
        document: Document,
        digest: str,
        needs: Needs,
        deadline: Deadline,
        errors: Errors,
    ) -> tuple[PlatformFacts, ...]:
        """The platforms of `document` (`digest`): a lone image's facts, or every entry of an
        index with the selected ones read; what cannot be read is recorded in `errors`."""
        if isinstance(document, media.ImageManifest):
            single = self._single(ref, document, digest, needs, deadline, errors)
            # Attestations are attached through an index: a lone manifest has none.
            return (dataclasses.replace(single, attestations=()) if needs.attestations else single,)
        selected = (
            {d.digest for d in media.select_platforms(document, needs.select or ("*",))}
            if needs.manifest or needs.attestations
            else set()
        )
        jobs = self._submit(ref, document, selected, needs, deadline, errors)
        out = [self._collected(ref, entry, jobs, deadline, errors) for entry in document.manifests]
        if needs.attestations:
            out = self._attested(ref, document, out, selected, needs, deadline, errors)
        return tuple(out)

    def _submit(
        self,
        ref: Reference,
        index: media.Index,
        selected: set[str],
        needs: Needs,
        deadline: Deadline,
        errors: Errors,
    ) -> dict[str, Future[PlatformFacts]]:
        """Start reading each selected entry of `index` in the registry's parts lane."""
        jobs: dict[str, Future[PlatformFacts]] = {}
        for entry in index.manifests:
            if entry.digest in selected and entry.digest not in jobs:
                try:
                    jobs[entry.digest] = self._parts.submit(
                        ref.registry,
                        partial(self._entry, ref, entry, needs, deadline, errors),
                        expired=expiry(deadline),
                    )
                except ShortCircuited as exc:
                    errors.setdefault(
                        "manifest", RegistryUnavailable(str(exc), registry=ref.registry)
                    )
        return jobs

    def _collected(
        self,
        ref: Reference,
        entry: media.Descriptor,
        jobs: dict[str, Future[PlatformFacts]],
        deadline: Deadline,
        errors: Errors,
    ) -> PlatformFacts:
        """An index entry's facts: read by its job by the deadline, else only its platform
        and digest (and why in `errors`)."""
        platform = ATTESTATION_PLATFORM if entry.is_attestation else entry.platform or ""
        job = jobs.get(entry.digest)
        if job is None or entry.is_attestation:
            return PlatformFacts(platform=platform, digest=entry.digest)
        try:
            return job.result(timeout=deadline.remaining())
        except (FutureTimeout, CancelledError):
            errors.setdefault(
                "manifest",
                RegistryUnavailable(self._parts.busy(ref.registry, job), registry=ref.registry)
                if job.cancel()
                else late(ref.registry),
            )
        except Failed as failed:
            errors.setdefault(failed.fact, failed.error)
        return PlatformFacts(platform=platform, digest=entry.digest)

    def _entry(
        self,
        ref: Reference,
        entry: media.Descriptor,
        needs: Needs,
        deadline: Deadline,
        errors: Errors,
    ) -> PlatformFacts:
        document = self._documents.manifest(ref.registry, ref.repository, entry.digest, deadline)
        if not isinstance(document, media.ImageManifest):
            raise Failed(
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
        errors: Errors,
        *,
        platform: str | None = None,
    ) -> PlatformFacts:
        """Facts of one image manifest; a config that cannot be fetched is recorded in
        `errors` and leaves the manifest facts standing."""
        config = None
        if needs.config or (platform is None and needs.platforms):
            try:
                config = self._documents.config(
                    ref.registry, ref.repository, manifest.config, deadline
                )
            except Failed as failed:
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

    def _attested(
        self,
        ref: Reference,
        index: media.Index,
        found: list[PlatformFacts],
        selected: set[str],
        needs: Needs,
        deadline: Deadline,
        errors: Errors,
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
                    read = self._read_statements(
                        ref, by_image.get(p.digest, []), p.digest, trust, deadline
                    )
                    p = dataclasses.replace(p, attestations=read)
                except Failed as failed:
                    errors.setdefault("attestations", failed.error)
            out.append(p)
        return out

    def _read_statements(
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
            manifest = self._documents.manifest(
                ref.registry, ref.repository, descriptor.digest, deadline
            )
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
                out.append(self._statement(ref, layer, digest, trust, deadline))
        return tuple(out)

    def _statement(
        self,
        ref: Reference,
        layer: media.Descriptor,
        digest: str,
        trust: sigverify.Trust,
        deadline: Deadline,
    ) -> AttestationFacts:
        """One in-toto statement layer read (coalesced) and its subject checked for `digest`."""
        body = self._steps.step(
            "attestations",
            ("statement", ref.registry, ref.repository, layer.digest),
            partial(self._statement_blob, ref, layer),
            deadline,
        )
        opened = sigverify.open_envelope(body, trust)
        if opened is None:
            return attestations.read_statement(body, digest)
        return attestations.read_statement(opened[0], digest, signed_by=opened[1])

    def _statement_blob(self, ref: Reference, layer: media.Descriptor, deadline: Deadline) -> bytes:
        key = ("statement", ref.registry, ref.repository, layer.digest)
        cached = self._statements.get(key)
        if cached is not None:
            return cached
        client = self._steps.client
        body = self._steps.ask(
            ref.registry,
            deadline,
            lambda: client.get_blob(
                ref.registry,
                ref.repository,
                layer.digest,
                deadline=deadline,
                max_bytes=attestations.MAX_STATEMENT_BYTES,
            ),
        )
        self._statements.put(key, body, entry_size(key, body))
        return body
