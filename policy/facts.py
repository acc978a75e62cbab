"""What is known about an image, and what the rules need to know (pure data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import NamedTuple

from policy.signing import RootFile

TIERS = ("official", "verified_publisher", "sponsored_oss", "none")

# Platform of index entries that carry attestations (buildkit) rather than an image.
ATTESTATION_PLATFORM = "unknown/unknown"


class Needs(NamedTuple):
    """The facts a decision needs about one image, so the resolver fetches only those.

    A named tuple (hashed in C): with the reference, it keys the resolver's answers cache; this
    saves ~1.4% of a warm review, the per-review named tuples together ~9% (1b, BENCHMARKS.md).

    `manifest` means per-platform image manifests (layers, size), `config` the config
    blobs (user, created, labels), `platforms` the list of platforms the image offers (for a
    single-platform image that is its config's os/architecture). `select` lists the platform
    patterns whose manifests/configs are read ("*" = all); a single-platform image is always read.
    `tag`: for a reference with both a tag and a digest, ask the registry where the tag points
    (the tag counts in the decision only when it points at the digest).
    `signatures`: look up the signatures of the digest judged (cosign's `.sig` tag and OCI
    referrers) and verify them against `keys` (DER SubjectPublicKeyInfo, sorted) and, for
    keyless signatures and transparency-log entries, the Sigstore trusted `roots` (JSON).
    `attestations`: read the in-toto statements attached to each selected platform's image
    (BuildKit attestation manifests of the index, cosign's `.att` tag and OCI referrers of the
    digest judged; DSSE signatures verified against `keys` and, keyless, the `roots`).
    """

    tier: bool = False
    digest: bool = False
    platforms: bool = False
    manifest: bool = False
    config: bool = False
    select: tuple[str, ...] = ()
    tag: bool = False
    signatures: bool = False
    keys: tuple[bytes, ...] = ()
    roots: tuple[RootFile, ...] = ()
    attestations: bool = False

    def __or__(self, other: Needs) -> Needs:
        select = tuple(dict.fromkeys(self.select + other.select))
        return Needs(
            tier=self.tier or other.tier,
            digest=self.digest or other.digest,
            platforms=self.platforms or other.platforms,
            manifest=self.manifest or other.manifest,
            config=self.config or other.config,
            select=select,
            tag=self.tag or other.tag,
            signatures=self.signatures or other.signatures,
            keys=tuple(sorted(set(self.keys + other.keys))),
            roots=tuple(sorted(set(self.roots + other.roots), key=lambda r: r.digest)),
            attestations=self.attestations or other.attestations,
        )

    @property
    def registry(self) -> bool:
        """Whether anything must be asked of the image's registry."""
        return (
            self.digest
            or self.platforms
            or self.manifest
            or self.config
            or self.tag
            or self.signatures
        )

    @property
    def nothing(self) -> bool:
        return not (self.tier or self.registry)


NO_NEEDS = Needs()

NO_REASONS: Mapping[str, str] = MappingProxyType({})
"""An empty `ImageFacts.errors` / `ImageFacts.details`, shared."""


@dataclass(frozen=True)
class AttestationFacts:
    """One in-toto statement attached to a platform image: its predicate type and kind
    (`provenance`, `sbom`, or `other`), what a provenance says (builder id, source repository,
    build type), the configured key whose DSSE signature verified it (None: unsigned or not
    verified), the keyless identity (`issuer`, `subject`) of the Fulcio certificate whose
    signature verified it (chained, logged, with an SCT), why its signature did not verify
    (`signature`, "" when it did or there was none), and why it cannot be used at all
    (`reason`, "" when it can: e.g. its subject is another image).

    `format`: where it was found: `buildkit` (an attestation manifest of the index: a DSSE
    envelope there carries no certificate), `cosign` (a layer of cosign's `sha256-<hex>.att`
    manifest) or `bundle` (a Sigstore bundle among the OCI referrers)."""

    predicate_type: str
    kind: str
    builder: str | None = None
    source: str | None = None
    build_type: str | None = None
    signed_by: str | None = None
    reason: str = ""
    issuer: str | None = None
    subject: str | None = None
    format: str = "buildkit"
    signature: str = ""


@dataclass(frozen=True)
class PlatformFacts:
    """One image manifest: an index entry, or the only manifest of a single-platform image.

    `None` means not known (not fetched); `labels` is None until the config is known.
    """

    platform: str
    digest: str | None = None
    layers: int | None = None
    size: int | None = None
    user: str | None = None
    created: datetime | None = None
    labels: Mapping[str, str] | None = None
    config_known: bool = False
    attestations: tuple[AttestationFacts, ...] | None = None
    """The in-toto statements attached to this image in its index; None when not read."""


SIGNATURE_FORMATS = ("cosign", "bundle")
"""`cosign`: a layer of cosign's `sha256-<hex>.sig` manifest (simple-signing payload);
`bundle`: a Sigstore bundle found through OCI referrers (or their fallback tag)."""


@dataclass(frozen=True)
class SignatureFacts:
    """One signature found for the judged digest, and what verifying it showed.

    `key` is the fingerprint (`sha256:<hex>` of the DER public key) of the configured key that
    verified it, None when none did; `issuer` and `subject` the identity of a keyless
    signature's certificate (verified to chain to a trusted root); `tlog` whether a
    transparency-log entry of it was verified; `reason` says why it is not verified ("" when it
    is); `signer` names who signed as far as is known (`key sha256:ab12…`, `keyless <subject>
    (issuer <issuer>)`, `unknown key`).
    """

    format: str
    verified: bool
    key: str | None = None
    reason: str = ""
    signer: str = ""
    issuer: str | None = None
    subject: str | None = None
    tlog: bool = False


@dataclass(frozen=True)
class ImageFacts:
    """Everything resolved about one reference.

    `index` is True when the reference names an image index/manifest list; then
    `platforms` lists its entries (attestations included, flagged by platform). For a
    single manifest `platforms` has exactly one entry once the manifest is known.
    `errors` maps a fact name (`tier`, `digest`, `platforms`, `manifest`, `config`, `tag`) to
    the reason it could not be fetched, classified (`policy.failures`: "registry unreachable",
    "image not found", …): the words a pod author may read; `onResolveError` decides what that
    means. `details` maps the same facts to the full reason for the operator (the upstream's
    words, the host and address tried), which goes to the decision log and the CLI's reports,
    never into an admission answer.

    `signatures`: the signatures found for `digest` (the digest the reference names or its tag
    points at: for an index, the index digest), each verified or not; None when not looked up
    (then `errors["signatures"]` may say why).

    For a reference written with both a tag and a digest whose tag was asked about
    (`Needs.tag`): `tag_digest` is the digest the tag points at, and `tag_match` whether that
    is the reference's digest (or an index that lists it); both None when not asked or not
    known.
    """

    digest: str | None = None
    media_type: str | None = None
    index: bool | None = None
    tier: str | None = None
    tier_source: str | None = None
    platforms: tuple[PlatformFacts, ...] = ()
    errors: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    details: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    tag_digest: str | None = None
    tag_match: bool | None = None
    signatures: tuple[SignatureFacts, ...] | None = None

    def image_platforms(self) -> tuple[PlatformFacts, ...]:
        """The entries that are images (attestation entries are never images)."""
        return tuple(p for p in self.platforms if p.platform != ATTESTATION_PLATFORM)


UNKNOWN = ImageFacts()


def offline_tier(registry: str, repository: str) -> str | None:
    """The tier known without asking anyone: Docker Hub's `library/` is `official`, other Docker
    Hub namespaces need a lookup (None), and images on other registries are `none`."""
    if registry != "docker.io":
        return "none"
    if repository.startswith("library/") and repository.count("/") == 1:
        return "official"
    return None
