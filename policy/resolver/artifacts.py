"""What is attached to an image digest: cosign's signatures and attestations, and the
Sigstore bundles among its OCI referrers — fetched, digest-verified and size-capped here, judged
against the rules' keys and roots by `judged` and `with_attached` (no I/O).

Found artifacts are kept as long as the cache keeps them; "none found" only for
`unsigned_ttl` (signatures are pushed after the image). The shared tier holds both, so one
replica's lookup serves the others.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Hashable, Mapping, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import partial

from policy import attestations, sigverify
from policy.breakers import ShortCircuited
from policy.bulkhead import Lanes
from policy.cache import Clock, SizedLRU, TTLCache, entry_size
from policy.deadline import Deadline
from policy.errors import ManifestNotFound
from policy.facts import (
    ATTESTATION_PLATFORM,
    AttestationFacts,
    Needs,
    PlatformFacts,
    SignatureFacts,
)
from policy.reference import Reference
from policy.registry import media
from policy.resolver.steps import Steps, expiry, late
from policy.signing import RootFile

UNSIGNED_TTL = 30.0
"""Seconds "no signatures" is believed for a digest: signatures are pushed after the image."""
MAX_SIGNATURES = 32
"""Signature artifacts read per digest from each place (cosign's `.sig` layers; referrers)."""

Referred = tuple[tuple[bytes, ...], tuple[tuple[str, str], ...]]
"""The Sigstore bundles among a digest's referrers, and those refused unread (format, why)."""


@dataclass(frozen=True)
class Artifacts:
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


class ArtifactLookup:
    """Signature and attestation artifacts by digest (found: 1/32 of the byte budget; "none"
    and referrer lists: 1/64 each)."""

    def __init__(
        self,
        steps: Steps,
        parts: Lanes,
        *,
        budget: int,
        unsigned_ttl: float,
        clock: Clock | None,
    ) -> None:
        self._steps = steps
        self._parts = parts
        self._unsigned_ttl = unsigned_ttl
        self._clock = clock if clock is not None else time.monotonic
        self._found: SizedLRU[Hashable, Artifacts] = SizedLRU(budget // 32)
        # digest → its referrer bundles, shared by signature and attestation lookups
        self._referrers: TTLCache[Hashable, Referred] = TTLCache(
            ttl=unsigned_ttl, max_entries=1_000, max_bytes=budget // 64, clock=clock
        )
        # digest → when it was found unsigned (believed for `unsigned_ttl`)
        self._unsigned: TTLCache[Hashable, float] = TTLCache(
            ttl=unsigned_ttl, max_entries=10_000, max_bytes=budget // 64, clock=clock
        )

    def find(
        self, ref: Reference, digest: str, deadline: Deadline, *, fact: str = "signatures"
    ) -> tuple[Artifacts, float]:
        """The signature artifacts (`fact` "signatures") or attestation artifacts
        ("attestations") of `digest` in `ref`'s repository, and for how many seconds that
        answer stands (forever for found ones while cached; `unsigned_ttl` for none)."""
        key = (fact, ref.registry, ref.repository, digest)
        cached = self._found.get(key)
        if cached is not None:
            return cached, float("inf")
        learned = self._unsigned.get(key)
        if learned is not None:
            return Artifacts(), self._unsigned_ttl - (self._clock() - learned)
        fetch = partial(self._fetch, ref, digest, fact, key)
        found = self._steps.step(fact, key, fetch, deadline)
        return found, float("inf") if not found.empty else self._unsigned_ttl

    def _fetch(
        self, ref: Reference, digest: str, fact: str, key: Hashable, deadline: Deadline
    ) -> Artifacts:
        """The coalesced lookup: the shared tier's answer while it stands, else the registry's
        (told to the shared tier)."""
        again = self._found.get(key)
        if again is not None:
            return again
        if self._unsigned.get(key) is not None:
            return Artifacts()
        age = 0.0
        shared = self._steps.shared
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
            found, age = Artifacts(told.cosign, told.bundles, told.refused), told.age
        else:
            found = self._from_registry(ref, digest, deadline, _PLACES[fact])
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
            self._found.put(key, found, entry_size(key, found))
        return found

    def _from_registry(
        self, ref: Reference, digest: str, deadline: Deadline, place: _Place
    ) -> Artifacts:
        """cosign's `.sig` (or `.att`) tag (here) and the referrers (API, else the fallback
        tag; in the parts pool, at the same time): one request each, then one per artifact
        read. The referrers answer is shared by the signature and attestation lookups."""
        try:
            job: Future[Referred] | None = self._parts.submit(
                ref.registry,
                partial(self._shared_referrers, ref, digest, deadline),
                expired=expiry(deadline),
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
                raise late(ref.registry) from None
        return Artifacts(tuple(cosign), bundles, tuple(refused) + more)

    def _shared_referrers(self, ref: Reference, digest: str, deadline: Deadline) -> Referred:
        """`_referrer_bundles`, coalesced and remembered for `unsigned_ttl`: a review needing
        both signatures and attestations of a digest lists its referrers once."""
        key = ("referrers", ref.registry, ref.repository, digest)
        cached = self._referrers.get(key)
        if cached is not None:
            return cached

        def fetch(deadline: Deadline) -> Referred:
            again = self._referrers.get(key)
            if again is not None:
                return again
            bundles, refused = self._referrer_bundles(ref, digest, deadline)
            answer = (tuple(bundles), tuple(refused))
            self._referrers.put(key, answer, size=entry_size(key, answer))
            return answer

        return self._steps.coalesced(key, fetch, deadline)

    def _optional(
        self, ref: Reference, reference: str, deadline: Deadline
    ) -> media.Index | media.ImageManifest | None:
        """The manifest a tag (or digest) names in `ref`'s repository; None for a 404."""
        client = self._steps.client
        try:
            return self._steps.ask(
                ref.registry,
                deadline,
                lambda: (
                    client.get_manifest(
                        ref.registry, ref.repository, reference, deadline=deadline
                    ).document
                ),
            )
        except ManifestNotFound:
            return None

    def _blob(
        self, ref: Reference, descriptor: media.Descriptor, limit: int, deadline: Deadline
    ) -> bytes:
        client = self._steps.client
        return self._steps.ask(
            ref.registry,
            deadline,
            lambda: client.get_blob(
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
            payload = self._blob(ref, layer, place.limit, deadline)
            found.append((payload, layer.annotations))
        return found, refused

    def _referrer_bundles(
        self, ref: Reference, digest: str, deadline: Deadline
    ) -> tuple[list[bytes], list[tuple[str, str]]]:
        """The Sigstore bundles among the OCI referrers of `digest` (at most MAX_SIGNATURES),
        and those refused unread. A registry without the referrers API costs one more request:
        the `sha256-<hex>` fallback tag."""
        client = self._steps.client
        referrers = self._steps.ask(
            ref.registry,
            deadline,
            lambda: client.get_referrers(ref.registry, ref.repository, digest, deadline=deadline),
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
                bundles.append(self._blob(ref, held, sigverify.MAX_BUNDLE_BYTES, deadline))
        return bundles, refused


def judged(
    found: Artifacts, digest: str, keys: Sequence[bytes], roots: Sequence[RootFile]
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


def with_attached(
    platforms: tuple[PlatformFacts, ...], found: Artifacts, digest: str, needs: Needs
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
