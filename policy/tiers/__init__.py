"""Docker's trusted-content tier of an image, from one place (shell layer).

An image's tier is, in this order of precedence:

1. the operator's **catalog** (settings `tiers:`): the first entry whose image glob matches, in
   file order, wins; it overrides everything below and gives private registries a tier;
2. the **offline rule**: Docker Hub's `library/` namespace is `official`, and an image on any
   other registry is `none`;
3. a **Docker Hub lookup**, for the other Docker Hub namespaces only (`hub`: the search API,
   then the organization endpoint; answers cached per namespace).

Its rooms: `source` (`Tiers`, the one place, and `from_settings`), `hub` (`HubTiers`, the
Docker Hub lookup and the reading of its answers). The names below are re-exported for the
resolver, the CLI, scripts and tests.
"""

from policy.tiers.hub import (
    BODY_MAX,
    DEFAULT_API,
    DEFAULT_TTL,
    HUB,
    NEGATIVE_TTL,
    SOURCE_ORG,
    SOURCE_SEARCH,
    BadAnswer,
    HubStats,
    HubTiers,
    badge_tier,
    exact_result,
    hub_namespace,
)
from policy.tiers.source import (
    SOURCE_CATALOG,
    SOURCE_OFFLINE,
    Catalog,
    Tiers,
    catalog_tier,
    from_settings,
    known_tier,
)

__all__ = [
    "BODY_MAX",
    "DEFAULT_API",
    "DEFAULT_TTL",
    "HUB",
    "NEGATIVE_TTL",
    "SOURCE_CATALOG",
    "SOURCE_OFFLINE",
    "SOURCE_ORG",
    "SOURCE_SEARCH",
    "BadAnswer",
    "Catalog",
    "HubStats",
    "HubTiers",
    "Tiers",
    "badge_tier",
    "catalog_tier",
    "exact_result",
    "from_settings",
    "hub_namespace",
    "known_tier",
]
