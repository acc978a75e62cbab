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

The rooms: `core` (`RegistryResolver`: pools, lanes, breakers, whole answers; the order of a
lookup's steps), `steps` (what every lookup shares: a registry call told to its breaker,
coalescing, counts, a failure named by fact), `tags` (tag → digest and the tag memory),
`documents` (manifests, configs and 404s by digest: memory, disk, shared tier, registry),
`platforms` (an index's images and the attestations it attaches), `artifacts` (signatures and
attestations attached to a digest), `wiring` (`build` from the settings).
"""

from policy.resolver.artifacts import MAX_SIGNATURES, UNSIGNED_TTL
from policy.resolver.core import (
    ANSWER_ENTRIES,
    BREAK_AFTER,
    BREAK_FOR,
    HUB_API,
    HUB_LANE,
    PER_REGISTRY,
    Pressure,
    RegistryResolver,
    ResolverStats,
    TierSource,
)
from policy.resolver.documents import NEGATIVE_TTL
from policy.resolver.platforms import MAX_ATTESTATIONS
from policy.resolver.tags import TAG_MEMORY
from policy.resolver.wiring import build

__all__ = [
    "ANSWER_ENTRIES",
    "BREAK_AFTER",
    "BREAK_FOR",
    "HUB_API",
    "HUB_LANE",
    "MAX_ATTESTATIONS",
    "MAX_SIGNATURES",
    "NEGATIVE_TTL",
    "PER_REGISTRY",
    "TAG_MEMORY",
    "UNSIGNED_TTL",
    "Pressure",
    "RegistryResolver",
    "ResolverStats",
    "TierSource",
    "build",
]
